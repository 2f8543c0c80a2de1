//! Every map and global the data path reads. Names are the `lb_common::limits::MAP_*`
//! constants; capacities here are placeholders the loader overrides from config.
use aya_ebpf::{
    macros::map,
    maps::{Array, DevMapHash, HashMap, LruHashMap, PerCpuArray},
};
use lb_common::{
    backend::Backend,
    counters::{BackendSignals, TrafficCounters, REASON_COUNT},
    flow::{FlowKey, FlowTarget, NatReturn},
    limits::{DEFAULT_FLOW_TABLE_SIZE, DEFAULT_MAX_BACKENDS, DEFAULT_MAX_SERVICES, MAX_INTERFACES},
    net::FAMILY_IPV4,
    service::{ServiceKey, ServiceMeta},
};

use crate::packet::Packet;

#[map]
pub static SERVICES: HashMap<ServiceKey, ServiceMeta> =
    HashMap::with_max_entries(DEFAULT_MAX_SERVICES, 0);

#[map]
pub static BACKENDS: Array<Backend> = Array::with_max_entries(DEFAULT_MAX_BACKENDS, 0);

/// Two Maglev slots per service, `LB_RING_SIZE` entries each; values are backend ids.
#[map]
pub static RING: Array<u32> = Array::with_max_entries(DEFAULT_MAX_SERVICES * 2, 0);

#[map]
pub static FLOWS: LruHashMap<FlowKey, FlowTarget> =
    LruHashMap::with_max_entries(DEFAULT_FLOW_TABLE_SIZE, 0);

#[map]
pub static RETURN_FLOWS: LruHashMap<FlowKey, NatReturn> =
    LruHashMap::with_max_entries(DEFAULT_FLOW_TABLE_SIZE, 0);

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

/// Attached NICs that XDP_REDIRECT may send to, keyed by ifindex.
#[map]
pub static EGRESS: DevMapHash = DevMapHash::with_max_entries(MAX_INTERFACES, 0);

/// Cluster-wide seed of the flow hash; set by the loader.
#[unsafe(no_mangle)]
static LB_HASH_SEED: u32 = 0;

/// Entries per ring slot (a prime); set by the loader.
#[unsafe(no_mangle)]
static LB_RING_SIZE: u32 = 1;

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

/// The service whose VIP:port the packet is addressed to, copied out of the map.
#[inline(always)]
pub fn service_of(pkt: &Packet) -> Option<ServiceMeta> {
    let key = ServiceKey {
        addr: pkt.flow.dst_addr,
        port: pkt.flow.dst_port,
        proto: pkt.flow.proto,
        family: FAMILY_IPV4,
    };
    unsafe { SERVICES.get(key) }.copied()
}

/// The NAT return entry for a packet from a backend to a client, copied out of the map.
#[inline(always)]
pub fn return_flow_of(pkt: &Packet) -> Option<NatReturn> {
    unsafe { RETURN_FLOWS.get(pkt.flow) }.copied()
}
