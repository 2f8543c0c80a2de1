//! Reconciles the kernel tables with a config and a runtime overlay (effective weights,
//! retiring backends): writes only what changed, and swaps each service's selection
//! table atomically (write the idle slot, then flip the service's active slot), so no
//! packet ever sees a half-written table. A backend slot is freed only after the flows
//! pinned to it are purged, so a later backend given the same id inherits none of them.
use std::collections::{BTreeMap, HashMap};

use anyhow::Context as _;
use lb_common::{
    backend::Backend,
    filter::{filter_slot, FILTER_BACKENDS, FILTER_PROTECTED, FILTER_TOTAL_WORDS, FILTER_VIPS},
    ipv6::{Addr6, FAMILY_IPV6},
    limits::MAX_BACKENDS,
    service::{
        policy_table_index, ring_slot_base, ServiceMeta, NO_BACKEND, POLICY_TABLE_SLOTS,
        SERVICE_F_EDGE,
    },
};

use crate::{
    dataplane::Dataplane,
    dataplane::LiveState,
    model::config::Config,
    model::edge::EdgeTables,
    model::family::{self, ServiceMapKey},
    model::plan::{self, BackendRef, FreeIds, Ids, Overlay, Plan, PlannedBackend},
};

/// What the controller knows the kernel holds for one service.
#[derive(Debug, Clone)]
struct LiveService {
    key: ServiceMapKey,
    meta: ServiceMeta,
}

pub struct Controller<D> {
    dataplane: D,
    ring_size: u32,
    ids: Ids,
    plan: Option<Plan>,
    services: BTreeMap<String, LiveService>,
    backends: BTreeMap<u32, Backend>,
    /// The IPv6 address array's entries of the IPv6 backends in `backends`.
    addrs6: BTreeMap<u32, Addr6>,
    /// Both slots of every service id ever used, as the kernel holds them, so that only
    /// differing entries are written.
    shadows: BTreeMap<u32, KernelSlots>,
    /// The address prefilter as the kernel holds it (`None`: unknown, after adoption).
    filter: Option<Vec<u32>>,
    /// How many planned addresses set each prefilter bit (word, mask), so that a change
    /// to one service knows which bits it may clear without looking at the others.
    filter_refs: HashMap<(u32, u32), u32>,
    /// The backend ids free for new backends, as of `ids`.
    free: FreeIds,
    /// An incremental apply failed part way: the next apply re-plans everything.
    stale: bool,
    /// Backends planned since start (the work a re-plan does; tests read it).
    planned: u64,
    /// Changes of one backend applied without re-planning its service (tests read it).
    backends_in_place: u64,
    /// The edge protection tables as last written.
    edge: EdgeTables,
}

/// Counts of what one reconciliation wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplySummary {
    pub backends_written: usize,
    pub ring_entries_written: usize,
    pub services_flipped: usize,
    pub services_removed: usize,
    /// Connections whose flow entries were purged with a freed backend slot.
    pub flows_purged: usize,
}

impl<D: Dataplane> Controller<D> {
    pub fn new(dataplane: D, ring_size: u32) -> Self {
        Self {
            dataplane,
            ring_size,
            ids: Ids::default(),
            plan: None,
            services: BTreeMap::new(),
            backends: BTreeMap::new(),
            addrs6: BTreeMap::new(),
            shadows: BTreeMap::new(),
            filter: Some(vec![0; FILTER_TOTAL_WORDS as usize]),
            filter_refs: HashMap::new(),
            free: FreeIds::default(),
            stale: false,
            planned: 0,
            backends_in_place: 0,
            edge: EdgeTables::default(),
        }
    }

