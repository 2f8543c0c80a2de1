//! Every map and global the data path reads. Names are the `lb_common::limits::MAP_*`
//! constants; capacities here are placeholders the loader overrides from config.
use aya_ebpf::{
    bindings::BPF_F_MMAPABLE,
    macros::map,
    maps::{
        lpm_trie::LpmTrie, Array, DevMapHash, HashMap, LruHashMap, PerCpuArray, ProgramArray,
        RingBuf,
    },
};
use lb_common::{
    backend::Backend,
    counters::{BackendSignals, TrafficCounters, REASON_COUNT},
    edge::{
        DropMemo, EdgeAddr, EdgeCounters, EdgeRule, EdgeService, RateKey4, RateKey6, TokenBucket,
        EDGE_DROP_MEMO_SLOTS, EDGE_RULES_PER_SERVICE,
    },
    encap::DsrHop,
    encap6::DsrHop6,
    filter::FILTER_TOTAL_WORDS,
    flow::{FlowKey, FlowTarget},
    flow_slots::ConnSlot,
    ipv6::{Addr6, FlowKey6, NatReturn6, ServiceKey6},
    limits::{
        DEFAULT_FLOW_TABLE_SIZE, DEFAULT_MAX_BACKENDS, DEFAULT_MAX_SERVICES,
        DEFAULT_RATE_LIMIT_SOURCES, MAX_INTERFACES, PROGRAMS_SLOTS,
    },
    nexthop::NextHop,
    reverse::{ReverseKey, ReverseTarget},
    reverse6::{ReverseKey6, ReverseTarget6},
    service::{ServiceMeta, POLICY_TABLE_SLOTS},
    service_index::{self, ServiceSlot},
    syn_cache::SynSet,
    syn_proxy::SynProxyFlow,
    trace::TRACE_RING_BYTES,
};

/// The services by VIP:port (see `lb_common::service_index`); sized by the loader, a
/// power of two. Mmapable: the controller writes each word with one atomic store.
#[map]
pub static SERVICE_INDEX: Array<ServiceSlot> = Array::with_max_entries(256, BPF_F_MMAPABLE);

#[map]
pub static BACKENDS: Array<Backend> = Array::with_max_entries(DEFAULT_MAX_BACKENDS, 0);

/// Two Maglev slots per service, `LB_RING_SIZE` entries each; values are backend ids.
/// Mmapable so the controller writes whole tables without a syscall per entry.
#[map]
pub static RING: Array<u32> = Array::with_max_entries(DEFAULT_MAX_SERVICES * 2, BPF_F_MMAPABLE);

#[map]
pub static FLOWS: LruHashMap<FlowKey, FlowTarget> =
    LruHashMap::with_max_entries(DEFAULT_FLOW_TABLE_SIZE, 0);

#[map]
pub static RETURN_FLOWS: LruHashMap<FlowKey, ConnSlot> =
    LruHashMap::with_max_entries(DEFAULT_FLOW_TABLE_SIZE, 0);

/// The IPv4 connections' slots, one per connection (see `lb_common::flow_slots`), in front of `FLOWS` and
/// `RETURN_FLOWS`. Mmapable: the controller walks and empties them without a syscall per
/// slot.
#[map]
pub static FLOW_SLOTS: Array<ConnSlot> =
    Array::with_max_entries(DEFAULT_FLOW_TABLE_SIZE, BPF_F_MMAPABLE);

/// IPv6 services by VIP:port (see `lb_common::ipv6`).
#[map]
pub static SERVICES6: HashMap<ServiceKey6, ServiceMeta> =
    HashMap::with_max_entries(DEFAULT_MAX_SERVICES, 0);

/// The address of each IPv6 backend, by backend id.
#[map]
pub static BACKEND_ADDRS6: Array<Addr6> = Array::with_max_entries(DEFAULT_MAX_BACKENDS, 0);

#[map]
pub static FLOWS6: LruHashMap<FlowKey6, FlowTarget> =
    LruHashMap::with_max_entries(DEFAULT_FLOW_TABLE_SIZE, 0);

