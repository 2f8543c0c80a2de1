//! Where a NIC runs the data path: at XDP (`lb_xdp`) or at tc ingress (`lb_tc`).
use aya::programs::links::LinkType;
use lb_common::limits::{PROGRAM_TC, PROGRAM_XDP};

/// Where a NIC runs the data path: `lb_xdp` at XDP, or `lb_tc` at tc ingress (the
/// config's `tc_interfaces`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    Xdp,
    Tc,
}

impl Hook {
    /// The program a NIC at this hook runs.
    pub fn program(self) -> &'static str {
        match self {
            Hook::Xdp => PROGRAM_XDP,
            Hook::Tc => PROGRAM_TC,
        }
    }

    /// The kind of link that attaches it, as logs name it.
    pub fn link_kind(self) -> &'static str {
        match self {
            Hook::Xdp => "XDP",
            Hook::Tc => "TCX",
        }
    }

    pub(super) fn link_type(self) -> LinkType {
        match self {
            Hook::Xdp => LinkType::Xdp,
            Hook::Tc => LinkType::Tcx,
        }
    }
}