    /// A controller for a dataplane that already serves `live` (maps pinned by an
    /// earlier lbd). Ids are recovered from the kernel so that flows keep their backend
    /// ids; services are matched to `config` by VIP, port and protocol. The slots' contents
    /// are unknown, so the first `apply` writes an idle slot in full and flips to it.
    pub fn adopt(dataplane: D, ring_size: u32, config: &Config, live: &LiveState) -> Self {
        let mut controller = Self::new(dataplane, ring_size);
        controller.filter = None;
        let by_key: std::collections::HashMap<ServiceMapKey, &str> = config
            .services
            .iter()
            .map(|s| (plan::service_key(s), s.name.as_str()))
            .collect();
        let mut names_by_id = BTreeMap::new();
        let live_services = (live.services.iter())
            .map(|(key, meta)| (ServiceMapKey::V4(*key), meta))
            .chain((live.services6.iter()).map(|(key, meta)| (ServiceMapKey::V6(*key), meta)));
        for (key, meta) in live_services {
            // A service the config no longer has keeps a placeholder name, so that the
            // first apply removes it.
            let name = by_key
                .get(&key)
                .map(|n| n.to_string())
                .unwrap_or_else(|| format!("#unconfigured-{}", meta.id));
            controller.ids.services.insert(name.clone(), meta.id);
            names_by_id.insert(meta.id, name.clone());
            controller
                .services
                .insert(name, LiveService { key, meta: *meta });
            controller.shadows.insert(meta.id, KernelSlots::unknown());
        }
        for (id, backend) in &live.backends {
            controller.backends.insert(*id, *backend);
            let address = match live.backend_addrs6.get(id) {
                Some(addr) if backend.family == FAMILY_IPV6 => {
                    controller.addrs6.insert(*id, *addr);
                    std::net::IpAddr::V6(family::ip6(addr))
                }
                _ => std::net::IpAddr::from(backend.addr.to_ne_bytes()),
            };
            if let Some(service) = names_by_id.get(&backend.service) {
                let at = plan::BackendRef {
                    service: service.clone(),
                    address,
                    port: u16::from_be(backend.port),
                };
                controller.ids.backends.insert(at, *id);
            }
        }
        controller
    }

    pub fn dataplane(&self) -> &D {
        &self.dataplane
    }

    pub fn dataplane_mut(&mut self) -> &mut D {
        &mut self.dataplane
    }

    /// The plan last applied.
    pub fn plan(&self) -> Option<&Plan> {
        self.plan.as_ref()
    }

    /// How many backends were planned since start, counted once per re-plan of each:
    /// what a change costs grows with this.
    pub fn backends_planned(&self) -> u64 {
        self.planned
    }

    /// How many changes of one backend were applied in place, without re-planning their
    /// service (see [`Controller::apply_backend`]).
    pub fn backends_applied_in_place(&self) -> u64 {
        self.backends_in_place
    }

    /// The kernel id of a backend in the plan last applied.
    pub fn backend_id(&self, at: &BackendRef) -> Option<u32> {
        self.ids.backends.get(at).copied()
    }

    /// Refuses a config this controller cannot apply without a restart.
    pub fn check_compatible(&self, config: &Config) -> anyhow::Result<()> {
        anyhow::ensure!(
            config.cluster.ring_size == self.ring_size,
            "ring_size cannot change while running ({} -> {}): restart lbd",
            self.ring_size,
            config.cluster.ring_size
        );
        Ok(())
    }

    /// Makes the kernel tables match `config` (already validated), every backend at its
    /// configured weight.
    pub fn apply(&mut self, config: &Config) -> anyhow::Result<ApplySummary> {
        self.apply_with(config, &Overlay::default())
    }

