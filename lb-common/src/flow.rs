//! Flow state. In NAT mode each connection has two entries, one per direction, both in
//! LRU maps so that a full table evicts the coldest flows instead of refusing new ones.
use crate::nexthop::NextHop;

/// A TCP/UDP 5-tuple as seen on the wire, in the direction of the packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    /// Source address (wire order).
    pub src_addr: u32,
    /// Destination address (wire order).
    pub dst_addr: u32,
    /// Source port (wire order).
    pub src_port: u16,
    /// Destination port (wire order).
    pub dst_port: u16,
    /// IP protocol number.
    pub proto: u8,
    /// Address family.
    pub family: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<FlowKey>() == 16);

/// Value of the forward flow map, keyed by client -> VIP tuple.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowTarget {
    /// Backend id the flow is pinned to.
    pub backend: u32,
    /// Service id, for counting without another lookup.
    pub service: u32,
    /// Bit set of `FLOW_F_*`, changed only with atomic or, so that exactly one CPU
    /// sees the transition to closed. 64 bits because the BPF backend has atomic
    /// fetch-or for 32-bit words only with ALU32, and returns no old value without it.
    pub state: u64,
    /// When a client packet of the flow was last seen, in whole seconds of the clock
    /// the controller writes (see `MAP_CLOCK`); the controller expires idle flows by it.
    pub last_seen: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<FlowTarget>() == 24);

/// The flow is counted in its backend's active-flow count.
pub const FLOW_F_COUNTED: u64 = 1 << 0;
/// The client sent a FIN.
pub const FLOW_F_FIN_CLIENT: u64 = 1 << 1;
/// The backend sent a FIN.
pub const FLOW_F_FIN_BACKEND: u64 = 1 << 2;
/// The client sent a non-SYN packet: the handshake completed (or the flow was picked
/// up mid-connection). A flow without it is a bare SYN, aged out quickly.
pub const FLOW_F_ESTABLISHED: u64 = 1 << 4;
/// Closed (RST, or FIN from both sides): no longer counted as active. Its entry stays
/// so that the last ACKs still reach the backend; a new SYN on the same tuple starts a
/// new flow.
pub const FLOW_F_CLOSED: u64 = 1 << 3;

/// Value of the return flow map, keyed by backend -> client tuple: what the source must be
/// rewritten back to.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct NatReturn {
    /// Virtual IP to put back as source (wire order).
    pub vip: u32,
    /// Virtual port to put back as source port (wire order).
    pub vport: u16,
    pub _pad: u16,
    /// Service id, for counting.
    pub service: u32,
    /// Backend id, for counting.
    pub backend: u32,
    /// The route back to the client, cached on the first reply.
    pub nexthop: NextHop,
}
const _: () = assert!(core::mem::size_of::<NatReturn>() == 36);

/// Seconds without a client packet after which a flow entry may belong to an earlier
/// connection on its tuple: a client that reuses a tuple without the old connection having
/// closed (a crashed or rebooted client, a lost RST) does so long after that connection's
/// last packet. A live flow idle this long pays one SYN-cache read on its next packet.
pub const FLOW_REUSE_IDLE_SECS: u32 = 5;

/// A slot of the SYN cache: a direct-mapped array, indexed by a hash of the client's
/// address and port, that a SYN to a `SERVICE_F_STATELESS_SYN` service writes instead of
/// recording its flow. It serves the two other packets of the handshake:
///
/// - the SYN-ACK (backend -> client) finds no return entry and is translated back only
///   if this slot names its client and backend: so replies of other traffic to the
///   backends (health probes, clients reaching a backend directly) are never rewritten;
/// - the client's ACK misses the flow table and records the flow on the slot's backend,
///   so a handshake stays on its backend even if the table changed since the SYN. The SYN
///   looks up no flow: if its tuple still has the entry of an earlier connection (closed,
///   idle, or on a backend taking no new flows), the ACK finds the slot naming its flow
///   and replaces that entry.
///
/// A SYN flood only overwrites slots (a handshake whose slot was overwritten within one
/// round trip has its SYN-ACK passed, and the client retransmits the SYN) instead of
/// evicting live flows from the flow table. Slots are written with plain stores, so two
/// CPUs writing one slot at once could leave a mix: `check` covers every other field and
/// a mixed slot is ignored.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SynEntry {
    /// The SYN's key: client -> VIP.
    pub flow: FlowKey,
    /// Backend address (wire order).
    pub backend_addr: u32,
    /// Backend port (wire order).
    pub backend_port: u16,
    /// [`syn_entry_check`] of the other fields.
    pub check: u16,
    /// Service id, for counting.
    pub service: u32,
    /// Backend id.
    pub backend: u32,
}
const _: () = assert!(core::mem::size_of::<SynEntry>() == 32);

/// The check word of a SYN-cache slot holding these fields; never 0, so that a zeroed
/// slot never verifies.
#[inline(always)]
pub fn syn_entry_check(
    flow: &FlowKey,
    backend_addr: u32,
    backend_port: u16,
    service: u32,
    backend: u32,
) -> u16 {
    use crate::hash::mix32;
    let mut h = mix32(flow.src_addr ^ 0x5bd1_e995);
    h = mix32(h ^ flow.dst_addr);
    h = mix32(h ^ (flow.src_port as u32) ^ ((flow.dst_port as u32) << 16));
    h = mix32(h ^ backend_addr ^ ((backend_port as u32) << 16));
    h = mix32(h ^ service);
    h = mix32(h ^ backend);
    ((h >> 16) as u16) | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(src_port: u16) -> FlowKey {
        FlowKey {
            src_addr: 0x0b00_010a,
            dst_addr: 0x0200_0a0a,
            src_port,
            dst_port: 0x4e9c,
            proto: 6,
            family: 2,
            _pad: [0; 2],
        }
    }

    #[test]
    fn a_syn_entry_check_is_never_zero_and_covers_every_field() {
        let base = syn_entry_check(&flow(0x901f), 0x6400_000a, 0x5000, 0, 1);
        let changed = [
            syn_entry_check(&flow(0x911f), 0x6400_000a, 0x5000, 0, 1),
            syn_entry_check(&flow(0x901f), 0x6500_000a, 0x5000, 0, 1),
            syn_entry_check(&flow(0x901f), 0x6400_000a, 0x5100, 0, 1),
            syn_entry_check(&flow(0x901f), 0x6400_000a, 0x5000, 1, 1),
            syn_entry_check(&flow(0x901f), 0x6400_000a, 0x5000, 0, 2),
        ];
        assert!(changed.iter().all(|c| *c != base), "{base:#x} {changed:x?}");
        let zeroed = SynEntry::default();
        for port in 0..2000u16 {
            assert_ne!(syn_entry_check(&flow(port), 0, 0, 0, 0), 0);
        }
        assert_ne!(
            syn_entry_check(&zeroed.flow, 0, 0, 0, 0),
            zeroed.check,
            "a zeroed slot never verifies"
        );
    }
}
