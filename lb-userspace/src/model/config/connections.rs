//! Limits on the connections of one of lbd's listeners (`api.connections`,
//! `metrics.connections`): without them any local user could hold enough idle
//! connections to use up lbd's file descriptors, and its health probes with them.
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{collector::Collector, duration};

/// The most connections a listener may be allowed; each holds a descriptor, and the
/// descriptor budget lbd checks at start grows with it.
pub const MAX_CONNECTIONS_CAP: u32 = 4096;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectionLimits {
    /// Connections open at once. At the cap, the connection that has waited longest for
    /// a request is closed to make room (one still being answered never is).
    pub max: u32,
    /// From the first byte of a request to the end of its header.
    #[serde(with = "duration")]
    pub header_timeout: Duration,
    /// Waiting for a request (after accept, or after the last answer) before closing.
    #[serde(with = "duration")]
    pub idle_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max: 64,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// Bounds of a listener's `header_timeout` and `idle_timeout`.
const MIN_TIMEOUT: Duration = Duration::from_millis(100);
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

pub(super) fn check_connections(c: &mut Collector, field: &str, limits: &ConnectionLimits) {
    if limits.max == 0 || limits.max > MAX_CONNECTIONS_CAP {
        c.err(
            format!("{field}.max"),
            format!(
                "{} is out of range (1 to {MAX_CONNECTIONS_CAP})",
                limits.max
            ),
        );
    }
    for (name, value) in [
        ("header_timeout", limits.header_timeout),
        ("idle_timeout", limits.idle_timeout),
    ] {
        if !(MIN_TIMEOUT..=MAX_TIMEOUT).contains(&value) {
            c.err(
                format!("{field}.{name}"),
                format!(
                    "{} is out of range ({} to {})",
                    duration::format(value),
                    duration::format(MIN_TIMEOUT),
                    duration::format(MAX_TIMEOUT)
                ),
            );
        }
    }
}