    /// Makes the kernel tables match `config` (already validated) with the runtime
    /// `overlay`: effective ring weights and removed backends still draining.
    pub fn apply_with(
        &mut self,
        config: &Config,
        overlay: &Overlay,
    ) -> anyhow::Result<ApplySummary> {
        self.check_compatible(config)?;
        let ids = plan::assign_ids(config, overlay, &self.ids);
        let plan = plan::plan(config, overlay, &ids, self.plan.as_ref());
        let mut summary = ApplySummary::default();
        // The prefilter must let a new VIP's or backend's packets in before the service or
        // backend is published, and may forget removed addresses only after they are gone.
        let wanted = filter_words(&plan);
        let during: Vec<u32> = match &self.filter {
            Some(current) => current.iter().zip(&wanted).map(|(a, b)| a | b).collect(),
            None => wanted.clone(),
        };
        self.write_filter(&during)?;

        // New and changed backends first, so that a flipped ring never names an
        // unwritten slot.
        self.write_backends(&plan.backends, &mut summary)?;
        for s in &plan.services {
            self.apply_service(s, &mut summary)?;
        }
        let gone: Vec<String> = self
            .services
            .keys()
            .filter(|name| !plan.services.iter().any(|s| &s.name == *name))
            .cloned()
            .collect();
        for name in gone {
            let live = self.services.remove(&name).expect("listed above");
            self.unpublish(&live.key)
                .with_context(|| format!("removing service {name}"))?;
            // The id goes back to the pool: what the data path counted and learnt under
            // it (edge counters, rate-limit buckets) must not pass to the next service
            // that takes it. After the removal, so no packet of the service refills it.
            if let Some(id) = self.ids.services.get(&name) {
                self.dataplane.reset_edge_state(&[*id]).with_context(|| {
                    format!("resetting the edge state of removed service {name}")
                })?;
            }
            summary.services_removed += 1;
        }
        // Free backend slots last: no live ring names them any more, so no new flow can
        // be pinned to them; purge the flows that are, then free the slot.
        let planned: std::collections::HashSet<u32> = plan.backends.iter().map(|b| b.id).collect();
        let unused: Vec<u32> = self
            .backends
            .keys()
            .filter(|id| !planned.contains(id))
            .copied()
            .collect();
        self.free_slots(&unused, &mut summary)?;
        self.write_filter(&wanted)?;
        self.free = FreeIds::of(&ids);
        self.ids = ids;
        self.filter_refs = filter_refs(&plan);
        self.plan = Some(plan);
        self.stale = false;
        self.planned += self.plan.as_ref().map_or(0, |p| p.backends.len() as u64);
        self.write_reverse_map(config)?;
        self.write_edge(config)?;
        Ok(summary)
    }

    /// [`Controller::apply_with`] when only the services `names` changed (in `config`
    /// and in `overlay`) since the last apply: only their ids, tables and backend slots
    /// are planned, compared and written, so the cost is that of those services rather
    /// than of every backend. Falls back to the whole re-plan when the set of services
    /// changed, nothing was applied yet, or an earlier incremental apply failed; the
    /// kernel ends in the same state either way.
    pub fn apply_services(
        &mut self,
        config: &Config,
        overlay: &Overlay,
        names: &[String],
    ) -> anyhow::Result<ApplySummary> {
        self.check_compatible(config)?;
        let same_services = self.plan.as_ref().is_some_and(|p| {
            p.services.len() == config.services.len()
                && p.services
                    .iter()
                    .zip(&config.services)
                    .all(|(a, b)| a.name == b.name)
        });
        if !same_services || self.stale || self.filter.is_none() {
            return self.apply_with(config, overlay);
        }
        let mut summary = ApplySummary::default();
        for name in names {
            let Some(s) = config.services.iter().find(|s| &s.name == name) else {
                continue;
            };
            let saved: Vec<(BackendRef, u32)> = BackendRef::of_service(&self.ids.backends, name)
                .map(|(at, id)| (at.clone(), *id))
                .collect();
            if let Err(e) = self.apply_one(s, overlay, &mut summary) {
                // Put the ids back as the kernel's plan has them; the next apply
                // re-plans everything from there.
                let ours: Vec<BackendRef> = BackendRef::of_service(&self.ids.backends, name)
                    .map(|(at, _)| at.clone())
                    .collect();
                for at in ours {
                    self.ids.backends.remove(&at);
                }
                self.ids.backends.extend(saved);
                self.stale = true;
                return Err(e);
            }
        }
        self.write_reverse_map(config)?;
        self.write_edge(config)?;
        Ok(summary)
    }

    /// One service of [`Controller::apply_services`], in the order `apply_with` writes:
    /// prefilter bits in, new and changed backend slots, the service's tables (idle slot,
    /// then flip), then purge and free its departed backends' slots, prefilter bits out.
    fn apply_one(
        &mut self,
        s: &crate::model::config::ServiceConfig,
        overlay: &Overlay,
        summary: &mut ApplySummary,
    ) -> anyhow::Result<()> {
        let mut plan = self.plan.take().expect("checked by the caller");
        let result = self.write_one(s, overlay, &mut plan, summary);
        // After a failure the plan is still the one before this step (see
        // `apply_services`: the next apply re-plans everything).
        self.plan = Some(plan);
        result
    }

