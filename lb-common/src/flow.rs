//! Flow state. Over IPv4 a connection lives in one slot, which serves both directions,
//! when that is free (see `flow_slots`); else, as over IPv6, it has an entry per direction
//! in LRU maps, so that a full table evicts the coldest flows instead of refusing new
//! ones.
use crate::{nexthop::NextHop, service::ServiceKey};

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

impl FlowKey {
    /// The key of the service this packet is addressed to: its destination.
    #[inline(always)]
    pub fn service_key(&self) -> ServiceKey {
        ServiceKey {
            addr: self.dst_addr,
            port: self.dst_port,
            proto: self.proto,
            family: self.family,
        }
    }

    /// The reply (backend -> client) key of this forward key's connection on the backend
    /// at `addr`:`port` (wire order).
    #[inline(always)]
    pub const fn reply_from(&self, addr: u32, port: u16) -> FlowKey {
        FlowKey {
            src_addr: addr,
            dst_addr: self.src_addr,
            src_port: port,
            dst_port: self.src_port,
            proto: self.proto,
            family: self.family,
            _pad: [0; 2],
        }
    }

    /// The forward (client -> VIP) key of the connection this reply key belongs to, which
    /// was addressed to `vip`:`vport` (wire order).
    #[inline(always)]
    pub const fn forward_of_reply(&self, vip: u32, vport: u16) -> FlowKey {
        FlowKey {
            src_addr: self.dst_addr,
            dst_addr: vip,
            src_port: self.dst_port,
            dst_port: vport,
            proto: self.proto,
            family: self.family,
            _pad: [0; 2],
        }
    }
}

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
    /// Padding; in a flow slot, the first word of the route back to the client
    /// (`flow_slots::ConnSlot::route`), so never written through a slot's target.
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<FlowTarget>() == 24);

impl FlowTarget {
    /// The target of a packet forwarded without recording a flow (a hash-placed SYN, a
    /// stateless forward): no state, never seen.
    pub const fn unrecorded(backend: u32, service: u32) -> Self {
        Self {
            backend,
            service,
            state: 0,
            last_seen: 0,
            _pad: 0,
        }
    }
}

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
/// Recorded for a service of a tier (`SERVICE_F_RECORD_UNPROVEN`): a new handshake on
/// the tuple replaces the entry, once it may be reused, without the SYN-ACK proof its
/// node may not have seen, as the first connection's was recorded.
pub const FLOW_F_TIER: u64 = 1 << 5;
/// A UDP flow: no handshake and no close, so it lives until idle for the UDP timeout
/// (`flow_timeouts.udp`); recorded counted and established.
pub const FLOW_F_DATAGRAM: u64 = 1 << 7;
// Every bit of `FlowTarget::state`, wherever it is defined: no two may share one.
const _: () = {
    let all = [
        FLOW_F_COUNTED,
        FLOW_F_FIN_CLIENT,
        FLOW_F_FIN_BACKEND,
        FLOW_F_CLOSED,
        FLOW_F_ESTABLISHED,
        FLOW_F_TIER,
        crate::syn_proxy::FLOW_F_SYN_PROXY,
        FLOW_F_DATAGRAM,
    ];
    let mut seen = 0u64;
    let mut i = 0;
    while i < all.len() {
        assert!(all[i].count_ones() == 1 && seen & all[i] == 0);
        seen |= all[i];
        i += 1;
    }
};

/// What a reply (backend -> client) is rewritten back to: how the controller reads an IPv4
/// connection's reply direction (its slot, or its copy in `RETURN_FLOWS`, see
/// `flow_slots::ConnSlot`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct NatReturn {
    /// Virtual IP to put back as source (wire order).
    pub vip: u32,
    /// Virtual port to put back as source port (wire order).
    pub vport: u16,
    /// Bit set of `NAT_F_*` (see `syn_proxy::NAT_F_SYN_PROXY`).
    pub flags: u16,
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
