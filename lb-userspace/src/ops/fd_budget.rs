//! lbd's file descriptors: its health probes must never run out of them because clients
//! hold connections. At start lbd raises its soft RLIMIT_NOFILE to the hard limit and
//! refuses to run unless that covers every listener's connection cap, one probe per
//! backend `limits.max_backends` allows, its maps and links, and a margin; the caps
//! (see `crate::ops::listeners`) keep clients within their share.
use std::{fmt, io};

use crate::model::config::Config;

/// Descriptors of the loaded data path: its maps, programs and BTF, and links per NIC.
const KERNEL_OBJECTS: u64 = 64;
const PER_INTERFACE: u64 = 4;
/// Everything else: the async runtime (epoll, eventfds, signals), netlink, the log, the
/// state file and config being written or read, a connection evicted but not yet closed.
const MARGIN: u64 = 256;

/// What lbd may need at once, by consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Connection caps plus one listening socket each.
    pub listeners: u64,
    /// One probe in flight per backend.
    pub probes: u64,
    pub kernel: u64,
    pub margin: u64,
}

impl Budget {
    pub fn of(config: &Config) -> Self {
        let api = u64::from(config.api.connections.max) + 1;
        let tcp_api = if config.api.listen.is_some() { api } else { 0 };
        let metrics = u64::from(config.metrics.connections.max) + 1;
        Self {
            listeners: api + tcp_api + metrics,
            probes: config.limits.max_backends.into(),
            kernel: KERNEL_OBJECTS + PER_INTERFACE * config.interfaces.len() as u64,
            margin: MARGIN,
        }
    }

    pub fn total(&self) -> u64 {
        self.listeners + self.probes + self.kernel + self.margin
    }
}

impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} file descriptors: {} for the listeners (api.connections.max, \
             metrics.connections.max), {} for health probes (limits.max_backends), {} for \
             maps and links, {} spare",
            self.total(),
            self.listeners,
            self.probes,
            self.kernel,
            self.margin
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileLimit {
    pub soft: u64,
    pub hard: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum BudgetError {
    #[error("reading RLIMIT_NOFILE: {0}")]
    Read(io::Error),
    #[error("raising the soft RLIMIT_NOFILE to the hard limit {hard}: {source}")]
    Raise { hard: u64, source: io::Error },
    #[error(
        "lbd needs {budget}; its descriptor limit (RLIMIT_NOFILE, hard) is {hard}: raise \
         LimitNOFILE= in its systemd unit (deploy/systemd/lbd.service sets 65536) or \
         `ulimit -Hn`, or lower those settings"
    )]
    TooLow { budget: Budget, hard: u64 },
}

pub fn nofile_limit() -> io::Result<NofileLimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid out-parameter.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(NofileLimit {
        soft: limit.rlim_cur,
        hard: limit.rlim_max,
    })
}

/// Raises the soft limit to the hard one and checks it covers `config`'s budget.
/// Call it before the data path is loaded, so a refusal changes nothing.
pub fn ensure(config: &Config) -> Result<NofileLimit, BudgetError> {
    let limit = nofile_limit().map_err(BudgetError::Read)?;
    if limit.soft < limit.hard {
        let raised = libc::rlimit {
            rlim_cur: limit.hard,
            rlim_max: limit.hard,
        };
        // SAFETY: a valid in-parameter; raising the soft limit up to the hard one needs
        // no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(BudgetError::Raise {
                hard: limit.hard,
                source: io::Error::last_os_error(),
            });
        }
    }
    check(Budget::of(config), limit.hard)?;
    Ok(NofileLimit {
        soft: limit.hard,
        hard: limit.hard,
    })
}

fn check(budget: Budget, hard: u64) -> Result<(), BudgetError> {
    if budget.total() > hard {
        return Err(BudgetError::TooLow { budget, hard });
    }
    Ok(())
}

/// Descriptors open now (`/proc/self/fd`, less the one reading it).
pub fn open_fds() -> io::Result<u64> {
    let n = std::fs::read_dir("/proc/self/fd")?.count() as u64;
    Ok(n.saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_counts_caps_probes_maps_and_margin_and_refuses_a_low_limit() {
        let config = crate::model::config::parse(
            "node: { zone: a }\ninterfaces: [eth0, eth1]\nlimits: { max_backends: 10000 }\n\
             api: { listen: 127.0.0.1:9000, token_file: /etc/lbd/token, connections: { max: 10 } }\n\
             metrics: { connections: { max: 20 } }\n",
        )
        .unwrap();
        let budget = Budget::of(&config);
        assert_eq!(
            budget,
            Budget {
                listeners: 11 + 11 + 21,
                probes: 10_000,
                kernel: 64 + 8,
                margin: 256
            }
        );
        assert_eq!(budget.total(), 10_371);
        assert!(check(budget, 10_371).is_ok());
        let e = check(budget, 10_370).unwrap_err().to_string();
        assert!(
            e.starts_with("lbd needs 10371 file descriptors: 43 for the listeners"),
            "{e}"
        );
        assert!(
            e.contains("10000 for health probes (limits.max_backends)"),
            "{e}"
        );
        assert!(e.contains("is 10370: raise LimitNOFILE="), "{e}");
    }
}
