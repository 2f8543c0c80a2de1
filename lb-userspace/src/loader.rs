//! Loads the embedded XDP object with map capacities and globals from config, attaches it
//! to NICs, and implements [`Dataplane`] over the real maps.
use std::{
    ffi::CString,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _};
use aya::{
    maps::{Array, DevMapHash, HashMap, MapData, MapError, PerCpuArray, ProgramArray},
    programs::{
        links::{FdLink, PinnedLink},
        xdp::{XdpLink, XdpLinkId},
        Xdp, XdpMode,
    },
    Ebpf, EbpfLoader, Pod,
};
use lb_common::{
    backend::{Backend, BACKEND_F_PRESENT},
    counters::{BackendSignals, TrafficCounters, REASON_COUNT},
    flow::{FlowKey, FlowTarget, NatReturn, FLOW_F_CLOSED, FLOW_F_COUNTED},
    limits::*,
    nexthop::NextHop,
    service::{ServiceKey, ServiceMeta, POLICY_TABLE_SLOTS},
    service_index::{service_index_slots, ServiceSlot},
};
use log::{info, warn};

mod links;
mod lookups;
mod trace;

pub use links::LinkChange;
pub use trace::TraceMaps;

use crate::{
    ageing,
    config::{Config, FlowTimeouts, XdpAttachMode},
    dataplane::Dataplane,
    ebpf_object,
    mmap_array::MmapArray,
    pins::{self, PinDir},
    reconcile::{self, Observed},
    service_index::ServiceIndex,
};

/// The loaded data path: the program and typed handles on every map.
pub struct KernelDataplane {
    ebpf: Ebpf,
    services: ServiceIndex,
    backends: Array<MapData, Backend>,
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
    pub flows: HashMap<MapData, FlowKey, FlowTarget>,
    pub return_flows: HashMap<MapData, FlowKey, NatReturn>,
    service_stats: PerCpuArray<MapData, TrafficCounters>,
    backend_stats: PerCpuArray<MapData, TrafficCounters>,
    signals: PerCpuArray<MapData, BackendSignals>,
    reasons: PerCpuArray<MapData, u64>,
    egress: DevMapHash<MapData>,
    /// The packet trace's maps (see `lb_common::trace`), until taken.
    trace: Option<TraceMaps>,
    /// Holds lb_reply for lb_xdp's tail call (pinned, see `MAP_PROGRAMS`).
    #[expect(
        dead_code,
        reason = "only held, never read: the array must live as long as the loaded programs"
    )]
    programs: ProgramArray<MapData>,
    /// Unpinned attachments, detached on drop.
    attached: Vec<(String, XdpLinkId)>,
    /// What [`Self::attach`] was asked for, to re-attach a re-created NIC alike.
    links: links::Links,
    adopted: bool,
    /// Forward flow entries the last reconciliation scan walked (map occupancy).
    flow_entries: u64,
}

