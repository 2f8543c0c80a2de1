//! A change of one backend that leaves its service's selection tables as they are (an
//! add at weight 0, waiting for its probes; the removal, drain or weight change of a
//! backend that has no ring share): that backend's plan entries, id, slot and prefilter
//! bit are updated in place, so the cost does not grow with the service's size. Anything
//! else takes [`Controller::apply_services`], the per-service re-plan, which is also the
//! reference the tests hold this path to.
use super::{backend_bit, ApplySummary, Controller};
use crate::{
    dataplane::Dataplane,
    model::config::{Config, ServiceConfig},
    model::plan::{self, BackendRef, Overlay, PlannedBackend},
};

/// Where the changed backend goes in its service's part of the plan.
struct Placed {
    /// Index among the service's members (configured ones, then retiring ones).
    position: usize,
    /// Its index in the Maglev input, for a configured backend.
    configured: Option<usize>,
    entry: PlannedBackend,
}

impl<D: Dataplane> Controller<D> {
    /// [`Controller::apply_services`] for a change of backend `at` alone, in `config` and
    /// in `overlay` (the caller knows no other backend's overlay entry changed). When
    /// neither its old nor its new ring weight is positive and its service has no policy
    /// table, the service's ring, table and entry stay as they are: only its own entries
    /// are planned and written. Otherwise its service is re-planned.
    pub fn apply_backend(
        &mut self,
        config: &Config,
        overlay: &Overlay,
        at: &BackendRef,
    ) -> anyhow::Result<ApplySummary> {
        let names = [at.service.clone()];
        let scoped = self.plan.is_some() && !self.stale && self.filter.is_some();
        let Some(s) = config.services.iter().find(|s| s.name == at.service) else {
            return self.apply_services(config, overlay, &names);
        };
        let same_services = self.plan.as_ref().is_some_and(|p| {
            p.services.len() == config.services.len()
                && p.services
                    .iter()
                    .zip(&config.services)
                    .all(|(a, b)| a.name == b.name)
        });
        if !scoped || !same_services || !self.tables_stay(s, overlay, at) {
            return self.apply_services(config, overlay, &names);
        }
        let saved = self.ids.backends.get(at).copied();
        let mut summary = ApplySummary::default();
        if let Err(e) = self.write_backend(s, overlay, at, &mut summary) {
            // The next apply re-plans everything from the kernel's plan.
            match saved {
                Some(id) => self.ids.backends.insert(at.clone(), id),
                None => self.ids.backends.remove(at),
            };
            self.stale = true;
            return Err(e);
        }
        self.backends_in_place += 1;
        // The reverse map follows the plan's backends; it is only kept when a service
        // asks for it, and then its walk is the price of this change.
        if config.services.iter().any(|s| s.stateless_return) {
            self.write_reverse_map(config)?;
        }
        Ok(summary)
    }

    /// Whether the change of `at` leaves service `s`'s planned entry (key, policy,
    /// flags, ring, table) as it is: a hash policy, and no ring share before or after.
    fn tables_stay(&self, s: &ServiceConfig, overlay: &Overlay, at: &BackendRef) -> bool {
        let Some(plan) = self.plan.as_ref() else {
            return false;
        };
        let Some(old) = plan.services.iter().find(|p| p.name == s.name) else {
            return false;
        };
        let (policy, flags) = plan::service_flags(s, overlay);
        if plan::has_policy_table(s)
            || old.policy != policy
            || old.flags != flags
            || old.key != plan::service_key(s)
        {
            return false;
        }
        let old_share = self.ids.backends.get(at).is_some_and(|id| {
            old.maglev_input
                .iter()
                .find(|m| m.id == *id)
                .is_some_and(|m| m.weight > 0)
        });
        let new_share = s
            .backends
            .iter()
            .find(|b| (b.address, b.port) == (at.address, at.port))
            .is_some_and(|b| plan::ring_weight_milli(overlay, at, b.weight) > 0);
        !old_share && !new_share
    }