#[map]
pub static RETURN_FLOWS6: LruHashMap<FlowKey6, NatReturn6> =
    LruHashMap::with_max_entries(DEFAULT_FLOW_TABLE_SIZE, 0);

/// The VIP:port of each IPv6 service, by service id (see `lb_common::syn_cache6`).
#[map]
pub static SERVICE_VIPS6: Array<ServiceKey6> = Array::with_max_entries(DEFAULT_MAX_SERVICES, 0);

#[map]
pub static SERVICE_STATS: PerCpuArray<TrafficCounters> =
    PerCpuArray::with_max_entries(DEFAULT_MAX_SERVICES, 0);

#[map]
pub static BACKEND_STATS: PerCpuArray<TrafficCounters> =
    PerCpuArray::with_max_entries(DEFAULT_MAX_BACKENDS, 0);

/// Handshake and reset counts per backend id: the passive health signal.
#[map]
pub static BACKEND_SIGNALS: PerCpuArray<BackendSignals> =
    PerCpuArray::with_max_entries(DEFAULT_MAX_BACKENDS, 0);

#[map]
pub static REASONS: PerCpuArray<u64> = PerCpuArray::with_max_entries(REASON_COUNT, 0);

/// Each service's policy tables (weighted round-robin schedule or least-connections
/// candidates), two slots of `POLICY_TABLE_SLOTS` backend ids, flipped with the ring.
#[map]
pub static POLICY_TABLE: Array<u32> = Array::with_max_entries(
    DEFAULT_MAX_SERVICES * 2 * POLICY_TABLE_SLOTS,
    BPF_F_MMAPABLE,
);

/// Round-robin position per service, per CPU, so no CPU waits on another's cursor.
#[map]
pub static RR_CURSOR: PerCpuArray<u32> = PerCpuArray::with_max_entries(DEFAULT_MAX_SERVICES, 0);

/// Flows opened minus flows closed per backend, changed only atomically by the data path.
#[map]
pub static ACTIVE_FLOWS: Array<u64> = Array::with_max_entries(DEFAULT_MAX_BACKENDS, 0);

/// Per backend, flows the data path counted but will never see close (expired or
/// evicted), written only by the controller's reconciler. Active = ACTIVE_FLOWS - this.
#[map]
pub static ACTIVE_ADJUST: Array<u64> = Array::with_max_entries(DEFAULT_MAX_BACKENDS, 0);

/// The layout version of this object's maps (`lb_common::limits::LAYOUT_VERSION`),
/// written by the controller; the data path never reads it.
#[map]
pub static LB_LAYOUT: Array<u32> = Array::with_max_entries(1, 0);

/// Handshakes whose SYN recorded no flow, for their SYN-ACK (see
/// `lb_common::syn_cache`); sized by the loader, a power of two.
#[map]
pub static SYN_CACHE: Array<SynSet> = Array::with_max_entries(1024, 0);

/// Backend address:port -> VIP:port for replies that find no return entry and no
/// SYN-cache slot (see `lb_common::reverse`); written by the controller, at most one entry
/// per backend slot.
#[map]
pub static REVERSE: HashMap<ReverseKey, ReverseTarget> =
    HashMap::with_max_entries(DEFAULT_MAX_BACKENDS, 0);

/// The same for IPv6 backends (see `lb_common::reverse6`).
#[map]
pub static REVERSE6: HashMap<ReverseKey6, ReverseTarget6> =
    HashMap::with_max_entries(DEFAULT_MAX_BACKENDS, 0);

/// Cached route towards each backend, by backend id (see `lb_common::nexthop`).
#[map]
pub static NEXTHOPS: Array<NextHop> = Array::with_max_entries(DEFAULT_MAX_BACKENDS, 0);

/// The current next-hop cache generation, bumped by the controller every second.
#[map]
pub static NEXTHOP_GEN: Array<u32> = Array::with_max_entries(1, 0);

/// The address prefilter (see `lb_common::filter`), written by the controller through a
/// memory mapping.
#[map]
pub static ADDR_FILTER: Array<u32> = Array::with_max_entries(FILTER_TOTAL_WORDS, BPF_F_MMAPABLE);