/// What the kernel's maps say is being served (see [`KernelDataplane::live_state`]).
#[derive(Debug, Clone, Default)]
pub struct LiveState {
    pub services: Vec<(ServiceKey, ServiceMeta)>,
    pub backends: Vec<(u32, Backend)>,
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

fn take_mmap(ebpf: &mut Ebpf, name: &str) -> anyhow::Result<MmapArray> {
    take_mmap_sized(ebpf, name, 4)
}

fn take_mmap_sized(ebpf: &mut Ebpf, name: &str, value_size: usize) -> anyhow::Result<MmapArray> {
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
        (MAP_FLOWS, limits.flow_table_size),
        (MAP_RETURN_FLOWS, limits.flow_table_size),
        (MAP_SYN_CACHE, syn_cache_sets(limits.flow_table_size)),
        (MAP_TRACE_SAMPLE, limits.max_services),
    ])
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
        let service_index_mask = service_index_slots(limits.max_services) - 1;
        let object = ebpf_object::object()?;
        let mut loader = EbpfLoader::new();
        loader
            .override_global(GLOBAL_HASH_SEED, &config.cluster.hash_seed, true)
            .override_global(GLOBAL_RING_SIZE, &config.cluster.ring_size, true)
            .override_global(GLOBAL_SYN_CACHE_MASK, &syn_cache_mask, true)
            .override_global(GLOBAL_SERVICE_INDEX_MASK, &service_index_mask, true);
        for &(name, size) in &sizes {
            loader.map_max_entries(name, size);
        }
        let shapes = match pins {
            Some(pins) => {
                pins.prepare()?;
                let shapes = pins::pinned_shapes(object, &sizes)?;
                pins.check(&shapes)?;
                shapes
            }
            None => Vec::new(),
        };
        let adopted = pins.is_some_and(PinDir::has_maps);
        let pin_paths: Vec<(String, PathBuf)> = match pins {
            Some(pins) => shapes
                .iter()
                .map(|(name, _)| (name.clone(), pins.map_path(name)))
                .collect(),
            None => Vec::new(),
        };
        for (name, path) in &pin_paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader
            .load(object)
            .context("loading the XDP object into the kernel")?;
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM_XDP)
            .context("the XDP object has no program lb_xdp")?
            .try_into()?;
        program.load().context("verifying and loading lb_xdp")?;
        let reply: &mut Xdp = ebpf
            .program_mut(PROGRAM_REPLY)
            .context("the XDP object has no program lb_reply")?
            .try_into()?;
        reply.load().context("verifying and loading lb_reply")?;
        let reply_fd = reply.fd()?.try_clone().context("lb_reply's fd")?;
        let mut programs: ProgramArray<MapData> = take(&mut ebpf, MAP_PROGRAMS)?;
        programs
            .set(PROGRAMS_SLOT_REPLY, &reply_fd, 0)
            .context("putting lb_reply in the program array")?;
        let mut layout: Array<MapData, u32> = take(&mut ebpf, MAP_LAYOUT)?;
        if !adopted {
            layout
                .set(0, LAYOUT_VERSION, 0)
                .context("writing the layout version")?;
        }
        Ok(Self {
            services: ServiceIndex::new(take_mmap_sized(
                &mut ebpf,
                MAP_SERVICE_INDEX,
                size_of::<ServiceSlot>(),
            )?)?,
            backends: take(&mut ebpf, MAP_BACKENDS)?,
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
            flows: take(&mut ebpf, MAP_FLOWS)?,
            return_flows: take(&mut ebpf, MAP_RETURN_FLOWS)?,
            service_stats: take(&mut ebpf, MAP_SERVICE_STATS)?,
            backend_stats: take(&mut ebpf, MAP_BACKEND_STATS)?,
            signals: take(&mut ebpf, MAP_BACKEND_SIGNALS)?,
            reasons: take(&mut ebpf, MAP_REASONS)?,
            egress: take(&mut ebpf, MAP_EGRESS)?,
            trace: Some(TraceMaps::take(&mut ebpf)?),
            programs,
            ebpf,
            attached: Vec::new(),
            links: links::Links::default(),
            adopted,
            flow_entries: 0,
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

    /// Services and present backend slots as the kernel holds them, for adopting pinned
    /// state.
    pub fn live_state(&self) -> anyhow::Result<LiveState> {
        let services = self.services.entries();
        let mut backends = Vec::new();
        for id in 0..self.backends.len() {
            let b = self
                .backends
                .get(&id, 0)
                .with_context(|| format!("BACKENDS[{id}]"))?;
            if b.flags & BACKEND_F_PRESENT != 0 {
                backends.push((id, b));
            }
        }
        Ok(LiveState { services, backends })
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

    /// Attaches the program to each interface and registers it for redirects. With
    /// `pins`, each attachment is a pinned link that outlives lbd, and an interface that
    /// already has one gets this program swapped in atomically on that link; pinned links
    /// of interfaces no longer configured are removed (detached). On error, whatever was
    /// attached stays attached.
    pub fn attach(
        &mut self,
        interfaces: &[String],
        mode: XdpAttachMode,
        pins: Option<&PinDir>,
    ) -> anyhow::Result<()> {
        self.links = links::Links::new(interfaces, mode, pins);
        if let Some(pins) = pins {
            for stale in pins.linked_interfaces() {
                if !interfaces.contains(&stale) {
                    let path = pins.link_path(&stale);
                    PinnedLink::from_pin(&path)
                        .with_context(|| format!("opening {}", path.display()))?
                        .unpin()
                        .with_context(|| format!("unpinning {}", path.display()))?;
                    info!("detached lb_xdp from {stale}, which is no longer configured");
                }
            }
        }
        // Every NIC is a redirect target before any link runs this program, so a swapped
        // program never meets an empty egress map.
        let ifindexes = interfaces
            .iter()
            .map(|name| ifindex_of(name))
            .collect::<anyhow::Result<Vec<u32>>>()?;
        for ifindex in &ifindexes {
            self.add_egress(*ifindex)?;
        }
        for (name, ifindex) in interfaces.iter().zip(ifindexes) {
            let pinned = pins.map(|p| p.link_path(name)).filter(|p| p.exists());
            let replaced = match &pinned {
                Some(path) => self.replace_on_pinned_link(name, path)?,
                None => false,
            };
            if !replaced {
                self.attach_fresh(name, mode, pins)?;
                info!("attached lb_xdp to {name} (ifindex {ifindex})");
            }
            self.links.set(name, Some(ifindex));
        }
        Ok(())
    }

    fn attach_new(&mut self, name: &str, mode: XdpAttachMode) -> anyhow::Result<XdpLinkId> {
        Ok(match mode {
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
        })
    }

    /// Hands the link to bpffs: it stays attached after lbd exits.
    fn pin_link(&mut self, link: XdpLinkId, path: &Path) -> anyhow::Result<()> {
        let link = self.program_mut().take_link(link)?;
        let fd_link = FdLink::try_from(link)
            .context("the kernel gave a netlink XDP attachment, which cannot be pinned")?;
        fd_link
            .pin(path)
            .with_context(|| format!("pinning the XDP link at {}", path.display()))?;
        Ok(())
    }

    /// Swaps this program onto a pinned link (BPF_LINK_UPDATE): the NIC goes from the
    /// old program to this one with no moment in between. False when the link was
    /// severed (its NIC was deleted, perhaps re-created since): the pin is removed, and
    /// the caller attaches afresh.
    fn replace_on_pinned_link(&mut self, name: &str, path: &Path) -> anyhow::Result<bool> {
        let pinned = PinnedLink::from_pin(path)
            .with_context(|| format!("opening the pinned link {}", path.display()))?;
        let link = XdpLink::try_from(FdLink::from(pinned))
            .with_context(|| format!("{} is not an XDP link", path.display()))?;
        let id = match self.program_mut().attach_to_link(link) {
            Ok(id) => id,
            Err(e) if links::is_severed(&e) => {
                warn!(
                    "{name}'s pinned XDP link was severed (the NIC was deleted since it was \
                     attached); replacing it with a new link"
                );
                links::unpin(path)?;
                return Ok(false);
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("replacing the program on {name}'s XDP link"))
            }
        };
        // The pin keeps the link; dropping our handle must not detach it.
        drop(self.program_mut().take_link(id)?);
        info!("replaced the program on {name}'s pinned XDP link");
        Ok(true)
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

    /// Sets the clock the data path stamps on flows (whole seconds).
    pub fn set_clock(&mut self, seconds: u32) -> anyhow::Result<()> {
        self.clock.set(0, seconds, 0).context("CLOCK")
    }

    /// Deletes the flows idle longer than their state's timeout at `now` (seconds of the
    /// clock given to [`Self::set_clock`]), both directions. Returns how many.
    pub fn expire_flows(&mut self, now: u32, timeouts: &FlowTimeouts) -> anyhow::Result<usize> {
        // Keys are collected first: deleting while walking can restart the walk.
        let expired: Vec<FlowKey> = self
            .flows
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, target)| ageing::expired(target, now, timeouts))
            .map(|(key, _)| key)
            .collect();
        let mut removed = 0;
        for key in &expired {
            // Only an entry still expired now: a SYN on a closed entry may have replaced
            // it with a live connection's since the walk.
            let Some(target) = current_if(&self.flows, key, MAP_FLOWS, |t| {
                ageing::expired(t, now, timeouts)
            })?
            else {
                continue;
            };
            if !remove_present(&mut self.flows, key, MAP_FLOWS)? {
                continue;
            }
            removed += 1;
            let Ok(backend) = self.backends.get(&target.backend, 0) else {
                continue;
            };
            let reverse = FlowKey {
                src_addr: backend.addr,
                dst_addr: key.src_addr,
                src_port: backend.port,
                dst_port: key.src_port,
                ..*key
            };
            remove_present(&mut self.return_flows, &reverse, MAP_RETURN_FLOWS)?;
        }
        Ok(removed)
    }

    /// Makes every cached next hop stale, so the data path looks routes up again: a
    /// changed route or neighbour takes effect within one call's interval.
    pub fn bump_nexthop_generation(&mut self) -> anyhow::Result<()> {
        let current = self.nexthop_gen.get(&0, 0).context("NEXTHOP_GEN")?;
        self.nexthop_gen
            .set(0, current.wrapping_add(1), 0)
            .context("NEXTHOP_GEN")
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

/// A delete of a key that is not there (ENOENT), e.g. one the LRU evicted.
fn is_not_found(e: &MapError) -> bool {
    match e {
        MapError::KeyNotFound => true,
        MapError::SyscallError(e) => e.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

/// The entry under `key` now, if there is one and it `qualifies`: keys collected by a
/// walk may be seconds old, and by then a client reusing the tuple may have put a new
/// flow under the same key, which must not be deleted with the old one.
fn current_if<K: Pod, V: Pod>(
    map: &HashMap<MapData, K, V>,
    key: &K,
    name: &str,
    qualifies: impl Fn(&V) -> bool,
) -> anyhow::Result<Option<V>> {
    match map.get(key, 0) {
        Ok(value) => Ok(qualifies(&value).then_some(value)),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("{name} lookup")),
    }
}

/// Deletes `key`; whether it was there (the LRU may have evicted it meanwhile).
fn remove_present<K: Pod, V: Pod>(
    map: &mut HashMap<MapData, K, V>,
    key: &K,
    name: &str,
) -> anyhow::Result<bool> {
    match map.remove(key) {
        Ok(()) => Ok(true),
        Err(e) if is_not_found(&e) => Ok(false),
        Err(e) => Err(e).with_context(|| format!("{name} remove")),
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
            .with_context(|| format!("BACKENDS[{id}]"))?;
        // The slot may now name another address: forget the route cached for it.
        self.nexthops
            .set(id, NextHop::default(), 0)
            .with_context(|| format!("NEXTHOPS[{id}]"))
    }

    fn set_ring_entries(&mut self, entries: &[(u32, u32)]) -> anyhow::Result<()> {
        self.ring.set_all(entries).context("RING")
    }

    fn set_policy_entries(&mut self, entries: &[(u32, u32)]) -> anyhow::Result<()> {
        self.policy_table.set_all(entries).context("POLICY_TABLE")
    }

    fn set_filter_words(&mut self, words: &[(u32, u32)]) -> anyhow::Result<()> {
        self.addr_filter.set_all(words).context("ADDR_FILTER")
    }

    fn set_service(&mut self, key: &ServiceKey, meta: &ServiceMeta) -> anyhow::Result<()> {
        self.services.set(key, meta)
    }

    fn remove_service(&mut self, key: &ServiceKey) -> anyhow::Result<()> {
        self.services.remove(key)
    }

    fn purge_flows(&mut self, ids: &[u32]) -> anyhow::Result<usize> {
        let ids: std::collections::HashSet<u32> = ids.iter().copied().collect();
        // Keys are collected first: deleting while walking with get_next_key can restart
        // the walk from the beginning. The data path creates no new entries for `ids`
        // meanwhile, since the caller took it out of every ring before.
        let forward: Vec<FlowKey> = self
            .flows
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, target)| ids.contains(&target.backend))
            .map(|(key, _)| key)
            .collect();
        let reverse: Vec<FlowKey> = self
            .return_flows
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, nat)| ids.contains(&nat.backend))
            .map(|(key, _)| key)
            .collect();
        let mut purged = 0;
        // As in `expire_flows`: a key may hold another flow by now.
        for key in &forward {
            let ours = |t: &FlowTarget| ids.contains(&t.backend);
            if current_if(&self.flows, key, MAP_FLOWS, ours)?.is_some()
                && remove_present(&mut self.flows, key, MAP_FLOWS)?
            {
                purged += 1;
            }
        }
        for key in &reverse {
            let ours = |n: &NatReturn| ids.contains(&n.backend);
            if current_if(&self.return_flows, key, MAP_RETURN_FLOWS, ours)?.is_some() {
                remove_present(&mut self.return_flows, key, MAP_RETURN_FLOWS)?;
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
