//! The controller at run time: the config, the [`Fleet`]'s view of every backend, and
//! the [`Controller`] that writes the kernel, put together. Every event (a probe result,
//! a data-path sample, a reload, a timer) goes through here; whenever it changes any
//! effective weight, the selection tables of the services concerned are rebuilt and
//! swapped (idle slot, then flip), and only what changed is written. Synchronous and
//! clock-driven, so the whole lifecycle runs in host tests against the fake data plane.
//!
//! A probe result costs a map lookup; only a result that changes a backend's
//! eligibility recomputes weights, and then only its own service's: with 10,000
//! backends lbd applies thousands of results a second.
use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use log::{info, warn};

use crate::{
    control::fleet::{Fleet, Purge, ServiceWeights},
    control::health::{machine::Outcome, probe::ProbeSpec},
    control::tables::{ApplySummary, Controller},
    dataplane::Dataplane,
    model::config::{check_reloadable, Config},
    model::plan::{BackendRef, Overlay},
    model::weights::{self, Basis, Mode},
};

/// What an edit made in place changed (see [`Runtime::edited`]).
#[derive(Debug, Clone, Copy)]
pub enum Edited<'a> {
    /// One backend: added, removed, or one of its fields.
    Backend(&'a BackendRef),
    /// The settings of one service (not which services there are).
    Service(&'a str),
    /// Anything in the services.
    Services,
}

/// What changed since the last apply, so what [`Runtime::apply`] re-plans.
#[derive(Debug, Clone, Copy)]
enum Scope<'a> {
    /// One backend, and no other backend's overlay entry.
    Backend(&'a BackendRef),
    /// These services.
    Services(&'a [String]),
    /// Anything: every service is re-planned.
    All,
}

pub struct Runtime<D> {
    config: Config,
    fleet: Fleet,
    controller: Controller<D>,
    /// The overlay the fleet asks for, kept up to date service by service.
    overlay: Overlay,
    /// Whether `overlay` is what the kernel holds; until then every tick retries.
    applied: bool,
    modes: BTreeMap<String, Mode>,
    /// Per service, the basis (mode) its part of `overlay` was weighed under: while a
    /// change of one backend leaves it, no other backend's weight changed.
    bases: BTreeMap<String, Basis>,
    next_sample: BTreeMap<String, Instant>,
    /// Each `syn_proxy: auto` service's switch (see `syn_proxy`).
    syn_proxy: BTreeMap<String, crate::model::syn_proxy_auto::AutoSwitch>,
}

impl<D: Dataplane> Runtime<D> {
    /// Takes over `controller` and fills the kernel tables for `config`.
    pub fn start(
        config: Config,
        controller: Controller<D>,
        now: Instant,
    ) -> anyhow::Result<(Self, ApplySummary)> {
        let fleet = Fleet::new(&config, now);
        let mut runtime = Self {
            config,
            fleet,
            controller,
            overlay: Overlay::default(),
            applied: false,
            modes: BTreeMap::new(),
            bases: BTreeMap::new(),
            next_sample: BTreeMap::new(),
            syn_proxy: BTreeMap::new(),
        };
        let summary = runtime.sync(now)?;
        Ok((runtime, summary))
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn fleet(&self) -> &Fleet {
        &self.fleet
    }

    /// For taking back a change that failed (see [`Fleet::forget`]).
    pub fn fleet_mut(&mut self) -> &mut Fleet {
        &mut self.fleet
    }

    pub fn controller(&self) -> &Controller<D> {
        &self.controller
    }

    pub fn controller_mut(&mut self) -> &mut Controller<D> {
        &mut self.controller
    }

    /// Takes a new, validated config. A config the running data path cannot take (see
    /// [`check_reloadable`]) is refused, naming the fields, before anything changes.
    pub fn reload(&mut self, config: Config, now: Instant) -> anyhow::Result<ApplySummary> {
        check_reloadable(&self.config, &config)?;
        self.controller.check_compatible(&config)?;
        self.fleet.reconfigure(&config, now);
        self.config = config;
        self.applied = false;
        self.sync(now)
    }

    /// [`Runtime::reload`] for a `config` that differs from the running one in service
    /// `name` only (an admin API edit of one of its backends): only that service is
    /// re-planned, re-weighed and re-written, so the cost is that of the service, not of
    /// every backend. Anything else (a service added or removed, nothing applied yet)
    /// takes the whole reload.
    pub fn reload_service(
        &mut self,
        config: Config,
        name: &str,
        now: Instant,
    ) -> anyhow::Result<ApplySummary> {
        let same_services = config.services.len() == self.config.services.len()
            && config
                .services
                .iter()
                .zip(&self.config.services)
                .all(|(a, b)| a.name == b.name);
        if !self.applied || !same_services || self.fleet.service(name).is_none() {
            return self.reload(config, now);
        }
        check_reloadable(&self.config, &config)?;
        self.controller.check_compatible(&config)?;
        self.fleet.reconfigure_service(&config, name, now);
        self.config = config;
        self.sync_services(&[name.to_string()], true, now)
    }

    /// The desired state, for an edit made in place (an admin API change, see
    /// `desired::edit::apply_in_place`): no copy of it is made, so a change to one
    /// backend does not cost a copy of every backend. Every edit through here is
    /// followed by [`Runtime::edited`], also when it is taken back.
    pub fn config_mut(&mut self) -> &mut Config {
        &mut self.config
    }

    /// Applies an edit of the services made in place through [`Runtime::config_mut`],
    /// which changed `what`: one backend or one service is re-planned alone (its cost is
    /// that of the service, and nothing is done per backend of the others); anything
    /// else, or nothing applied yet, takes the whole re-plan.
    pub fn edited(&mut self, what: Edited<'_>, now: Instant) -> anyhow::Result<ApplySummary> {
        let scoped = match what {
            Edited::Backend(at) => Some(at.service.as_str()),
            Edited::Service(name) => Some(name),
            Edited::Services => None,
        };
        let Some(name) = scoped.filter(|name| self.applied && self.fleet.service(name).is_some())
        else {
            self.fleet.reconfigure(&self.config, now);
            self.applied = false;
            return self.sync(now);
        };
        match what {
            Edited::Backend(at) => {
                self.fleet.reconfigure_backend(&self.config, at, now);
                self.sync_backend(at, now)
            }
            _ => {
                self.fleet.reconfigure_service(&self.config, name, now);
                self.sync_services(&[name.to_string()], true, now)
            }
        }
    }

    /// A probe result that took `latency`.
    pub fn on_probe(
        &mut self,
        at: &BackendRef,
        outcome: &Outcome,
        latency: Duration,
        now: Instant,
    ) -> anyhow::Result<ApplySummary> {
        if self.fleet.observe(at, outcome, latency, now) {
            let summary = self.sync_services(std::slice::from_ref(&at.service), false, now)?;
            self.move_udp_flows_off(at);
            return Ok(summary);
        }
        Ok(ApplySummary::default())
    }

    /// Timers: passive samples, slow-start steps, deregistration delays. Weights are
    /// recomputed only when one of them may have changed something, and only for the
    /// services concerned.
    pub fn tick(&mut self, now: Instant) -> anyhow::Result<ApplySummary> {
        self.tick_with(now, true)
    }

    /// [`Runtime::tick`]; `scoped` re-plans only the services a timer concerned, rather
    /// than every service (the reference the tests compare it with).
    fn tick_with(&mut self, now: Instant, scoped: bool) -> anyhow::Result<ApplySummary> {
        self.check_drains()?;
        let ejected = self.sample_passive(now)?;
        let switched = self.sample_syn_proxy(now)?;
        let purges = self.fleet.due_purges(now);
        let ramping = self.fleet.ramping_services();
        let retry = !self.applied;
        if ejected.is_empty()
            && purges.is_empty()
            && ramping.is_empty()
            && switched.is_empty()
            && !retry
        {
            return Ok(ApplySummary::default());
        }
        let mut names: BTreeSet<String> = ejected.into_iter().chain(ramping).collect();
        for purge in purges {
            match purge {
                Purge::Drained(at) => {
                    let purged = self.controller.purge_flows(&at)?;
                    info!("backend {at}: deregistration delay passed; purged {purged} flows");
                    if purged > 0 {
                        let detail = format!(
                            "deregistration delay passed; {purged} flows still open were purged"
                        );
                        self.fleet.report_drained(&at, detail);
                    }
                    names.insert(at.service);
                }
                Purge::Removed(at) => {
                    info!("backend {at}: deregistration delay passed; purging its flows and freeing its slot");
                    names.insert(at.service);
                }
            }
        }
        if retry || !scoped {
            return self.sync(now);
        }
        // A switched proxy changes no weight, so the overlay's weights do not show it.
        let force = !switched.is_empty();
        names.extend(switched);
        let names: Vec<String> = names.into_iter().collect();
        self.sync_services(&names, force, now)
    }

    /// Notes [`EventKind::BackendDrained`](crate::model::events::EventKind) for each
    /// draining or removed backend whose active flows, as the data path counts them,
    /// are down to 0 (once per drain). Only draining backends are read.
    pub fn check_drains(&mut self) -> anyhow::Result<()> {
        for at in self.fleet.drains_pending() {
            let active = match self.controller.backend_id(&at) {
                Some(id) => self
                    .controller
                    .dataplane()
                    .active_flows(id)
                    .with_context(|| format!("reading the active flows of backend {at}"))?,
                // Never given a slot: no flow could reach it.
                None => 0,
            };
            if active == 0 {
                self.fleet.report_drained(&at, "no flows left".to_string());
            }
        }
        Ok(())
    }

    /// The lifecycle events noted since the last call (see `crate::model::events`).
    pub fn take_events(&mut self) -> Vec<crate::model::events::Event> {
        self.fleet.take_events()
    }

    /// The probes the checker must run.
    pub fn probe_specs(&self) -> BTreeMap<BackendRef, ProbeSpec> {
        self.fleet
            .probed()
            .into_iter()
            .map(|(at, s)| (at.clone(), ProbeSpec::new(&s.health, at.address, at.port)))
            .collect()
    }

    /// Reads the data path's handshake counters of each service's backends once per
    /// probe interval; returns the services where that ejected a backend.
    fn sample_passive(&mut self, now: Instant) -> anyhow::Result<Vec<String>> {
        let mut due = Vec::new();
        for s in &self.config.services {
            let next = self.next_sample.entry(s.name.clone()).or_insert(now);
            if now >= *next {
                *next = now + s.health.interval;
                due.push(s.name.clone());
            }
        }
        if self.next_sample.len() != self.config.services.len() {
            self.next_sample
                .retain(|name, _| self.config.services.iter().any(|s| &s.name == name));
        }
        let mut ejected = Vec::new();
        for name in due {
            let targets: Vec<(BackendRef, u32)> = self
                .fleet
                .probed_of(&name)
                .filter_map(|at| Some((at.clone(), self.controller.backend_id(at)?)))
                .collect();
            let mut readings = Vec::with_capacity(targets.len());
            for (at, id) in targets {
                let signals = self
                    .controller
                    .dataplane()
                    .backend_signals(id)
                    .with_context(|| format!("reading the passive counters of backend {at}"))?;
                readings.push((at, signals));
            }
            if self.fleet.sample_service(&name, &readings, now) {
                ejected.push(name);
            }
        }
        Ok(ejected)
    }

    /// Recomputes effective weights and applies them if anything changed.
    fn sync(&mut self, now: Instant) -> anyhow::Result<ApplySummary> {
        self.fleet.refresh(now);
        let weights = self.fleet.weights(now);
        self.bases.clear();
        for name in weights.keys() {
            self.note_basis(name);
        }
        let mut overlay = self.fleet.overlay(&weights);
        overlay.syn_proxy_on = self.overlay.syn_proxy_on.clone();
        if self.applied && self.overlay == overlay {
            return Ok(ApplySummary::default());
        }
        self.overlay = overlay;
        let modes = weights
            .iter()
            .map(|(name, w)| (name.clone(), (w.mode, w.backends.len())))
            .collect();
        self.apply(modes, Scope::All)
    }

    /// [`Runtime::sync`] for the services `names` alone (a backend of theirs changed
    /// eligibility, or their config changed: then `force`, as the overlay may not show
    /// it): only their weights are recomputed, only their part of the overlay replaced,
    /// and only they are re-planned and written.
    fn sync_services(
        &mut self,
        names: &[String],
        force: bool,
        now: Instant,
    ) -> anyhow::Result<ApplySummary> {
        if !self.applied {
            return self.sync(now);
        }
        let mut changed = force;
        let mut modes = BTreeMap::new();
        for name in names {
            self.fleet.refresh_service(name, now);
            let Some(w) = self.fleet.service_weights(name, now) else {
                continue;
            };
            self.note_basis(name);
            changed |= self.replace_overlay_of(name, &w);
            modes.insert(name.clone(), (w.mode, w.backends.len()));
        }
        if !changed {
            return Ok(ApplySummary::default());
        }
        self.apply(modes, Scope::Services(names))
    }

    /// [`Runtime::sync_services`] after a change of backend `at` alone. While its
    /// service's basis (see [`Basis`]) stays the one its weights were last computed under,
    /// no other backend's weight changed: only `at`'s overlay entries are recomputed,
    /// from the fleet's running totals, and the controller updates its entries in place
    /// (see [`Controller::apply_backend`]), so the cost does not grow with the service. (A
    /// slow-start step of another backend is left to the tick, which re-weighs ramping
    /// services.) Otherwise the service's weights are computed whole, and when any other
    /// backend's entry changed the service is re-planned.
    fn sync_backend(&mut self, at: &BackendRef, now: Instant) -> anyhow::Result<ApplySummary> {
        let names = [at.service.clone()];
        self.fleet.refresh_backend(at, now);
        let Some(basis) = self.fleet.basis_of(&at.service) else {
            return self.sync_services(&names, true, now);
        };
        let same = self.bases.get(&at.service) == Some(&basis)
            && self.modes.get(&at.service) == Some(&basis.mode);
        if same {
            let weight = self.fleet.weight_under(at, basis, now);
            let retiring = self.fleet.retiring_zone(at).map(str::to_string);
            update_entry(
                &mut self.overlay.ring_weights,
                at,
                weight.map(weights::ring_weight),
            );
            update_entry(&mut self.overlay.retiring, at, retiring);
            // The mode stays, as logged.
            return self.apply(BTreeMap::new(), Scope::Backend(at));
        }
        let Some((mode, backends)) = self.fleet.service_weights_of(&at.service, now) else {
            return self.sync_services(&names, true, now);
        };
        let count = backends.len();
        let changed = overlay_changes(
            &mut self.overlay,
            &self.fleet,
            &at.service,
            backends.into_iter(),
        );
        self.bases.insert(at.service.clone(), basis);
        let modes = BTreeMap::from([(at.service.clone(), (mode, count))]);
        if changed.iter().any(|k| k != at) {
            return self.apply(modes, Scope::Services(&names));
        }
        self.apply(modes, Scope::Backend(at))
    }

    /// Notes the basis service `name`'s weights were just computed under.
    fn note_basis(&mut self, name: &str) {
        match self.fleet.basis_of(name) {
            Some(basis) => self.bases.insert(name.to_string(), basis),
            None => self.bases.remove(name),
        };
    }

    /// Replaces service `name`'s part of the overlay (what [`Fleet::overlay`] would give
    /// for it); true when that changed it.
    fn replace_overlay_of(&mut self, name: &str, w: &ServiceWeights) -> bool {
        let backends = w.backends.iter().map(|(at, weight)| (at, *weight));
        !overlay_changes(&mut self.overlay, &self.fleet, name, backends).is_empty()
    }

    /// Applies `self.overlay`; `modes` are the services' modes to log when they change,
    /// `scope` what changed.
    fn apply(
        &mut self,
        modes: BTreeMap<String, (Mode, usize)>,
        scope: Scope<'_>,
    ) -> anyhow::Result<ApplySummary> {
        let all = matches!(scope, Scope::All);
        let started = Instant::now();
        // Until it succeeds, the tables are not known to match: the next tick retries.
        // Start-up and reloads (nothing applied before) report their own summary.
        let reported_elsewhere = !self.applied && all;
        self.applied = false;
        let summary = match scope {
            Scope::Backend(at) => self
                .controller
                .apply_backend(&self.config, &self.overlay, at)?,
            Scope::Services(names) => {
                self.controller
                    .apply_services(&self.config, &self.overlay, names)?
            }
            Scope::All => self.controller.apply_with(&self.config, &self.overlay)?,
        };
        // Logged once the tables are live, so the log says what the data path does.
        for (name, (mode, backends)) in &modes {
            if self.modes.get(name) != Some(mode) {
                log_mode(name, *mode, self.fleet.local_zone(), *backends);
                self.modes.insert(name.clone(), *mode);
            }
        }
        if all {
            self.modes.retain(|name, _| modes.contains_key(name));
        }
        if summary != ApplySummary::default() && !reported_elsewhere {
            info!(
                "tables updated in {:.1} ms: {} services flipped, {} ring entries and {} backend slots written, {} flows purged",
                started.elapsed().as_secs_f64() * 1e3,
                summary.services_flipped,
                summary.ring_entries_written,
                summary.backends_written,
                summary.flows_purged
            );
        }
        self.applied = true;
        Ok(summary)
    }
}

/// Makes service `name`'s part of `overlay` what [`Fleet::overlay`] would give for it,
/// from its backends' effective weights; returns the backends whose entries changed.
fn overlay_changes<'a>(
    overlay: &mut Overlay,
    fleet: &Fleet,
    name: &str,
    backends: impl Iterator<Item = (&'a BackendRef, f64)>,
) -> Vec<BackendRef> {
    // One walk of the service's part against the new entries, and writes only where
    // they differ: after a change to one backend, only its entries do.
    let ring = backends.map(|(at, weight)| (at, weights::ring_weight(weight)));
    let mut changed = update_range(&mut overlay.ring_weights, name, ring);
    for at in update_range(&mut overlay.retiring, name, fleet.retiring_of(name)) {
        if !changed.contains(&at) {
            changed.push(at);
        }
    }
    changed
}

/// Makes `map`'s entry for `at` `value` (none: removed), writing only if it differs.
fn update_entry<V: PartialEq>(
    map: &mut BTreeMap<BackendRef, V>,
    at: &BackendRef,
    value: Option<V>,
) {
    match value {
        Some(v) => {
            if map.get(at) != Some(&v) {
                map.insert(at.clone(), v);
            }
        }
        None => {
            map.remove(at);
        }
    }
}

/// Makes the entries of service `name` in `map` those of `with` (in key order), writing
/// only the entries that differ; returns their keys.
fn update_range<'a, V, W>(
    map: &mut BTreeMap<BackendRef, V>,
    name: &str,
    with: impl Iterator<Item = (&'a BackendRef, W)>,
) -> Vec<BackendRef>
where
    V: PartialEq<W> + From<W>,
{
    let mut put: Vec<(&BackendRef, W)> = Vec::new();
    let mut gone: Vec<BackendRef> = Vec::new();
    {
        let mut have = BackendRef::of_service(map, name).peekable();
        for (at, v) in with {
            loop {
                match have.peek() {
                    Some((h, _)) if *h < at => {
                        gone.push((*h).clone());
                        have.next();
                    }
                    Some((h, hv)) if *h == at => {
                        if **hv != v {
                            put.push((at, v));
                        }
                        have.next();
                        break;
                    }
                    _ => {
                        put.push((at, v));
                        break;
                    }
                }
            }
        }
        gone.extend(have.map(|(h, _)| h.clone()));
    }
    for at in &gone {
        map.remove(at);
    }
    let mut changed = gone;
    for (at, v) in put {
        map.insert(at.clone(), V::from(v));
        changed.push(at.clone());
    }
    changed
}

fn log_mode(service: &str, mode: Mode, zone: &str, backends: usize) {
    match mode {
        Mode::FailOpen => warn!(
            "service {service}: fail open: no backend is healthy, new flows go to every active backend"
        ),
        Mode::FailClosed => warn!(
            "service {service}: fail closed: no backend is healthy, new flows are dropped"
        ),
        Mode::NoBackend => warn!(
            "service {service}: no active backend ({backends} draining or none): new flows are dropped"
        ),
        Mode::Spill => warn!(
            "service {service}: local zone {zone} is short of healthy backends, new flows spill to other zones"
        ),
        Mode::CrossZone | Mode::LocalZone => info!("service {service}: {mode}"),
    }
}

mod syn_proxy;
mod udp_flows;

#[cfg(test)]
mod syn_proxy_tests;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod scoped_tests;

#[cfg(test)]
mod events_tests;
