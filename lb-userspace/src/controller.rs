//! Reconciles the kernel tables with a config and a runtime overlay (effective weights,
//! retiring backends): writes only what changed, and swaps each service's selection
//! table atomically (write the idle slot, then flip the service's active slot), so no
//! packet ever sees a half-written table. A backend slot is freed only after the flows
//! pinned to it are purged, so a later backend given the same id inherits none of them.
use std::collections::BTreeMap;

use anyhow::Context as _;
use lb_common::{
    backend::Backend,
    service::{ring_slot_base, ServiceKey, ServiceMeta},
};

use crate::{
    config::Config,
    dataplane::Dataplane,
    plan::{self, BackendRef, Ids, Overlay, Plan},
};

/// What the controller knows the kernel holds for one service.
#[derive(Debug, Clone)]
struct LiveService {
    key: ServiceKey,
    meta: ServiceMeta,
}

pub struct Controller<D> {
    dataplane: D,
    ring_size: u32,
    ids: Ids,
    plan: Option<Plan>,
    services: BTreeMap<String, LiveService>,
    backends: BTreeMap<u32, Backend>,
    /// Shadow of both ring slots of every service id ever used: exactly what the kernel
    /// array holds (it starts zeroed), so only differing entries are written.
    rings: BTreeMap<u32, [Vec<u32>; 2]>,
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
            rings: BTreeMap::new(),
        }
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

        // New and changed backends first, so that a flipped ring never names an
        // unwritten slot.
        for b in &plan.backends {
            if self.backends.get(&b.id) != Some(&b.value) {
                self.dataplane
                    .set_backend(b.id, &b.value)
                    .with_context(|| format!("writing backend {} (id {})", b.at.address, b.id))?;
                self.backends.insert(b.id, b.value);
                summary.backends_written += 1;
            }
        }
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
            self.dataplane
                .remove_service(&live.key)
                .with_context(|| format!("removing service {name}"))?;
            summary.services_removed += 1;
        }
        // Free backend slots last: no live ring names them any more, so no new flow can
        // be pinned to them; purge the flows that are, then free the slot.
        let unused: Vec<u32> = self
            .backends
            .keys()
            .filter(|id| !plan.backends.iter().any(|b| b.id == **id))
            .copied()
            .collect();
        for id in unused {
            summary.flows_purged += self
                .dataplane
                .purge_flows(id)
                .with_context(|| format!("purging the flows of backend slot {id}"))?;
            self.dataplane
                .set_backend(id, &Backend::default())
                .with_context(|| format!("freeing backend slot {id}"))?;
            self.backends.remove(&id);
            summary.backends_written += 1;
        }
        self.ids = ids;
        self.plan = Some(plan);
        Ok(summary)
    }

    /// Deletes the flow entries of a backend of the last plan (a drained backend whose
    /// deregistration delay passed); its slot stays. Returns the connections purged.
    pub fn purge_flows(&mut self, at: &BackendRef) -> anyhow::Result<usize> {
        let id = self
            .backend_id(at)
            .with_context(|| format!("backend {at} is not in the tables"))?;
        self.dataplane
            .purge_flows(id)
            .with_context(|| format!("purging the flows of backend {at} (id {id})"))
    }

    fn apply_service(
        &mut self,
        s: &plan::PlannedService,
        summary: &mut ApplySummary,
    ) -> anyhow::Result<()> {
        let size = self.ring_size as usize;
        let slots = self
            .rings
            .entry(s.id)
            .or_insert_with(|| [vec![0; size], vec![0; size]]);
        let live = self.services.get(&s.name);
        let unchanged = live.is_some_and(|l| {
            l.key == s.key
                && l.meta.id == s.id
                && l.meta.policy == s.policy
                && l.meta.flags == s.flags
                && slots[l.meta.active_slot as usize & 1] == s.ring
        });
        if unchanged {
            return Ok(());
        }
        // A service the kernel does not serve yet can take slot 0 directly; a live one
        // gets its idle slot written and then flipped.
        let slot = match live {
            Some(l) if l.meta.id == s.id => (l.meta.active_slot ^ 1) & 1,
            _ => 0,
        };
        let base = ring_slot_base(s.id, slot, self.ring_size);
        let shadow = &mut slots[slot as usize];
        let changes = ring_changes(&s.ring, shadow, base);
        self.dataplane
            .set_ring_entries(&changes)
            .with_context(|| format!("writing the ring of service {}", s.name))?;
        shadow.clone_from(&s.ring);
        summary.ring_entries_written += changes.len();

        let meta = ServiceMeta {
            id: s.id,
            active_slot: slot,
            policy: s.policy,
            flags: s.flags,
        };
        self.dataplane
            .set_service(&s.key, &meta)
            .with_context(|| format!("publishing service {}", s.name))?;
        summary.services_flipped += 1;
        if live.is_none() {
            // A new service: give the idle slot the same table, so the first change
            // writes only the entries that change rather than the whole slot.
            let idle = slot ^ 1;
            let base = ring_slot_base(s.id, idle, self.ring_size);
            let shadow = &mut slots[idle as usize];
            let changes = ring_changes(&s.ring, shadow, base);
            self.dataplane
                .set_ring_entries(&changes)
                .with_context(|| format!("writing the idle ring of service {}", s.name))?;
            shadow.clone_from(&s.ring);
            summary.ring_entries_written += changes.len();
        }
        if let Some(old) = live.filter(|l| l.key != s.key) {
            let old_key = old.key;
            self.dataplane
                .remove_service(&old_key)
                .with_context(|| format!("removing the old address of service {}", s.name))?;
        }
        self.services
            .insert(s.name.clone(), LiveService { key: s.key, meta });
        Ok(())
    }
}

/// The entries of `want` that differ from `have`, as (ring array index, backend id).
fn ring_changes(want: &[u32], have: &[u32], base: u32) -> Vec<(u32, u32)> {
    want.iter()
        .zip(have)
        .enumerate()
        .filter(|(_, (want, have))| want != have)
        .map(|(i, (want, _))| (base + i as u32, *want))
        .collect()
}

#[cfg(test)]
mod tests;
