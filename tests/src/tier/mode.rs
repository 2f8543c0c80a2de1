//! The forwarding mode of a tier lab's service, and what each asks of the lab:
//!
//! - `nat`: the lab as docs/tier.md draws it; replies cross the tier (R2 routes the
//!   clients' prefix back through the nodes by ECMP) and the nodes translate them.
//! - `ipip`, `gue`: direct server return over the three zone subnets behind R2; every
//!   backend runs `lb-decap` (the VIP on `lo`, the decapsulation, the MSS clamp) and
//!   answers the client itself.
//! - `dsr_l2`: direct server return on one segment: the nodes' `dn0` and the backends
//!   share R2's bridge (`dsr_l2` reaches a backend by its MAC only); backends hold the
//!   VIP on `lo` with the ARP sysctls.
//!
//! In the DSR modes the backends' replies bypass the tier, as in a DSR fabric: R2 has a
//! direct link to R1 and a route to the client over it, more specific than the clients'
//! prefix the nodes still announce (so the tier converges as in NAT).
use crate::running_lb::{BACKEND_PORT, VIP_PORT};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TierMode {
    Nat,
    Ipip,
    Gue,
    DsrL2,
}

impl TierMode {
    /// The service's `mode:` value.
    pub fn key(self) -> &'static str {
        match self {
            TierMode::Nat => "nat",
            TierMode::Ipip => "ipip",
            TierMode::Gue => "gue",
            TierMode::DsrL2 => "dsr_l2",
        }
    }

    pub fn is_dsr(self) -> bool {
        self != TierMode::Nat
    }

    /// Nodes and backends on one segment (R2's bridge) rather than routed subnets.
    pub fn one_segment(self) -> bool {
        self == TierMode::DsrL2
    }

    /// Backends run `lb-decap`.
    pub fn decap(self) -> bool {
        matches!(self, TierMode::Ipip | TierMode::Gue)
    }

    /// The port backends serve on: NAT rewrites the VIP's port, DSR keeps it.
    pub fn backend_port(self) -> u16 {
        if self.is_dsr() {
            VIP_PORT
        } else {
            BACKEND_PORT
        }
    }
}
