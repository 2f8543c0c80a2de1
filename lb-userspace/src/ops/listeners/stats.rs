//! What each listener counts for `/metrics`, and its rate-limited log.
use std::{
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Mutex,
    },
    time::{Duration, Instant},
};

/// One listener's counters.
#[derive(Debug)]
pub struct ListenerStats {
    /// `metrics`, `admin_unix` or `admin_tcp`.
    pub name: &'static str,
    pub cap: u32,
    pub accepted: AtomicU64,
    pub open: AtomicU64,
    /// Closed at the cap to make room for a new connection.
    pub evicted: AtomicU64,
    /// Refused at the cap: every open connection was being answered.
    pub refused: AtomicU64,
    pub header_timeouts: AtomicU64,
    pub idle_timeouts: AtomicU64,
    /// accept(2) failed (e.g. EMFILE: out of descriptors).
    pub accept_errors: AtomicU64,
    /// Requests without a known bearer token (401; TCP only).
    pub unauthorized: AtomicU64,
    /// Requests outside their token's scope (403; TCP only).
    pub forbidden: AtomicU64,
    log: Mutex<LogLimit>,
}

impl ListenerStats {
    pub fn new(name: &'static str, cap: u32) -> Self {
        Self {
            name,
            cap,
            accepted: AtomicU64::new(0),
            open: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            header_timeouts: AtomicU64::new(0),
            idle_timeouts: AtomicU64::new(0),
            accept_errors: AtomicU64::new(0),
            unauthorized: AtomicU64::new(0),
            forbidden: AtomicU64::new(0),
            log: Mutex::new(LogLimit::new(LOG_EVERY)),
        }
    }

    pub fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    /// Logs `message` unless a line was logged less than [`LOG_EVERY`] ago; the next
    /// line says how many were left out.
    pub fn warn_limited(&self, message: impl FnOnce() -> String) {
        let allowed = self
            .log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .allow(Instant::now());
        if let Some(left_out) = allowed {
            let more = if left_out > 0 {
                format!(" ({left_out} more since the last such line)")
            } else {
                String::new()
            };
            log::warn!("{} listener: {}{more}", self.name, message());
        }
    }
}

/// At most one line per listener this often: a flood of connections must not become a
/// flood of log lines.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// Lets one event through per period and counts the others (pure; time passed in).
#[derive(Debug)]
pub struct LogLimit {
    every: Duration,
    last: Option<Instant>,
    left_out: u64,
}

impl LogLimit {
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            last: None,
            left_out: 0,
        }
    }

    /// `Some(events left out since the last one let through)`, or `None`: leave it out.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.duration_since(last) < self.every => {
                self.left_out += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.left_out))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_period_and_the_next_counts_the_rest() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut limit = LogLimit::new(s(10));
        assert_eq!(limit.allow(t0), Some(0));
        assert_eq!(limit.allow(t0 + s(1)), None);
        assert_eq!(limit.allow(t0 + s(9)), None);
        assert_eq!(limit.allow(t0 + s(10)), Some(2));
        assert_eq!(limit.allow(t0 + s(11)), None);
        assert_eq!(limit.allow(t0 + s(30)), Some(1));
    }
}