/// The controller's clock in seconds (`lb_common::limits::MAP_CLOCK`).
#[map]
pub static CLOCK: Array<u32> = Array::with_max_entries(1, 0);

/// Programs `lb_xdp` tail-calls (`lb_common::limits::MAP_PROGRAMS`).
#[map]
pub static PROGRAMS: ProgramArray = ProgramArray::with_max_entries(PROGRAMS_SLOTS, 0);

/// Attached NICs that XDP_REDIRECT may send to, keyed by ifindex.
#[map]
pub static EGRESS: DevMapHash = DevMapHash::with_max_entries(MAX_INTERFACES, 0);

/// Per service id, the packet trace's sampling: 1 in N, 0 = off (see `trace`).
#[map]
pub static TRACE_SAMPLE: Array<u32> = Array::with_max_entries(DEFAULT_MAX_SERVICES, 0);

/// Sampled packets' `lb_common::trace::TraceRecord`s, read by the controller.
#[map]
pub static TRACE_RING: RingBuf = RingBuf::with_byte_size(TRACE_RING_BYTES, 0);

/// Trace records lost to a full ring.
#[map]
pub static TRACE_LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Every service's source rules (see `lb_common::edge`).
#[map]
pub static EDGE_RULES: LpmTrie<EdgeAddr, EdgeRule> =
    LpmTrie::with_max_entries(DEFAULT_MAX_SERVICES * EDGE_RULES_PER_SERVICE, 0);

/// Matches per rule, by `EdgeRule::counter`.
#[map]
pub static EDGE_RULE_HITS: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(DEFAULT_MAX_SERVICES * EDGE_RULES_PER_SERVICE, 0);

/// Each service's edge settings, by service id.
#[map]
pub static EDGE_SERVICES: Array<EdgeService> = Array::with_max_entries(DEFAULT_MAX_SERVICES, 0);

/// Each service's edge counters, by service id.
#[map]
pub static EDGE_COUNTERS: PerCpuArray<EdgeCounters> =
    PerCpuArray::with_max_entries(DEFAULT_MAX_SERVICES, 0);

/// Token buckets of sources, per service (see `lb_common::edge::TokenBucket`).
#[map]
pub static RATE_BUCKETS: LruHashMap<RateKey4, TokenBucket> =
    LruHashMap::with_max_entries(DEFAULT_RATE_LIMIT_SOURCES, 0);

/// Token buckets of IPv6 source prefixes, per service (see `lb_common::edge::RateKey6`).
#[map]
pub static RATE_BUCKETS6: LruHashMap<RateKey6, TokenBucket> =
    LruHashMap::with_max_entries(DEFAULT_RATE_LIMIT_SOURCES, 0);

/// Flows opened through the SYN proxy, by client -> VIP tuple (see
/// `lb_common::syn_proxy`); sized by the loader like the flow table.
#[map]
pub static SYN_PROXY_FLOWS: LruHashMap<FlowKey, SynProxyFlow> =
    LruHashMap::with_max_entries(DEFAULT_FLOW_TABLE_SIZE, 0);

/// Per service id, SYNs handed to the SYN proxy (see `lb_common::limits::MAP_SYN_PROXY_SYNS`).
#[map]
pub static SYN_PROXY_SYNS: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(DEFAULT_MAX_SERVICES, 0);

/// Recent rule drops by source, read by `lb_xdp` before the hand-over to `lb_edge`
/// (see `lb_common::edge::DropMemo`).
#[map]
pub static EDGE_DROP_MEMO: Array<DropMemo> = Array::with_max_entries(EDGE_DROP_MEMO_SLOTS, 0);

/// The tuple of the IPv6 packet `lb_edge6` admitted and handed back to `lb_v6` (see
/// `edge6`): per CPU, and a tail call runs on the CPU that made it.
#[map]
pub static EDGE6_ADMITTED: PerCpuArray<FlowKey6> = PerCpuArray::with_max_entries(1, 0);

/// VIP addresses, for packets no service listens for (`unlisted_ports`).
#[map]
pub static VIP_ADDRS: HashMap<u32, u32> = HashMap::with_max_entries(DEFAULT_MAX_SERVICES, 0);

