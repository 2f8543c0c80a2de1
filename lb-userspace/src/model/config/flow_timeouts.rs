//! How long an idle flow entry lives, by the state of its TCP connection, or for UDP.
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration;

/// Idle timeouts of flow entries (time since the client's last packet). Entries are
/// also evicted, coldest first, when the table is full.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlowTimeouts {
    /// Handshake completed, no FIN or RST yet (a cloud NLB's idle timeout is 350 s).
    #[serde(with = "duration")]
    pub established: Duration,
    /// One side sent a FIN.
    #[serde(with = "duration")]
    pub closing: Duration,
    /// RST, or FIN from both sides: kept only for the last ACKs and retransmissions.
    #[serde(with = "duration")]
    pub closed: Duration,
    /// Only a SYN seen: a half-open attempt (or a SYN flood) must not hold the table.
    #[serde(with = "duration")]
    pub syn: Duration,
    /// A UDP flow (no handshake, no close): time since its client's last datagram.
    #[serde(with = "duration")]
    pub udp: Duration,
}

impl Default for FlowTimeouts {
    fn default() -> Self {
        Self {
            established: Duration::from_secs(350),
            closing: Duration::from_secs(60),
            closed: Duration::from_secs(10),
            syn: Duration::from_secs(30),
            // Katran's: an entry matters only while the table changes under its flow (a
            // datagram without one goes to the table's backend), one-query tuples (DNS)
            // each hold one for the whole timeout in the table TCP shares, and QUIC and
            // WireGuard keepalives (at most 25 s) keep long flows alive within it.
            udp: Duration::from_secs(30),
        }
    }
}

/// Accepted range of each timeout.
pub const FLOW_TIMEOUT_RANGE: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(24 * 3600));
