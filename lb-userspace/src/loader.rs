//! Loads the embedded XDP object with map capacities and globals from config, attaches it
//! to NICs, and implements [`Dataplane`] over the real maps.
use std::ffi::CString;

use anyhow::{bail, Context as _};
use aya::{
    maps::{Array, DevMapHash, HashMap, MapData, PerCpuArray},
    programs::{xdp::XdpLinkId, Xdp, XdpMode},
    Ebpf, EbpfLoader,
};
use lb_common::{
    backend::Backend,
    counters::{TrafficCounters, REASON_COUNT},
    flow::{FlowKey, FlowTarget, NatReturn, FLOW_F_CLOSED, FLOW_F_COUNTED},
    limits::*,
    service::{ServiceKey, ServiceMeta, POLICY_TABLE_SLOTS},
};
use log::{info, warn};

use crate::{
    config::{Config, XdpAttachMode},
    dataplane::Dataplane,
    ebpf_object,
    reconcile::{self, Observed},
};

/// The loaded data path: the program and typed handles on every map.
pub struct KernelDataplane {
    ebpf: Ebpf,
    services: HashMap<MapData, ServiceKey, ServiceMeta>,
    backends: Array<MapData, Backend>,
    ring: Array<MapData, u32>,
    policy_table: Array<MapData, u32>,
    active_flows: Array<MapData, u64>,
    active_adjust: Array<MapData, u64>,
    pub flows: HashMap<MapData, FlowKey, FlowTarget>,
    pub return_flows: HashMap<MapData, FlowKey, NatReturn>,
    service_stats: PerCpuArray<MapData, TrafficCounters>,
    backend_stats: PerCpuArray<MapData, TrafficCounters>,
    reasons: PerCpuArray<MapData, u64>,
    egress: DevMapHash<MapData>,
    attached: Vec<(String, XdpLinkId)>,
    /// Forward flow entries the last reconciliation scan walked (map occupancy).
    flow_entries: u64,
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
        let policy_entries = limits
            .max_services
            .checked_mul(2 * POLICY_TABLE_SLOTS)
            .context("max_services x 2 x policy table slots overflows")?;
        let mut ebpf = EbpfLoader::new()
            .override_global(GLOBAL_HASH_SEED, &config.cluster.hash_seed, true)
            .override_global(GLOBAL_RING_SIZE, &config.cluster.ring_size, true)
            .map_max_entries(MAP_SERVICES, limits.max_services)
            .map_max_entries(MAP_BACKENDS, limits.max_backends)
            .map_max_entries(MAP_RING, ring_entries)
            .map_max_entries(MAP_FLOWS, limits.flow_table_size)
            .map_max_entries(MAP_RETURN_FLOWS, limits.flow_table_size)
            .map_max_entries(MAP_POLICY_TABLE, policy_entries)
            .map_max_entries(MAP_RR_CURSOR, limits.max_services)
            .map_max_entries(MAP_ACTIVE_FLOWS, limits.max_backends)
            .map_max_entries(MAP_ACTIVE_ADJUST, limits.max_backends)
            .map_max_entries(MAP_SERVICE_STATS, limits.max_services)
            .map_max_entries(MAP_BACKEND_STATS, limits.max_backends)
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
            policy_table: take(&mut ebpf, MAP_POLICY_TABLE)?,
            active_flows: take(&mut ebpf, MAP_ACTIVE_FLOWS)?,
            active_adjust: take(&mut ebpf, MAP_ACTIVE_ADJUST)?,
            flows: take(&mut ebpf, MAP_FLOWS)?,
            return_flows: take(&mut ebpf, MAP_RETURN_FLOWS)?,
            service_stats: take(&mut ebpf, MAP_SERVICE_STATS)?,
            backend_stats: take(&mut ebpf, MAP_BACKEND_STATS)?,
            reasons: take(&mut ebpf, MAP_REASONS)?,
            egress: take(&mut ebpf, MAP_EGRESS)?,
            ebpf,
            attached: Vec::new(),
            flow_entries: 0,
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

    /// Active flows of a backend: counted by the data path, less what the reconciler
    /// found ended unseen.
    pub fn active_flows(&self, id: u32) -> anyhow::Result<u64> {
        let counted = self.active_flows.get(&id, 0)?;
        let adjust = self.active_adjust.get(&id, 0)?;
        Ok(counted.wrapping_sub(adjust))
    }

    /// Recounts the open flows in the flow table and corrects the active-flow counts of
    /// `backends` that drifted (see [`crate::reconcile`]). Returns the corrections made.
    pub fn reconcile_active_flows(&mut self, backends: &[u32]) -> anyhow::Result<Vec<(u32, u64)>> {
        let read = |dp: &Self| -> anyhow::Result<Vec<u64>> {
            backends
                .iter()
                .map(|id| Ok(dp.active_flows.get(id, 0)?))
                .collect()
        };
        let before = read(self)?;
        let mut open: std::collections::HashMap<u32, u64> = std::collections::HashMap::new();
        let mut entries = 0;
        for entry in self.flows.iter() {
            // An entry evicted or deleted mid-walk ends the walk early for that key only.
            let Ok((_, target)) = entry else { continue };
            entries += 1;
            if target.state & FLOW_F_COUNTED != 0 && target.state & FLOW_F_CLOSED == 0 {
                *open.entry(target.backend).or_default() += 1;
            }
        }
        self.flow_entries = entries;
        let after = read(self)?;
        let observed: Vec<Observed> = backends
            .iter()
            .zip(before.iter().zip(&after))
            .map(|(id, (b, a))| {
                Ok(Observed {
                    id: *id,
                    counted_before: *b,
                    counted_after: *a,
                    adjust: self.active_adjust.get(id, 0)?,
                    open_in_table: open.get(id).copied().unwrap_or(0),
                })
            })
            .collect::<anyhow::Result<_>>()?;
        let fixes = reconcile::corrections(&observed);
        for (id, adjust) in &fixes {
            self.active_adjust
                .set(*id, adjust, 0)
                .with_context(|| format!("ACTIVE_ADJUST[{id}]"))?;
        }
        Ok(fixes)
    }

    /// Forward flow entries seen by the last [`Self::reconcile_active_flows`] scan.
    pub fn flow_entries(&self) -> u64 {
        self.flow_entries
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

    fn set_policy_entries(&mut self, entries: &[(u32, u32)]) -> anyhow::Result<()> {
        for (index, id) in entries {
            self.policy_table
                .set(*index, id, 0)
                .with_context(|| format!("POLICY_TABLE[{index}]"))?;
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
}
