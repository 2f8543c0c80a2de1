//! Health probes that travel the path clients use to a direct-server-return backend: lbd
//! marks each probe socket with the backend's mark (`SO_MARK`), and a tc egress program
//! (`lb_probe_tunnel`, object `lb-probe-tunnel`) sends every packet carrying such a mark
//! to that backend the way the data path sends client packets: behind an outer IPv4
//! header (`ipip`), outer IPv4 + UDP (`gue`), or to the backend's MAC (`dsr_l2`). The
//! probe's destination is the VIP, so a backend without the VIP on `lo` or without its
//! decapsulation fails it. An IPv6 backend's probe goes to its IPv6 VIP the same way,
//! behind the IPv6 outer headers of `crate::encap6` ([`ProbeTunnel6`]).

/// Where the packets of one mark go (hash map [`MAP_PROBE_TUNNELS`], key: the mark).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProbeTunnel {
    /// The backend's address (wire order).
    pub backend: u32,
    /// The outer source: the node's address toward the backend (wire order).
    pub source: u32,
    /// The NIC toward the backend.
    pub ifindex: u32,
    /// The GUE UDP destination port (wire order).
    pub gue_port: u16,
    /// One of `crate::encap::BACKEND_F_DSR_L2`, `BACKEND_F_IPIP`, `BACKEND_F_GUE`.
    pub mode: u8,
    pub _pad: u8,
}

const _: () = assert!(core::mem::size_of::<ProbeTunnel>() == 16);

/// [`ProbeTunnel`] for an IPv6 backend (hash map [`MAP_PROBE_TUNNELS6`], key: the mark):
/// the probe, to an IPv6 VIP, goes behind an outer IPv6 header (`ipip`: next header 41),
/// outer IPv6 + UDP (`gue`), or to the backend's MAC (`dsr_l2`), as
/// `crate::encap6` describes for clients' packets.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProbeTunnel6 {
    /// The backend's address (wire order).
    pub backend: crate::ipv6::Addr6,
    /// The outer source: the node's address toward the backend (wire order).
    pub source: crate::ipv6::Addr6,
    /// The NIC toward the backend.
    pub ifindex: u32,
    /// The GUE UDP destination port (wire order).
    pub gue_port: u16,
    /// As [`ProbeTunnel::mode`].
    pub mode: u8,
    pub _pad: u8,
}

const _: () = assert!(core::mem::size_of::<ProbeTunnel6>() == 40);

/// The marks lbd gives probe sockets: [`PROBE_MARK_BASE`] plus a probe's index, so the
/// program leaves every other mark alone after one compare.
pub const PROBE_MARK_BASE: u32 = 0x4c42_0000;
pub const PROBE_MARK_MASK: u32 = 0xffff_0000;
/// At most this many probed DSR backends (the low 16 bits of the mark).
pub const MAX_PROBE_TUNNELS: u32 = 1 << 16;

/// The mark of probe `index` (below [`MAX_PROBE_TUNNELS`]).
pub const fn probe_mark(index: u16) -> u32 {
    PROBE_MARK_BASE | index as u32
}

pub const fn is_probe_mark(mark: u32) -> bool {
    mark & PROBE_MARK_MASK == PROBE_MARK_BASE
}

pub const MAP_PROBE_TUNNELS: &str = "PROBE_TUNNELS";
pub const MAP_PROBE_TUNNELS6: &str = "PROBE_TUNNELS6";
pub const PROGRAM_PROBE_TUNNEL: &str = "lb_probe_tunnel";

#[cfg(feature = "user")]
// SAFETY: `#[repr(C)]`, integers only, no implicit padding (the size assertion above).
unsafe impl aya::Pod for ProbeTunnel {}

#[cfg(feature = "user")]
// SAFETY: as for `ProbeTunnel` (the size assertion above).
unsafe impl aya::Pod for ProbeTunnel6 {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_marks_are_recognised_and_nothing_else_is() {
        assert!(is_probe_mark(probe_mark(0)));
        assert!(is_probe_mark(probe_mark(u16::MAX)));
        assert_eq!(probe_mark(7), 0x4c42_0007);
        for other in [0, 1, 0x4c41_ffff, 0x4c43_0000, u32::MAX] {
            assert!(!is_probe_mark(other), "{other:#x}");
        }
    }
}
