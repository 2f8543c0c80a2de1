//! The data path in the kernel: the embedded XDP object loaded with its maps sized from
//! config, attached to NICs, pinned for the next lbd, and the
//! [`crate::dataplane::Dataplane`] over its maps.
mod attach;
pub mod batch;
pub mod ebpf_object;
mod edge;
mod flow_table;
mod flows;
mod hook;
mod key_sketch;
pub mod link_watch;
mod links;
mod load;
mod lookups;
mod maps;
pub mod mmap_array;
pub mod pin_lock;
pub mod pins;
pub mod privileges;
pub mod probe_route;
pub mod probe_tunnel;
mod reverse;
pub mod service_index;
pub mod trace;
pub mod vip_addresses;

use anyhow::Context as _;
use aya::{
    maps::{Array, DevMapHash, HashMap, MapData, PerCpuArray, ProgramArray},
    Ebpf,
};
use lb_common::{
    backend::Backend,
    counters::{BackendSignals, TrafficCounters},
    flow::FlowTarget,
    ipv6::{Addr6, FlowKey6, NatReturn6, ServiceKey6},
    nexthop::NextHop,
    reverse::{ReverseKey, ReverseTarget},
    reverse6::{ReverseKey6, ReverseTarget6},
};

pub use self::links::ifindex_of;
pub use self::load::map_sizes;
use self::{
    flow_table::FlowTable, links::Links, mmap_array::MmapArray, service_index::ServiceIndex,
    trace::TraceMaps,
};

/// The loaded data path: the program and typed handles on every map.
pub struct KernelDataplane {
    ebpf: Ebpf,
    services: ServiceIndex,
    /// IPv6 services (see `lb_common::ipv6`).
    services6: HashMap<MapData, ServiceKey6, lb_common::service::ServiceMeta>,
    /// Each IPv6 service's VIP:port by service id, for the SYN-ACKs of its handshakes in
    /// the SYN cache (see `lb_common::syn_cache6`).
    service_vips6: Array<MapData, ServiceKey6>,
    backends: Array<MapData, Backend>,
    /// The address of each IPv6 backend, by backend id.
    backend_addrs6: Array<MapData, Addr6>,
    ring: MmapArray,
    policy_table: MmapArray,
    active_flows: Array<MapData, u64>,
    active_adjust: Array<MapData, u64>,
    nexthops: Array<MapData, NextHop>,
    addr_filter: MmapArray,
    nexthop_gen: Array<MapData, u32>,
    clock: Array<MapData, u32>,
    syn_cache: Array<MapData, lb_common::syn_cache::SynSet>,
    rr_cursor: PerCpuArray<MapData, u32>,
    /// IPv4 forward entries: slots, then the LRU map (see `lb_common::flow_slots`).
    pub flows: FlowTable,
    /// IPv4 reply entries: the same slots seen from the backend, then the LRU map.
    pub return_flows: flow_table::ReturnTable,
    pub flows6: HashMap<MapData, FlowKey6, FlowTarget>,
    pub return_flows6: HashMap<MapData, FlowKey6, NatReturn6>,
    pub reverse: HashMap<MapData, ReverseKey, ReverseTarget>,
    pub reverse6: HashMap<MapData, ReverseKey6, ReverseTarget6>,
    service_stats: PerCpuArray<MapData, TrafficCounters>,
    backend_stats: PerCpuArray<MapData, TrafficCounters>,
    signals: PerCpuArray<MapData, BackendSignals>,
    reasons: PerCpuArray<MapData, u64>,
    /// SYNs handed to the SYN proxy, per service id (see `MAP_SYN_PROXY_SYNS`).
    syn_proxy_syns: PerCpuArray<MapData, u64>,
    egress: DevMapHash<MapData>,
    edge: edge::EdgeMaps,
    /// The packet trace's maps (see `lb_common::trace`), until taken.
    trace: Option<TraceMaps>,
    /// Holds lb_reply, lb_edge and lb_place for lb_xdp's tail calls (pinned, see
    /// `MAP_PROGRAMS`).
    programs: ProgramArray<MapData>,
    /// The tail-called programs until they are in `programs` (see
    /// [`KernelDataplane::install_tail_called`]).
    pending_tail_called: Vec<load::TailCalled>,
    /// Unpinned attachments, detached on drop.
    attached: Vec<(String, attach::LinkId)>,
    /// What [`Self::attach`] was asked for, to re-attach a re-created NIC alike.
    links: Links,
    adopted: bool,
    /// Forward flow entries the last reconciliation scan walked (map occupancy), IPv4
    /// and IPv6.
    flow_entries: u64,
    flow_entries6: u64,
    /// Of `flow_entries`, those in the LRU map behind the slots.
    flow_overflow_entries: u64,
    /// The flow clock's second of the last sweep of the slots (see
    /// `flows::SLOT_SWEEP_EVERY_SECS`).
    last_slot_sweep: Option<u32>,
}

fn take<T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>>(
    ebpf: &mut Ebpf,
    name: &str,
) -> anyhow::Result<T> {
    let map = ebpf
        .take_map(name)
        .with_context(|| format!("the XDP object has no map {name}"))?;
    T::try_from(map).with_context(|| format!("map {name} has an unexpected type"))
}