/// IPv6 VIP addresses (wire-order words), for packets no service listens for
/// (`unlisted_ports`, see `edge6`).
#[map]
pub static VIP_ADDRS6: HashMap<Addr6, u32> = HashMap::with_max_entries(DEFAULT_MAX_SERVICES, 0);

/// Cached routes to direct-server-return backends, by backend id (see
/// `lb_common::encap::DsrHop`).
#[map]
pub static DSR_HOPS: Array<DsrHop> = Array::with_max_entries(DEFAULT_MAX_BACKENDS, 0);

/// Cached routes to IPv6 direct-server-return backends, by backend id (see
/// `lb_common::encap6::DsrHop6`).
#[map]
pub static DSR_HOPS6: Array<DsrHop6> = Array::with_max_entries(DEFAULT_MAX_BACKENDS, 0);

/// The backend `lb_xdp` placed the packet it hands to `lb_dsr` on (see `dsr`): per CPU,
/// and a tail call runs on the CPU that made it, so nothing else writes it in between.
#[map]
pub static DSR_HAND_OVER: PerCpuArray<crate::dsr::HandOver> = PerCpuArray::with_max_entries(1, 0);

/// Whether `lb_v6` found no flow entry for the segment it handed to `lb_v6_syn` (see
/// `v6_syn::hand_over`): per CPU, as `DSR_HAND_OVER`.
#[map]
pub static V6_SYN_HAND_OVER: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// The UDP destination port of `gue` (host order); set by the loader.
#[unsafe(no_mangle)]
static LB_GUE_PORT: u16 = lb_common::encap::DEFAULT_GUE_PORT;

#[inline(always)]
pub fn gue_port() -> u16 {
    unsafe { core::ptr::read_volatile(&LB_GUE_PORT) }
}

/// Cluster-wide seed of the flow hash; set by the loader.
#[unsafe(no_mangle)]
static LB_HASH_SEED: u32 = 0;

/// Entries per ring slot (a prime); set by the loader.
#[unsafe(no_mangle)]
static LB_RING_SIZE: u32 = 1;

/// Sets of the SYN cache minus one; set by the loader.
#[unsafe(no_mangle)]
static LB_SYN_CACHE_MASK: u32 = 0;

/// [`lb_common::service_index::SERVICE_INDEX_PROBES`], read as a value (see
/// `service_index::find_within`).
pub static SERVICE_INDEX_PROBES: u32 = service_index::SERVICE_INDEX_PROBES;

/// The edge settings word (`lb_common::edge::EDGE_UNLISTED_DROP`); set by the loader
/// (`unlisted_ports` takes a restart): a global costs no map lookup in `lb_xdp`.
#[unsafe(no_mangle)]
static LB_UNLISTED_PORTS: u32 = 0;

#[inline(always)]
pub fn unlisted_ports() -> u32 {
    unsafe { core::ptr::read_volatile(&LB_UNLISTED_PORTS) }
}

/// Slots of each flow slot array minus one; set by the loader.
#[unsafe(no_mangle)]
static LB_FLOW_SLOT_MASK: u32 = 0;

#[inline(always)]
pub fn flow_slot_mask() -> u32 {
    unsafe { core::ptr::read_volatile(&LB_FLOW_SLOT_MASK) }
}

/// Slots of the service index minus one; set by the loader.
#[unsafe(no_mangle)]
static LB_SERVICE_INDEX_MASK: u32 = 0;

#[inline(always)]
pub fn hash_seed() -> u32 {
    // Volatile: the loader patches .rodata after compilation, so the compiler must not
    // fold the initial value in.
    unsafe { core::ptr::read_volatile(&LB_HASH_SEED) }
}

#[inline(always)]
pub fn ring_size() -> u32 {
    unsafe { core::ptr::read_volatile(&LB_RING_SIZE) }
}

#[inline(always)]
pub fn syn_cache_mask() -> u32 {
    unsafe { core::ptr::read_volatile(&LB_SYN_CACHE_MASK) }
}

#[inline(always)]
pub fn service_index_mask() -> u32 {
    unsafe { core::ptr::read_volatile(&LB_SERVICE_INDEX_MASK) }
}