    fn write_backend(
        &mut self,
        s: &ServiceConfig,
        overlay: &Overlay,
        at: &BackendRef,
        summary: &mut ApplySummary,
    ) -> anyhow::Result<()> {
        let plan = self.plan.as_ref().expect("checked by the caller");
        let idx = plan
            .services
            .iter()
            .position(|p| p.name == s.name)
            .expect("checked by the caller");
        let start: usize = plan.services[..idx].iter().map(|p| p.backends.len()).sum();
        let end = start + plan.services[idx].backends.len();
        let old_position = plan.backends[start..end]
            .iter()
            .position(|b| (b.at.address, b.at.port) == (at.address, at.port));
        let old = old_position.map(|i| plan.backends[start + i].clone());
        let service_id = plan.services[idx].id;

        let (placed, released) = self.place_backend(s, overlay, at, service_id);
        let current = self.filter.clone().expect("checked by the caller");
        let wanted = self.filter_after(&current, old.as_ref(), placed.as_ref());
        self.write_filter_union(&current, &wanted)?;
        self.write_backends(placed.as_ref().map(|p| &p.entry), summary)?;
        self.planned += u64::from(placed.is_some());
        // Its service's tables do not change (see `tables_stay`): nothing to flip.
        let released_ids: Vec<u32> = released.into_iter().collect();
        self.free_slots(&released_ids, summary)?;
        self.write_filter(&wanted)?;
        if let Some(id) = released {
            self.free.release(id);
        }

        self.move_in_plan(idx, start, old_position, placed, at);
        Ok(())
    }

    /// Backend `at`'s id (kept, taken from the free ones, or released: the second value,
    /// freed once its flows are gone) and, unless it left, its planned entry and position.
    fn place_backend(
        &mut self,
        s: &ServiceConfig,
        overlay: &Overlay,
        at: &BackendRef,
        service_id: u32,
    ) -> (Option<Placed>, Option<u32>) {
        let configured = s
            .backends
            .iter()
            .position(|b| (b.address, b.port) == (at.address, at.port));
        let retiring = overlay.retiring.get(at);
        let member = configured.is_some() || retiring.is_some();
        let mut released = None;
        if member && !self.ids.backends.contains_key(at) {
            let id = self.free.take();
            self.ids.backends.insert(at.clone(), id);
        } else if !member {
            released = self.ids.backends.remove(at);
        }
        let placed = match (configured, retiring) {
            (Some(i), _) => {
                let b = &s.backends[i];
                let id = self.ids.backends[at];
                let weight_milli = plan::ring_weight_milli(overlay, at, b.weight);
                Some(Placed {
                    position: i,
                    configured: Some(i),
                    entry: PlannedBackend {
                        id,
                        at: at.clone(),
                        zone: b.zone.clone(),
                        weight: b.weight,
                        value: plan::backend_value(
                            b.address,
                            b.port,
                            weight_milli,
                            service_id,
                            s.mode,
                        ),
                    },
                })
            }
            (None, Some(zone)) => {
                let before = BackendRef::of_service(&overlay.retiring, &s.name)
                    .take_while(|(r, _)| *r < at)
                    .count();
                Some(Placed {
                    position: s.backends.len() + before,
                    configured: None,
                    entry: PlannedBackend {
                        id: self.ids.backends[at],
                        at: at.clone(),
                        zone: zone.clone(),
                        weight: 0,
                        value: plan::backend_value(at.address, at.port, 0, service_id, s.mode),
                    },
                })
            }
            (None, None) => None,
        };
        (placed, released)
    }

    /// The prefilter words once `old` is replaced by `placed`: only its own address's
    /// bit can change count.
    fn filter_after(
        &mut self,
        current: &[u32],
        old: Option<&PlannedBackend>,
        placed: Option<&Placed>,
    ) -> Vec<u32> {
        let old_bit = old.map(backend_bit);
        let new_bit = placed.map(|p| backend_bit(&p.entry));
        if old_bit == new_bit {
            return current.to_vec();
        }
        let added: Vec<_> = new_bit.into_iter().collect();
        let removed: Vec<_> = old_bit.into_iter().collect();
        self.filter_counted(current, &added, &removed)
    }

    /// The plan: `at`'s entries out of their old places (`old_position` in service
    /// `idx`, whose backends start at `start`) and into their new ones; the other
    /// members keep their order, so this is what `plan_service` gives.
    fn move_in_plan(
        &mut self,
        idx: usize,
        start: usize,
        old_position: Option<usize>,
        placed: Option<Placed>,
        at: &BackendRef,
    ) {
        let plan = self.plan.as_mut().expect("checked by the caller");
        let service = &mut plan.services[idx];
        if let Some(i) = old_position {
            service.backends.remove(i);
            plan.backends.remove(start + i);
            if i < service.maglev_input.len() {
                service.maglev_input.remove(i);
            }
        }
        if let Some(p) = placed {
            service.backends.insert(p.position, p.entry.id);
            if let Some(i) = p.configured {
                service.maglev_input.insert(
                    i,
                    plan::maglev_entry(at.address, at.port, p.entry.value.weight_milli, p.entry.id),
                );
            }
            plan.backends.insert(start + p.position, p.entry);
        }
    }
}