    fn write_one(
        &mut self,
        s: &crate::model::config::ServiceConfig,
        overlay: &Overlay,
        plan: &mut Plan,
        summary: &mut ApplySummary,
    ) -> anyhow::Result<()> {
        let released = plan::assign_service_ids(s, overlay, &mut self.ids, &mut self.free);
        let idx = plan
            .services
            .iter()
            .position(|p| p.name == s.name)
            .expect("checked by the caller");
        let start: usize = plan.services[..idx].iter().map(|p| p.backends.len()).sum();
        let end = start + plan.services[idx].backends.len();
        let (service, planned) = plan::plan_service(
            s,
            self.ring_size,
            overlay,
            &self.ids,
            Some(&plan.services[idx]),
        );
        self.planned += planned.len() as u64;

        // Prefilter: count the service's old addresses out and its new ones in.
        let (new_bits, old_bits) = bits_difference(
            filter_bits(&service, &planned),
            filter_bits(&plan.services[idx], &plan.backends[start..end]),
        );
        let current = self.filter.clone().expect("checked by the caller");
        let wanted = self.filter_counted(&current, &new_bits, &old_bits);
        self.write_filter_union(&current, &wanted)?;
        self.write_backends(&planned, summary)?;
        self.apply_service(&service, summary)?;
        self.free_slots(&released, summary)?;
        self.write_filter(&wanted)?;
        for id in released {
            self.free.release(id);
        }
        plan.services[idx] = service;
        plan.backends.splice(start..end, planned);
        Ok(())
    }

    /// Counts the prefilter bits `added` in and `removed` out (bits are (word, mask));
    /// returns the words `current` becomes: only the words those bits are in can change.
    fn filter_counted(
        &mut self,
        current: &[u32],
        added: &[FilterBit],
        removed: &[FilterBit],
    ) -> Vec<u32> {
        let mut touched = std::collections::BTreeSet::new();
        for bit in added {
            *self.filter_refs.entry(*bit).or_default() += 1;
            touched.insert(bit.0);
        }
        for bit in removed {
            if let Some(n) = self.filter_refs.get_mut(bit) {
                *n -= 1;
                if *n == 0 {
                    self.filter_refs.remove(bit);
                }
            }
            touched.insert(bit.0);
        }
        let mut wanted = current.to_vec();
        for word in &touched {
            wanted[*word as usize] = (0..32)
                .map(|bit| 1u32 << bit)
                .filter(|mask| self.filter_refs.contains_key(&(*word, *mask)))
                .fold(0, |w, mask| w | mask);
        }
        wanted
    }

