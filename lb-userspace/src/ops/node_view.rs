//! What `GET /v1/node` and the node drain answer: this node's announcements, its drain
//! and, when `announce.bird_socket` is set, what BIRD says (see docs/tier.md).
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::model::bird_reply::{BfdSession, Protocol};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeView {
    /// Whether the node announces nothing because it is drained (by either source).
    pub drained: bool,
    /// `announce.drained: true` in the config file.
    pub drained_by_config: bool,
    /// Since when (Unix seconds) the node is drained through the API; `None`: not so.
    pub drained_since: Option<u64>,
    pub vips: Vec<VipView>,
    /// Absent without `announce.bird_socket`.
    pub bird: Option<BirdView>,
}

/// One VIP in `announce.vip_ranges` that a service has.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VipView {
    pub vip: IpAddr,
    pub services: Vec<String>,
    /// lbd's decision: announce it.
    pub announced: bool,
    /// Its /32 with lbd's label was on `lo` at the last check (every second, and after
    /// every change).
    pub on_lo: bool,
    /// Whether BIRD has a route for it out of `lo` (what it exports); `None` without a
    /// BIRD socket or when BIRD did not answer.
    pub in_bird: Option<bool>,
    /// Why it is or is not announced.
    pub why: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BirdView {
    pub socket: String,
    /// BIRD answered on its socket.
    pub reachable: bool,
    /// Why not, or the first query that failed.
    pub error: Option<String>,
    pub protocols: Vec<Protocol>,
    pub bfd_sessions: Vec<BfdSession>,
}

impl NodeView {
    /// Whether every VIP is withdrawn and the withdrawal seen: not announced, not on
    /// `lo`, and (with BIRD) not in BIRD's table. BIRD not answering confirms nothing.
    pub fn withdrawn_everywhere(&self) -> bool {
        let bird = self.bird.is_some();
        self.vips
            .iter()
            .all(|v| !v.announced && !v.on_lo && (!bird || v.in_bird == Some(false)))
    }
}

/// Answer of `POST /v1/node/drain` and `/undrain`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrainResult {
    /// False when the node already was in that state (nothing written).
    pub changed: bool,
    pub node: NodeView,
}
