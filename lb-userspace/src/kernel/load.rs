//! Loads the embedded XDP object with map capacities and globals from config (or adopts
//! the pinned one), and takes a typed handle on every map.
use std::{os::fd::AsFd as _, path::PathBuf};

use anyhow::Context as _;
use aya::{
    maps::{Array, IterableMap as _, Map, MapData, ProgramArray},
    programs::{ProgramFd, SchedClassifier, Xdp},
    Ebpf, EbpfLoader,
};
use lb_common::{
    backend::{Backend, BACKEND_F_PRESENT},
    edge::{EDGE_RULES_PER_SERVICE, EDGE_UNLISTED_DROP},
    flow_slots::{flow_slots, overflow_entries, ConnSlot},
    ipv6::FAMILY_IPV6,
    limits::*,
    service::POLICY_TABLE_SLOTS,
    service_index::{service_index_slots, ServiceSlot},
};

use super::{
    flow_table::{FlowTable, ReturnTable, Slots},
    links, take,
    trace::TraceMaps,
    KernelDataplane,
};
use crate::{
    dataplane::LiveState,
    kernel::ebpf_object,
    kernel::mmap_array::MmapArray,
    kernel::pins::{self, PinDir},
    kernel::service_index::ServiceIndex,
    model::config::{Config, UnlistedPorts},
};

pub(super) fn take_mmap(ebpf: &mut Ebpf, name: &str) -> anyhow::Result<MmapArray> {
    take_mmap_sized(ebpf, name, 4)
}

pub(super) fn take_mmap_sized(
    ebpf: &mut Ebpf,
    name: &str,
    value_size: usize,
) -> anyhow::Result<MmapArray> {
    let map = ebpf
        .take_map(name)
        .with_context(|| format!("the XDP object has no map {name}"))?;
    MmapArray::with_value_size(map, name, value_size)
}

/// Every map's capacity from `config` (the loader's overrides of the object's sizes).
pub fn map_sizes(config: &Config) -> anyhow::Result<Vec<(&'static str, u32)>> {
    let limits = &config.limits;
    let ring_entries = limits
        .max_services
        .checked_mul(2)
        .and_then(|n| n.checked_mul(config.cluster.ring_size))
        .context("max_services x 2 x ring_size overflows")?;
    let edge_rules = limits
        .max_services
        .checked_mul(EDGE_RULES_PER_SERVICE)
        .context("max_services x edge rules per service overflows")?;
    let policy_entries = limits
        .max_services
        .checked_mul(2 * POLICY_TABLE_SLOTS)
        .context("max_services x 2 x policy table slots overflows")?;
    Ok(vec![
        (MAP_SERVICE_INDEX, service_index_slots(limits.max_services)),
        (MAP_BACKENDS, limits.max_backends),
        (MAP_RING, ring_entries),
        (MAP_POLICY_TABLE, policy_entries),
        (MAP_RR_CURSOR, limits.max_services),
        (MAP_ACTIVE_FLOWS, limits.max_backends),
        (MAP_ACTIVE_ADJUST, limits.max_backends),
        (MAP_NEXTHOPS, limits.max_backends),
        (MAP_SERVICE_STATS, limits.max_services),
        (MAP_BACKEND_STATS, limits.max_backends),
        (MAP_BACKEND_SIGNALS, limits.max_backends),
        (MAP_FLOWS, overflow_entries(limits.flow_table_size)),
        (MAP_RETURN_FLOWS, overflow_entries(limits.flow_table_size)),
        (MAP_FLOW_SLOTS, flow_slots(limits.flow_table_size)),
        (MAP_SERVICES6, limits.max_services),
        (MAP_SERVICE_VIPS6, limits.max_services),
        (MAP_BACKEND_ADDRS6, limits.max_backends),
        (MAP_FLOWS6, limits.flow_table_size6),
        (MAP_RETURN_FLOWS6, limits.flow_table_size6),
        (MAP_SYN_CACHE, syn_cache_sets(limits.flow_table_size)),
        (MAP_REVERSE, limits.max_backends),
        (MAP_REVERSE6, limits.max_backends),
        (MAP_TRACE_SAMPLE, limits.max_services),
        (MAP_EDGE_RULES, edge_rules),
        (MAP_EDGE_RULE_HITS, edge_rules),
        (MAP_EDGE_SERVICES, limits.max_services),
        (MAP_EDGE_COUNTERS, limits.max_services),
        (MAP_RATE_BUCKETS, limits.rate_limit_sources),
        (MAP_RATE_BUCKETS6, limits.rate_limit_sources),
        (MAP_VIP_ADDRS, limits.max_services),
        (MAP_VIP_ADDRS6, limits.max_services),
        (MAP_SYN_PROXY_FLOWS, limits.flow_table_size),
        (MAP_SYN_PROXY_SYNS, limits.max_services),
        (MAP_DSR_HOPS, limits.max_backends),
        (MAP_DSR_HOPS6, limits.max_backends),
    ])
}

