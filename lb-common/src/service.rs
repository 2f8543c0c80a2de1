//! Services: which (VIP, port, protocol) the data path owns, and how it picks a
//! backend for a new flow there.

/// A service's address: the key of the service index (see [`crate::service_index`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ServiceKey {
    /// Virtual IP (wire order).
    pub addr: u32,
    /// Virtual port (wire order).
    pub port: u16,
    /// IP protocol number, e.g. [`crate::net::PROTO_TCP`].
    pub proto: u8,
    /// Address family, [`crate::net::FAMILY_IPV4`].
    pub family: u8,
}
const _: () = assert!(core::mem::size_of::<ServiceKey>() == 8);

/// What the data path knows of a service. The service index holds it packed into one
/// word (`service_index::pack_meta`), which the controller replaces with one store to
/// flip `active_slot`, so a packet sees either the old or the new slot, never a mix.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceMeta {
    /// Dense index of the service (0..max_services), allocated by the controller; indexes
    /// the selection ring and the per-service counters.
    pub id: u32,
    /// Which of the service's two ring slots is live (0 or 1).
    pub active_slot: u32,
    /// Selection policy for new flows, one of `POLICY_*`.
    pub policy: u32,
    /// Bit set of `SERVICE_F_*`.
    pub flags: u32,
    /// Valid entries in the live slot of the service's policy table (the weighted
    /// round-robin schedule, or the least-connections candidate list).
    pub table_len: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<ServiceMeta>() == 24);

/// Weighted Maglev consistent hashing over the whole flow tuple.
pub const POLICY_MAGLEV: u32 = 0;
/// Weighted round robin: a per-CPU cursor walks the service's schedule.
pub const POLICY_ROUND_ROBIN: u32 = 1;
/// Fewest active flows relative to weight, by two random choices among the candidates.
pub const POLICY_LEAST_CONN: u32 = 2;
/// Consistent hashing of the client address only (affinity across client ports).
pub const POLICY_SOURCE_HASH: u32 = 3;

/// Entries per slot of a service's policy table; also the most backends a service has.
pub const POLICY_TABLE_SLOTS: u32 = 4096;

/// Index of entry `pos` of a service's policy table slot in the shared table array.
#[inline(always)]
pub const fn policy_table_index(service_id: u32, slot: u32, pos: u32) -> u32 {
    (service_id * 2 + (slot & 1)) * POLICY_TABLE_SLOTS + pos % POLICY_TABLE_SLOTS
}

/// NAT forwarding: destination rewritten to the backend, source rewritten back on return.
pub const SERVICE_F_NAT: u32 = 1 << 0;
/// A SYN records no flow: the service places new flows by a hash of the packet alone, so
/// the client's next packet finds the same backend and records the flow then; the SYN
/// leaves only a SYN-cache slot for its SYN-ACK (see [`crate::syn_cache`]).
pub const SERVICE_F_STATELESS_SYN: u32 = 1 << 1;
/// The service has source rules or a SYN rate limit: a packet without a flow entry is
/// checked by `lb_edge` before it is placed (see [`crate::edge`]).
pub const SERVICE_F_EDGE: u32 = 1 << 2;
/// With [`SERVICE_F_STATELESS_SYN`], for a service several nodes serve behind ECMP
/// (`stateless_return`): the client's ACK that completes a handshake records the flow even
/// if this node did not see the SYN-ACK (which ECMP sends back through another node N-1
/// times in N), so that a later table change does not move the connection.
pub const SERVICE_F_RECORD_UNPROVEN: u32 = 1 << 3;
/// With [`SERVICE_F_EDGE`]: the SYN proxy is on, so `lb_edge` hands a packet it admitted
/// to `lb_proxy` rather than `lb_place` (see [`crate::syn_proxy`]).
pub const SERVICE_F_SYN_PROXY: u32 = 1 << 4;

/// Direct server return (`dsr_l2`, `ipip`, `gue`; see [`crate::encap`]): the node sees
/// only the client's packets, so a flow has no reply direction and its handshake's ACK
/// cannot prove a SYN-ACK it never sees.
pub const SERVICE_F_DSR: u32 = 1 << 5;

/// Ring entry meaning "no backend can take this flow": the packet is dropped.
pub const NO_BACKEND: u32 = u32::MAX;

/// Index of a ring entry in the single ring array shared by all services: each service
/// owns two slots of `ring_size` entries; the controller writes the idle slot and flips.
#[inline(always)]
pub const fn ring_index(service_id: u32, slot: u32, ring_size: u32, hash: u32) -> u32 {
    (service_id * 2 + (slot & 1)) * ring_size + hash % ring_size
}

/// First ring-array index of a service's slot, for the controller's bulk writes.
#[inline(always)]
pub const fn ring_slot_base(service_id: u32, slot: u32, ring_size: u32) -> u32 {
    (service_id * 2 + (slot & 1)) * ring_size
}
