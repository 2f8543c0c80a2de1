//! Loads the embedded XDP object with map capacities and globals from config, attaches it
//! to NICs, and implements [`Dataplane`] over the real maps.
use std::ffi::CString;

use anyhow::{bail, Context as _};
use aya::{
    maps::{Array, DevMapHash, HashMap, MapData, MapError, PerCpuArray},
    programs::{xdp::XdpLinkId, Xdp, XdpMode},
    Ebpf, EbpfLoader,
};
use lb_common::{
    backend::Backend,
    counters::{BackendSignals, TrafficCounters, REASON_COUNT},
    flow::{FlowKey, FlowTarget, NatReturn},
    limits::*,
    service::{ServiceKey, ServiceMeta},
};
use log::{info, warn};

use crate::{
    config::{Config, XdpAttachMode},
    dataplane::Dataplane,
    ebpf_object,
};

/// The loaded data path: the program and typed handles on every map.
pub struct KernelDataplane {
    ebpf: Ebpf,
    services: HashMap<MapData, ServiceKey, ServiceMeta>,
    backends: Array<MapData, Backend>,
    ring: Array<MapData, u32>,
    pub flows: HashMap<MapData, FlowKey, FlowTarget>,
    pub return_flows: HashMap<MapData, FlowKey, NatReturn>,
    service_stats: PerCpuArray<MapData, TrafficCounters>,
    backend_stats: PerCpuArray<MapData, TrafficCounters>,
    signals: PerCpuArray<MapData, BackendSignals>,
    reasons: PerCpuArray<MapData, u64>,
    egress: DevMapHash<MapData>,
    attached: Vec<(String, XdpLinkId)>,
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

impl KernelDataplane {
    /// Loads the program and creates its maps, sized from `config`. Nothing is attached.
    pub fn load(config: &Config) -> anyhow::Result<Self> {
        let limits = &config.limits;
        let ring_entries = limits
            .max_services
            .checked_mul(2)
            .and_then(|n| n.checked_mul(config.cluster.ring_size))
            .context("max_services x 2 x ring_size overflows")?;
        let mut ebpf = EbpfLoader::new()
            .override_global(GLOBAL_HASH_SEED, &config.cluster.hash_seed, true)
            .override_global(GLOBAL_RING_SIZE, &config.cluster.ring_size, true)
            .map_max_entries(MAP_SERVICES, limits.max_services)
            .map_max_entries(MAP_BACKENDS, limits.max_backends)
            .map_max_entries(MAP_RING, ring_entries)
            .map_max_entries(MAP_FLOWS, limits.flow_table_size)
            .map_max_entries(MAP_RETURN_FLOWS, limits.flow_table_size)
            .map_max_entries(MAP_SERVICE_STATS, limits.max_services)
            .map_max_entries(MAP_BACKEND_STATS, limits.max_backends)
            .map_max_entries(MAP_BACKEND_SIGNALS, limits.max_backends)
            .load(ebpf_object::object()?)
            .context("loading the XDP object into the kernel")?;
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM_XDP)
            .context("the XDP object has no program lb_xdp")?
            .try_into()?;
        program.load().context("verifying and loading lb_xdp")?;
        Ok(Self {
            services: take(&mut ebpf, MAP_SERVICES)?,
            backends: take(&mut ebpf, MAP_BACKENDS)?,
            ring: take(&mut ebpf, MAP_RING)?,
            flows: take(&mut ebpf, MAP_FLOWS)?,
            return_flows: take(&mut ebpf, MAP_RETURN_FLOWS)?,
            service_stats: take(&mut ebpf, MAP_SERVICE_STATS)?,
            backend_stats: take(&mut ebpf, MAP_BACKEND_STATS)?,
            signals: take(&mut ebpf, MAP_BACKEND_SIGNALS)?,
            reasons: take(&mut ebpf, MAP_REASONS)?,
            egress: take(&mut ebpf, MAP_EGRESS)?,
            ebpf,
            attached: Vec::new(),
        })
    }

    /// The loaded program, e.g. for `BPF_PROG_TEST_RUN`.
    pub fn program(&self) -> &Xdp {
        self.ebpf
            .program(PROGRAM_XDP)
            .and_then(|p| <&Xdp>::try_from(p).ok())
            .expect("checked at load")
    }

    fn program_mut(&mut self) -> &mut Xdp {
        self.ebpf
            .program_mut(PROGRAM_XDP)
            .and_then(|p| <&mut Xdp>::try_from(p).ok())
            .expect("checked at load")
    }

    /// Makes `ifindex` a target of XDP_REDIRECT.
    pub fn add_egress(&mut self, ifindex: u32) -> anyhow::Result<()> {
        self.egress
            .insert(ifindex, ifindex, None, 0)
            .with_context(|| format!("adding ifindex {ifindex} to the egress devmap"))
    }