/// Where each map is pinned under `pins`, once the pinned maps there (if any) are
/// checked to fit this build's object with `sizes`.
fn pin_paths(
    pins: &PinDir,
    object: &[u8],
    sizes: &[(&'static str, u32)],
) -> anyhow::Result<Vec<(String, PathBuf)>> {
    pins.prepare()?;
    let shapes = pins::pinned_shapes(object, sizes)?;
    pins.check(&shapes)?;
    Ok(shapes
        .iter()
        .map(|(name, _)| (name.clone(), pins.map_path(name)))
        .collect())
}

/// A program that lb_xdp reaches by a tail call through `MAP_PROGRAMS`, waiting for its
/// slot (see [`KernelDataplane::install_tail_called`]).
pub(super) struct TailCalled {
    name: &'static str,
    slot: u32,
    fd: ProgramFd,
}

/// Verifies and loads lb_xdp, the programs it tail-calls (lb_reply, lb_edge,
/// lb_place, ...) and, with `tc` (the config has `tc_interfaces`), lb_tc: whose descriptors go into the program array later, and stamps this build's layout
/// version on the maps (adopted ones carry the same one, or an older one it reads as it is).
fn load_programs(
    ebpf: &mut Ebpf,
    tc: bool,
) -> anyhow::Result<(ProgramArray<MapData>, Vec<TailCalled>)> {
    let program: &mut Xdp = ebpf
        .program_mut(PROGRAM_XDP)
        .context("the XDP object has no program lb_xdp")?
        .try_into()?;
    program.load().context("verifying and loading lb_xdp")?;
    // Only when a NIC will run it: a node at XDP alone never depends on its verifying.
    if tc {
        let program: &mut SchedClassifier = ebpf
            .program_mut(PROGRAM_TC)
            .context("the XDP object has no program lb_tc")?
            .try_into()?;
        program.load().context("verifying and loading lb_tc")?;
    }
    let mut tail_called = Vec::new();
    for (name, slot) in [
        (PROGRAM_REPLY, PROGRAMS_SLOT_REPLY),
        (PROGRAM_EDGE, PROGRAMS_SLOT_EDGE),
        (PROGRAM_PLACE, PROGRAMS_SLOT_PLACE),
        (PROGRAM_PROXY, PROGRAMS_SLOT_PROXY),
        (PROGRAM_DSR, PROGRAMS_SLOT_DSR),
        (PROGRAM_UDP, PROGRAMS_SLOT_UDP),
        (PROGRAM_V6, PROGRAMS_SLOT_V6),
        (PROGRAM_DSR6, PROGRAMS_SLOT_DSR6),
        (PROGRAM_EDGE6, PROGRAMS_SLOT_EDGE6),
        (PROGRAM_V6_SYN, PROGRAMS_SLOT_V6_SYN),
    ] {
        let program: &mut Xdp = ebpf
            .program_mut(name)
            .with_context(|| format!("the XDP object has no program {name}"))?
            .try_into()?;
        program
            .load()
            .with_context(|| format!("verifying and loading {name}"))?;
        let fd = program
            .fd()?
            .try_clone()
            .with_context(|| format!("{name}'s fd"))?;
        tail_called.push(TailCalled { name, slot, fd });
    }
    let programs: ProgramArray<MapData> = take(ebpf, MAP_PROGRAMS)?;
    // Also over an adopted older layout this build reads as it is (`adopts_layout`): an
    // `lbd` of that layout must not adopt what this one writes.
    let mut layout: Array<MapData, u32> = take(ebpf, MAP_LAYOUT)?;
    layout
        .set(0, LAYOUT_VERSION, 0)
        .context("writing the layout version")?;
    Ok((programs, tail_called))
}

impl KernelDataplane {
    /// Loads the program and creates its maps, sized from `config`. Nothing is attached.
    ///
    /// With `pins`, every map is pinned there, and maps a previous lbd pinned are adopted
    /// (after checking that they fit this build and config) instead of created: flows,
    /// counters and tables carry over.
    pub fn load(config: &Config, pins: Option<&PinDir>) -> anyhow::Result<Self> {
        let limits = &config.limits;
        let sizes = map_sizes(config)?;
        let syn_cache_mask = syn_cache_sets(limits.flow_table_size) - 1;
        let flow_slot_mask = flow_slots(limits.flow_table_size) - 1;
        let service_index_mask = service_index_slots(limits.max_services) - 1;
        let unlisted_ports = match config.unlisted_ports {
            UnlistedPorts::Drop => EDGE_UNLISTED_DROP,
            UnlistedPorts::Pass => 0,
        };
        let object = ebpf_object::object()?;
        let mut loader = EbpfLoader::new();
        loader
            .override_global(GLOBAL_HASH_SEED, &config.cluster.hash_seed, true)
            .override_global(GLOBAL_RING_SIZE, &config.cluster.ring_size, true)
            .override_global(GLOBAL_SYN_CACHE_MASK, &syn_cache_mask, true)
            .override_global(GLOBAL_FLOW_SLOT_MASK, &flow_slot_mask, true)
            .override_global(GLOBAL_SERVICE_INDEX_MASK, &service_index_mask, true)
            .override_global(GLOBAL_UNLISTED_PORTS, &unlisted_ports, true)
            .override_global(GLOBAL_GUE_PORT, &config.cluster.gue_port, true);
        for &(name, size) in &sizes {
            loader.map_max_entries(name, size);
        }
        let pin_paths = match pins {
            Some(pins) => pin_paths(pins, object, &sizes)?,
            None => Vec::new(),
        };
        let adopted = pins.is_some_and(PinDir::has_maps);
        for (name, path) in &pin_paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader
            .load(object)
            .context("loading the XDP object into the kernel")?;
        let tc = !config.tc_interfaces.is_empty();
        let (programs, tail_called) = load_programs(&mut ebpf, tc)?;
        let mut dataplane = Self::with_maps(ebpf, programs, tail_called, adopted)?;
        if !adopted {
            // Nothing runs the array's programs yet: no old lb_xdp can reach these
            // before their egress map is filled.
            dataplane.install_tail_called()?;
        }
        Ok(dataplane)
    }

    /// Puts this lbd's tail-called programs into the (pinned) program array, once. With
    /// adopted pins the array is the running lb_xdp's too, whose tail calls reach these
    /// programs from then on, before the links swap programs; they redirect through this
    /// lbd's egress map, so [`Self::attach`] installs them only after every NIC is in it,
    /// or their redirects would fail.
    pub(super) fn install_tail_called(&mut self) -> anyhow::Result<()> {
        for program in std::mem::take(&mut self.pending_tail_called) {
            self.programs
                .set(program.slot, &program.fd, 0)
                .with_context(|| format!("putting {} in the program array", program.name))?;
        }
        Ok(())
    }

    /// Takes a typed handle on every map of the loaded `ebpf`.
    fn with_maps(
        mut ebpf: Ebpf,
        programs: ProgramArray<MapData>,
        tail_called: Vec<TailCalled>,
        adopted: bool,
    ) -> anyhow::Result<Self> {
        let flow_slots = Slots::new(take_mmap_sized(
            &mut ebpf,
            MAP_FLOW_SLOTS,
            size_of::<ConnSlot>(),
        )?)
        .context(MAP_FLOW_SLOTS)?;
        let backends: Array<MapData, Backend> = take(&mut ebpf, MAP_BACKENDS)?;
        // The reply table reads the backends' addresses through a handle of its own.
        let backends_for_replies = Array::try_from(Map::Array(
            MapData::from_fd(
                backends
                    .map()
                    .fd()
                    .as_fd()
                    .try_clone_to_owned()
                    .context("duplicating the BACKENDS descriptor")?,
            )
            .context(MAP_BACKENDS)?,
        ))
        .context(MAP_BACKENDS)?;
        Ok(Self {
            services: ServiceIndex::new(take_mmap_sized(
                &mut ebpf,
                MAP_SERVICE_INDEX,
                size_of::<ServiceSlot>(),
            )?)?,
            services6: take(&mut ebpf, MAP_SERVICES6)?,
            service_vips6: take(&mut ebpf, MAP_SERVICE_VIPS6)?,
            backends,
            backend_addrs6: take(&mut ebpf, MAP_BACKEND_ADDRS6)?,
            ring: take_mmap(&mut ebpf, MAP_RING)?,
            policy_table: take_mmap(&mut ebpf, MAP_POLICY_TABLE)?,
            active_flows: take(&mut ebpf, MAP_ACTIVE_FLOWS)?,
            active_adjust: take(&mut ebpf, MAP_ACTIVE_ADJUST)?,
            nexthops: take(&mut ebpf, MAP_NEXTHOPS)?,
            addr_filter: take_mmap(&mut ebpf, MAP_ADDR_FILTER)?,
            nexthop_gen: take(&mut ebpf, MAP_NEXTHOP_GEN)?,
            clock: take(&mut ebpf, MAP_CLOCK)?,
            syn_cache: take(&mut ebpf, MAP_SYN_CACHE)?,
            rr_cursor: take(&mut ebpf, MAP_RR_CURSOR)?,
            flows: FlowTable::new(flow_slots.clone(), take(&mut ebpf, MAP_FLOWS)?),
            return_flows: ReturnTable::new(
                flow_slots,
                take(&mut ebpf, MAP_RETURN_FLOWS)?,
                backends_for_replies,
            ),
            flows6: take(&mut ebpf, MAP_FLOWS6)?,
            return_flows6: take(&mut ebpf, MAP_RETURN_FLOWS6)?,
            reverse: take(&mut ebpf, MAP_REVERSE)?,
            reverse6: take(&mut ebpf, MAP_REVERSE6)?,
            service_stats: take(&mut ebpf, MAP_SERVICE_STATS)?,
            backend_stats: take(&mut ebpf, MAP_BACKEND_STATS)?,
            signals: take(&mut ebpf, MAP_BACKEND_SIGNALS)?,
            reasons: take(&mut ebpf, MAP_REASONS)?,
            syn_proxy_syns: take(&mut ebpf, MAP_SYN_PROXY_SYNS)?,
            egress: take(&mut ebpf, MAP_EGRESS)?,
            edge: super::edge::EdgeMaps {
                rules: take(&mut ebpf, MAP_EDGE_RULES)?,
                rule_hits: take(&mut ebpf, MAP_EDGE_RULE_HITS)?,
                services: take(&mut ebpf, MAP_EDGE_SERVICES)?,
                counters: take(&mut ebpf, MAP_EDGE_COUNTERS)?,
                buckets: take(&mut ebpf, MAP_RATE_BUCKETS)?,
                buckets6: take(&mut ebpf, MAP_RATE_BUCKETS6)?,
                drop_memo: take(&mut ebpf, MAP_EDGE_DROP_MEMO)?,
                vips: take(&mut ebpf, MAP_VIP_ADDRS)?,
                vips6: take(&mut ebpf, MAP_VIP_ADDRS6)?,
            },
            trace: Some(TraceMaps::take(&mut ebpf)?),
            programs,
            pending_tail_called: tail_called,
            ebpf,
            attached: Vec::new(),
            links: links::Links::default(),
            adopted,
            flow_entries: 0,
            flow_overflow_entries: 0,
            last_slot_sweep: None,
            flow_entries6: 0,
        })
    }

    /// The packet trace's maps, for the one tracer; `None` once taken.
    pub fn take_trace(&mut self) -> Option<TraceMaps> {
        self.trace.take()
    }

    /// Whether `load` adopted maps a previous lbd pinned.
    pub fn adopted(&self) -> bool {
        self.adopted
    }

    /// Services and present backend slots (with the IPv6 ones' addresses) as the kernel
    /// holds them, for adopting pinned state.
    pub fn live_state(&self) -> anyhow::Result<LiveState> {
        let services = self.services.entries();
        let services6 = self
            .services6
            .iter()
            .collect::<Result<Vec<_>, _>>()
            .context(MAP_SERVICES6)?;
        let mut backends = Vec::new();
        let mut backend_addrs6 = std::collections::BTreeMap::new();
        for id in 0..self.backends.len() {
            let b = self
                .backends
                .get(&id, 0)
                .with_context(|| format!("BACKENDS[{id}]"))?;
            if b.flags & BACKEND_F_PRESENT == 0 {
                continue;
            }
            if b.family == FAMILY_IPV6 {
                let addr = self
                    .backend_addrs6
                    .get(&id, 0)
                    .with_context(|| format!("{MAP_BACKEND_ADDRS6}[{id}]"))?;
                backend_addrs6.insert(id, addr);
            }
            backends.push((id, b));
        }
        Ok(LiveState {
            services,
            services6,
            backends,
            backend_addrs6,
        })
    }

    /// The loaded program, e.g. for `BPF_PROG_TEST_RUN`.
    pub fn program(&self) -> &Xdp {
        self.ebpf
            .program(PROGRAM_XDP)
            .and_then(|p| <&Xdp>::try_from(p).ok())
            .expect("checked at load")
    }

    /// Another XDP program of the object on these maps, verified and loaded on first use
    /// (not attached): benchmarks time a part of the path alone with it, such as
    /// [`PROGRAM_FLOW_PROBE`]. lbd never calls it.
    pub fn extra_xdp(&mut self, name: &str) -> anyhow::Result<&Xdp> {
        let program: &mut Xdp = self
            .ebpf
            .program_mut(name)
            .with_context(|| format!("the XDP object has no program {name}"))?
            .try_into()?;
        if program.fd().is_err() {
            program
                .load()
                .with_context(|| format!("verifying and loading {name}"))?;
        }
        Ok(program)
    }

    /// The tc ingress program (`lb_tc`), loaded if the config has `tc_interfaces`.
    pub fn tc_program(&self) -> &SchedClassifier {
        self.ebpf
            .program(PROGRAM_TC)
            .and_then(|p| <&SchedClassifier>::try_from(p).ok())
            .expect("checked at load")
    }
}
