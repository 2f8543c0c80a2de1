//! The sampled packet trace: per service, one packet in N is written to a ring buffer as
//! a [`TraceRecord`] with what the data path decided for it. The controller switches it
//! on for a service by writing N into [`crate::limits::MAP_TRACE_SAMPLE`] at the
//! service's id (0 = off, the default), and reads [`crate::limits::MAP_TRACE_RING`].
//! Neither map is pinned: a trace belongs to the `lbd` that switched it on, and a
//! restarted `lbd` starts with every trace off.

/// One traced packet, as the data path saw it before rewriting it. Addresses and ports
/// are in wire order (the packet's own byte order); everything else is native. An IPv4
/// address fills the first word of its array, the other three zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TraceRecord {
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC) when the record was written.
    pub ns: u64,
    /// Service id (`ServiceMeta::id`).
    pub service: u32,
    /// Backend id, or [`TRACE_NO_BACKEND`].
    pub backend: u32,
    /// Source address (wire order; the first word only for IPv4).
    pub src_addr: [u32; 4],
    /// Destination address (wire order; the first word only for IPv4).
    pub dst_addr: [u32; 4],
    /// Source port (wire order).
    pub src_port: u16,
    /// Destination port (wire order).
    pub dst_port: u16,
    /// IP protocol number.
    pub proto: u8,
    /// TCP flag byte.
    pub tcp_flags: u8,
    /// One of `TRACE_DIR_*`.
    pub direction: u8,
    /// One of `TRACE_DECISION_*`.
    pub decision: u8,
    /// The XDP action returned (`XDP_DROP` 1, `XDP_PASS` 2, `XDP_TX` 3, `XDP_REDIRECT` 4).
    pub action: u32,
    /// The counted [`crate::counters::Reason`], or [`TRACE_NO_REASON`] when the packet
    /// was forwarded with XDP_PASS (no neighbour, FIB failure, egress not attached: the
    /// reason counters tell which).
    pub reason: u32,
    /// 4 (IPv4) or 6 (IPv6): how to read the addresses. A word, as the padding after
    /// it: the data path writes each with one store (a byte loop is refused by the
    /// verifier of a program loaded without CAP_PERFMON).
    pub family: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<TraceRecord>() == 72);

/// `TraceRecord::family` of an IPv4 packet.
pub const TRACE_FAMILY_IPV4: u32 = 4;
/// `TraceRecord::family` of an IPv6 packet.
pub const TRACE_FAMILY_IPV6: u32 = 6;

/// `TraceRecord::backend` when no backend was chosen.
pub const TRACE_NO_BACKEND: u32 = u32::MAX;
/// `TraceRecord::reason` when the forwarding step's reason is not known to the trace.
pub const TRACE_NO_REASON: u32 = u32::MAX;

/// Client -> VIP.
pub const TRACE_DIR_TO_BACKEND: u8 = 0;
/// Backend -> client.
pub const TRACE_DIR_TO_CLIENT: u8 = 1;

/// A packet of a recorded flow, sent to that flow's backend.
pub const TRACE_DECISION_FLOW_HIT: u8 = 1;
/// A SYN placed by the service's policy, recording a flow.
pub const TRACE_DECISION_NEW_FLOW: u8 = 2;
/// A client packet completing a handshake whose SYN left a SYN-cache slot: the flow is
/// recorded on the slot's backend.
pub const TRACE_DECISION_SYN_CACHE: u8 = 3;
/// A SYN of a hash-placed service: placed by the table, recording only a SYN-cache slot.
pub const TRACE_DECISION_STATELESS_SYN: u8 = 4;
/// A client packet without a flow entry that completes no handshake of ours: forwarded
/// by the table, recording nothing.
pub const TRACE_DECISION_STATELESS_FORWARD: u8 = 5;
/// A backend's reply that found no return entry and recorded the flow from the slot its
/// client packet's stateless forward left.
pub const TRACE_DECISION_REPLY_RECOVERED: u8 = 6;
/// Not forwarded (dropped or passed before a backend was reached); see the reason.
pub const TRACE_DECISION_REFUSED: u8 = 7;

/// Bytes of the trace ring buffer: 6,553 records (72 bytes each behind the ring's 8-byte
/// header), enough for a reader woken a few times a second at the rates a sampled trace
/// is meant for; more is counted as lost.
pub const TRACE_RING_BYTES: u32 = 512 * 1024;

/// The name of a `TRACE_DECISION_*`, for logs and `lbctl trace`.
pub fn decision_name(decision: u8) -> &'static str {
    match decision {
        TRACE_DECISION_FLOW_HIT => "flow_hit",
        TRACE_DECISION_NEW_FLOW => "new_flow",
        TRACE_DECISION_SYN_CACHE => "syn_cache",
        TRACE_DECISION_STATELESS_SYN => "stateless_syn",
        TRACE_DECISION_STATELESS_FORWARD => "stateless_forward",
        TRACE_DECISION_REPLY_RECOVERED => "reply_recovered",
        TRACE_DECISION_REFUSED => "refused",
        _ => "unknown",
    }
}