    /// Writes each of `backends` whose slot does not hold its value yet.
    fn write_backends<'a>(
        &mut self,
        backends: impl IntoIterator<Item = &'a PlannedBackend>,
        summary: &mut ApplySummary,
    ) -> anyhow::Result<()> {
        for b in backends {
            // An IPv6 backend's address first: its slot must never name an address
            // the array does not hold yet.
            let addr6 = b.addr6();
            if let Some(addr) = addr6.filter(|a| self.addrs6.get(&b.id) != Some(a)) {
                self.dataplane
                    .set_backend_addr6(b.id, &addr)
                    .with_context(|| {
                        format!(
                            "writing the address of backend {} (id {})",
                            b.at.address, b.id
                        )
                    })?;
                self.addrs6.insert(b.id, addr);
            }
            if self.backends.get(&b.id) != Some(&b.value) {
                self.dataplane
                    .set_backend(b.id, &b.value)
                    .with_context(|| format!("writing backend {} (id {})", b.at.address, b.id))?;
                self.backends.insert(b.id, b.value);
                summary.backends_written += 1;
            }
            if addr6.is_none() && self.addrs6.contains_key(&b.id) {
                // The id went from an IPv6 backend to an IPv4 one: clear the old address.
                self.clear_addr6(b.id)?;
            }
        }
        Ok(())
    }

    /// Zeroes the IPv6 address array's entry `id`, whose slot no longer names it.
    fn clear_addr6(&mut self, id: u32) -> anyhow::Result<()> {
        self.dataplane
            .set_backend_addr6(id, &Addr6::default())
            .with_context(|| format!("clearing the IPv6 address of backend slot {id}"))?;
        self.addrs6.remove(&id);
        Ok(())
    }

    /// Purges the flows pinned to backend slots `ids`, then frees the slots. One walk of
    /// the flow tables for all of them: a walk per slot would cost (slots x table size)
    /// map reads when many backends go at once.
    fn free_slots(&mut self, ids: &[u32], summary: &mut ApplySummary) -> anyhow::Result<()> {
        if !ids.is_empty() {
            summary.flows_purged += self
                .dataplane
                .purge_flows(ids)
                .with_context(|| format!("purging the flows of backend slots {ids:?}"))?;
        }
        for id in ids {
            self.dataplane
                .set_backend(*id, &Backend::default())
                .with_context(|| format!("freeing backend slot {id}"))?;
            self.backends.remove(id);
            if self.addrs6.contains_key(id) {
                self.clear_addr6(*id)?;
            }
            summary.backends_written += 1;
        }
        Ok(())
    }

    /// Writes the prefilter words `current | wanted`: while tables change, an address
    /// that either side names must pass the prefilter.
    fn write_filter_union(&mut self, current: &[u32], wanted: &[u32]) -> anyhow::Result<()> {
        let during: Vec<u32> = current.iter().zip(wanted).map(|(a, b)| a | b).collect();
        self.write_filter(&during)
    }

    fn write_filter(&mut self, wanted: &[u32]) -> anyhow::Result<()> {
        let changes: Vec<(u32, u32)> = wanted
            .iter()
            .enumerate()
            .filter(|(i, w)| self.filter.as_ref().is_none_or(|f| f[*i] != **w))
            .map(|(i, w)| (i as u32, *w))
            .collect();
        self.dataplane
            .set_filter_words(&changes)
            .context("writing the address prefilter")?;
        self.filter = Some(wanted.to_vec());
        Ok(())
    }

    /// Deletes the flow entries of a backend of the last plan (a drained backend whose
    /// deregistration delay passed); its slot stays. Returns the connections purged.
    pub fn purge_flows(&mut self, at: &BackendRef) -> anyhow::Result<usize> {
        let id = self
            .backend_id(at)
            .with_context(|| format!("backend {at} is not in the tables"))?;
        self.dataplane
            .purge_flows(&[id])
            .with_context(|| format!("purging the flows of backend {at} (id {id})"))
    }

    fn apply_service(
        &mut self,
        s: &plan::PlannedService,
        summary: &mut ApplySummary,
    ) -> anyhow::Result<()> {
        let ring_size = self.ring_size;
        let shadow = self
            .shadows
            .entry(s.id)
            .or_insert_with(|| KernelSlots::zeroed(ring_size));
        let live = self.services.get(&s.name).cloned();
        let unchanged = live.as_ref().is_some_and(|l| {
            let active = l.meta.active_slot as usize & 1;
            l.key == s.key
                && l.meta.id == s.id
                && l.meta.policy == s.policy
                && l.meta.flags == s.flags
                && l.meta.table_len as usize == s.table.len()
                && shadow.holds(active, &s.ring, &s.table)
        });
        if unchanged {
            return Ok(());
        }
        // A service the kernel does not serve yet can take slot 0 directly; a live one
        // gets its idle slot written and then flipped.
        let slot = match &live {
            Some(l) if l.meta.id == s.id => (l.meta.active_slot ^ 1) & 1,
            _ => 0,
        };
        summary.ring_entries_written += self.write_slot(s, slot, "")?;

        let meta = ServiceMeta {
            id: s.id,
            active_slot: slot,
            policy: s.policy,
            flags: s.flags,
            table_len: s.table.len() as u32,
            _pad: 0,
        };
        self.publish(&s.key, &meta)
            .with_context(|| format!("publishing service {}", s.name))?;
        summary.services_flipped += 1;
        if live.is_none() {
            // A new service: give the idle slot the same tables, so the first change
            // writes only the entries that change rather than the whole slot.
            summary.ring_entries_written += self.write_slot(s, slot ^ 1, "idle ")?;
        }
        if let Some(old) = live.filter(|l| l.key != s.key) {
            self.unpublish(&old.key)
                .with_context(|| format!("removing the old address of service {}", s.name))?;
        }
        self.services
            .insert(s.name.clone(), LiveService { key: s.key, meta });
        Ok(())
    }

    /// Creates or replaces a service in the map of its family.
    fn publish(&mut self, key: &ServiceMapKey, meta: &ServiceMeta) -> anyhow::Result<()> {
        match key {
            ServiceMapKey::V4(k) => self.dataplane.set_service(k, meta)?,
            ServiceMapKey::V6(k) => self.dataplane.set_service6(k, meta)?,
        }
        Ok(())
    }

    /// Removes a service from the map of its family.
    fn unpublish(&mut self, key: &ServiceMapKey) -> anyhow::Result<()> {
        match key {
            ServiceMapKey::V4(k) => self.dataplane.remove_service(k)?,
            ServiceMapKey::V6(k) => self.dataplane.remove_service6(k)?,
        }
        Ok(())
    }

    /// Writes service `s`'s ring, then its policy table, into ring slot `slot`: only the
    /// entries its shadow says differ. Returns how many entries were written; `which`
    /// names the slot in errors ("" or "idle ").
    fn write_slot(
        &mut self,
        s: &plan::PlannedService,
        slot: u32,
        which: &str,
    ) -> anyhow::Result<usize> {
        let ring_size = self.ring_size;
        let shadow = self
            .shadows
            .entry(s.id)
            .or_insert_with(|| KernelSlots::zeroed(ring_size));
        let ring = changes(
            &s.ring,
            &mut shadow.rings[slot as usize],
            ring_size as usize,
            ring_slot_base(s.id, slot, ring_size),
        );
        self.dataplane
            .set_ring_entries(&ring)
            .with_context(|| format!("writing the {which}ring of service {}", s.name))?;
        let shadow = self.shadows.get_mut(&s.id).expect("inserted above");
        let table = changes(
            &s.table,
            &mut shadow.tables[slot as usize],
            POLICY_TABLE_SLOTS as usize,
            policy_table_index(s.id, slot, 0),
        );
        self.dataplane
            .set_policy_entries(&table)
            .with_context(|| format!("writing the {which}policy table of service {}", s.name))?;
        Ok(ring.len() + table.len())
    }
}