    /// Attaches the program to each interface and registers it for redirects. On error,
    /// whatever was attached stays attached until `detach_all` or drop.
    pub fn attach(&mut self, interfaces: &[String], mode: XdpAttachMode) -> anyhow::Result<()> {
        for name in interfaces {
            let ifindex = ifindex_of(name)?;
            let link = match mode {
                XdpAttachMode::Native => self.attach_one(name, XdpMode::Driver)?,
                XdpAttachMode::Generic => self.attach_one(name, XdpMode::Skb)?,
                XdpAttachMode::Auto => match self.attach_one(name, XdpMode::Driver) {
                    Ok(link) => link,
                    Err(native) => match self.attach_one(name, XdpMode::Skb) {
                        Ok(link) => {
                            warn!("{name}: native XDP failed ({native:#}); using generic XDP");
                            link
                        }
                        // Both failing is rarely about driver support (e.g. another
                        // program is attached): report both causes.
                        Err(generic) => bail!("{native:#}; and then {generic:#}"),
                    },
                },
            };
            self.attached.push((name.clone(), link));
            self.add_egress(ifindex)?;
            info!("attached lb_xdp to {name} (ifindex {ifindex})");
        }
        Ok(())
    }

    fn attach_one(&mut self, name: &str, mode: XdpMode) -> anyhow::Result<XdpLinkId> {
        self.program_mut()
            .attach(name, mode)
            .with_context(|| format!("attaching XDP ({mode:?}) to {name}"))
    }

    /// Detaches from every NIC.
    pub fn detach_all(&mut self) {
        while let Some((name, link)) = self.attached.pop() {
            match self.program_mut().detach(link) {
                Ok(()) => info!("detached lb_xdp from {name}"),
                Err(e) => warn!("detaching from {name}: {e}"),
            }
        }
    }

    pub fn service_counters(&self, id: u32) -> anyhow::Result<TrafficCounters> {
        sum_counters(&self.service_stats, id)
    }

    pub fn backend_counters(&self, id: u32) -> anyhow::Result<TrafficCounters> {
        sum_counters(&self.backend_stats, id)
    }

    /// Packets per [`lb_common::counters::Reason`] slot, summed over CPUs.
    pub fn reason_counters(&self) -> anyhow::Result<Vec<u64>> {
        (0..REASON_COUNT)
            .map(|slot| {
                let values = self.reasons.get(&slot, 0)?;
                Ok(values.iter().sum())
            })
            .collect()
    }
}

fn sum_counters(
    map: &PerCpuArray<MapData, TrafficCounters>,
    id: u32,
) -> anyhow::Result<TrafficCounters> {
    let mut total = TrafficCounters::default();
    for cpu in map.get(&id, 0)?.iter() {
        total.accumulate(cpu);
    }
    Ok(total)
}

/// A delete of a key that is not there (ENOENT), e.g. one the LRU evicted.
fn is_not_found(e: &MapError) -> bool {
    match e {
        MapError::KeyNotFound => true,
        MapError::SyscallError(e) => e.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

pub fn ifindex_of(name: &str) -> anyhow::Result<u32> {
    let c = CString::new(name).with_context(|| format!("interface name {name:?}"))?;
    // SAFETY: a valid NUL-terminated string; the call only reads it.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        bail!("interface {name} does not exist in this network namespace");
    }
    Ok(index)
}

impl Drop for KernelDataplane {
    fn drop(&mut self) {
        self.detach_all();
    }
}

impl Dataplane for KernelDataplane {
    fn set_backend(&mut self, id: u32, backend: &Backend) -> anyhow::Result<()> {
        self.backends
            .set(id, backend, 0)
            .with_context(|| format!("BACKENDS[{id}]"))
    }

    fn set_ring_entries(&mut self, entries: &[(u32, u32)]) -> anyhow::Result<()> {
        for (index, id) in entries {
            self.ring
                .set(*index, id, 0)
                .with_context(|| format!("RING[{index}]"))?;
        }
        Ok(())
    }

    fn set_service(&mut self, key: &ServiceKey, meta: &ServiceMeta) -> anyhow::Result<()> {
        self.services
            .insert(key, meta, 0)
            .context("SERVICES insert")
    }

    fn remove_service(&mut self, key: &ServiceKey) -> anyhow::Result<()> {
        self.services.remove(key).context("SERVICES remove")
    }

    fn purge_flows(&mut self, id: u32) -> anyhow::Result<usize> {
        // Keys are collected first: deleting while walking with get_next_key can restart
        // the walk from the beginning. The data path creates no new entries for `id`
        // meanwhile, since the caller took it out of every ring before.
        let forward: Vec<FlowKey> = self
            .flows
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, target)| target.backend == id)
            .map(|(key, _)| key)
            .collect();
        let reverse: Vec<FlowKey> = self
            .return_flows
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, nat)| nat.backend == id)
            .map(|(key, _)| key)
            .collect();
        let mut purged = 0;
        for key in &forward {
            // An entry the LRU evicted meanwhile is already gone.
            match self.flows.remove(key) {
                Ok(()) => purged += 1,
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(e).context("FLOWS remove"),
            }
        }
        for key in &reverse {
            match self.return_flows.remove(key) {
                Ok(()) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(e).context("RETURN_FLOWS remove"),
            }
        }
        Ok(purged)
    }

    fn backend_signals(&self, id: u32) -> anyhow::Result<BackendSignals> {
        let mut total = BackendSignals::default();
        for cpu in self
            .signals
            .get(&id, 0)
            .with_context(|| format!("BACKEND_SIGNALS[{id}]"))?
            .iter()
        {
            total.accumulate(cpu);
        }
        Ok(total)
    }
}