/// The prefilter words for a plan: every VIP and every backend address.
fn filter_words(plan: &Plan) -> Vec<u32> {
    let mut words = vec![0u32; FILTER_TOTAL_WORDS as usize];
    let mut set = |bitmap, addr| {
        let (word, mask) = filter_slot(bitmap, addr);
        words[word as usize] |= mask;
    };
    for s in &plan.services {
        set(FILTER_VIPS, family::filter_word(s.key.vip()));
        if let Some((bitmap, word)) = protected_word(s) {
            set(bitmap, word);
        }
    }
    for b in &plan.backends {
        set(FILTER_BACKENDS, family::filter_word(b.at.address));
    }
    words
}

/// The prefilter bits (word, mask) one service sets: its VIP (twice if it is protected)
/// and its backends' addresses.
fn filter_bits(s: &plan::PlannedService, backends: &[plan::PlannedBackend]) -> Vec<(u32, u32)> {
    std::iter::once(vip_bit(s))
        .chain(protected_bit(s))
        .chain(backends.iter().map(backend_bit))
        .collect()
}

/// The protected-VIP bitmap and word of a service with edge protection.
fn protected_word(s: &plan::PlannedService) -> Option<(u32, u32)> {
    (s.flags & SERVICE_F_EDGE != 0).then(|| (FILTER_PROTECTED, family::filter_word(s.key.vip())))
}

/// The prefilter bit of a protected service's VIP in the protected-VIP bitmap.
fn protected_bit(s: &plan::PlannedService) -> Option<FilterBit> {
    protected_word(s).map(|(bitmap, word)| filter_slot(bitmap, word))
}

/// The prefilter bit of a service's VIP.
fn vip_bit(s: &plan::PlannedService) -> FilterBit {
    filter_slot(FILTER_VIPS, family::filter_word(s.key.vip()))
}

/// The prefilter bit of a backend's address.
fn backend_bit(b: &plan::PlannedBackend) -> FilterBit {
    filter_slot(FILTER_BACKENDS, family::filter_word(b.at.address))
}

/// One prefilter bit: (word, mask).
type FilterBit = (u32, u32);

/// The bits of `new` that `old` lacks and those of `old` that `new` lacks, counted as
/// multisets: only they change a bit's count (a change to one backend of a big service
/// then counts one address, not all of them).
fn bits_difference(
    mut new: Vec<FilterBit>,
    mut old: Vec<FilterBit>,
) -> (Vec<FilterBit>, Vec<FilterBit>) {
    new.sort_unstable();
    old.sort_unstable();
    let (mut added, mut removed) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    while i < new.len() || j < old.len() {
        match (new.get(i), old.get(j)) {
            (Some(a), Some(b)) if a == b => {
                i += 1;
                j += 1;
            }
            (Some(a), Some(b)) if a < b => {
                added.push(*a);
                i += 1;
            }
            (Some(a), None) => {
                added.push(*a);
                i += 1;
            }
            (_, Some(b)) => {
                removed.push(*b);
                j += 1;
            }
            (None, None) => unreachable!("the loop condition"),
        }
    }
    (added, removed)
}

/// How many planned addresses set each prefilter bit.
fn filter_refs(plan: &Plan) -> HashMap<(u32, u32), u32> {
    let mut refs = HashMap::new();
    for s in &plan.services {
        *refs.entry(vip_bit(s)).or_default() += 1;
        if let Some(bit) = protected_bit(s) {
            *refs.entry(bit).or_default() += 1;
        }
    }
    for b in &plan.backends {
        *refs.entry(backend_bit(b)).or_default() += 1;
    }
    refs
}

/// What the kernel holds in both slots of one service id's ring and policy table: fresh
/// arrays start zeroed and only the controller writes them; adopted ones are unknown
/// (`None`) until written once.
#[derive(Debug, Clone)]
struct KernelSlots {
    rings: [Option<Vec<u32>>; 2],
    tables: [Option<Vec<u32>>; 2],
}

impl KernelSlots {
    fn zeroed(ring_size: u32) -> Self {
        let ring = vec![0; ring_size as usize];
        let table = vec![0; POLICY_TABLE_SLOTS as usize];
        Self {
            rings: [Some(ring.clone()), Some(ring)],
            tables: [Some(table.clone()), Some(table)],
        }
    }

    fn unknown() -> Self {
        Self {
            rings: [None, None],
            tables: [None, None],
        }
    }

    fn holds(&self, slot: usize, ring: &[u32], table: &[u32]) -> bool {
        self.rings[slot].as_deref() == Some(ring)
            && self.tables[slot]
                .as_deref()
                .is_some_and(|t| t.get(..table.len()) == Some(table))
    }
}

/// What the shadow holds for an entry never written: no value ever written (a backend
/// id, or [`NO_BACKEND`] for an entry that names none) can equal it.
const UNKNOWN: u32 = u32::MAX - 1;
const _: () = assert!(UNKNOWN != NO_BACKEND && UNKNOWN >= MAX_BACKENDS);

/// The writes that make `shadow` start with `want` (entries past `want` are left as they
/// are: nothing reads them), as (absolute index, value); `shadow` is updated to match.
/// An unknown shadow gets every entry written.
fn changes(
    want: &[u32],
    shadow: &mut Option<Vec<u32>>,
    full_len: usize,
    base: u32,
) -> Vec<(u32, u32)> {
    let known = shadow.get_or_insert_with(|| vec![UNKNOWN; full_len]);
    let unknown = known.iter().all(|v| *v == UNKNOWN) && !want.is_empty();
    let mut out = Vec::new();
    for (i, (w, have)) in want.iter().zip(known.iter_mut()).enumerate() {
        if w != have || unknown {
            out.push((base + i as u32, *w));
            *have = *w;
        }
    }
    out
}

mod edge;
mod one_backend;
mod reverse;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests6;
