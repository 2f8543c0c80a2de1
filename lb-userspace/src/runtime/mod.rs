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
    collections::BTreeMap,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use log::{info, warn};

use crate::{
    config::{check_reloadable, Config},
    controller::{ApplySummary, Controller},
    dataplane::Dataplane,
    fleet::{Fleet, Purge},
    health::{machine::Outcome, probe::ProbeSpec},
    plan::{BackendRef, Overlay},
    weights::{self, Mode},
};

pub struct Runtime<D> {
    config: Config,
    fleet: Fleet,
    controller: Controller<D>,
    /// The overlay the fleet asks for, kept up to date service by service.
    overlay: Overlay,
    /// Whether `overlay` is what the kernel holds; until then every tick retries.
    applied: bool,
    modes: BTreeMap<String, Mode>,
    next_sample: BTreeMap<String, Instant>,
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
            next_sample: BTreeMap::new(),
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

    /// A probe result that took `latency`.
    pub fn on_probe(
        &mut self,
        at: &BackendRef,
        outcome: &Outcome,
        latency: Duration,
        now: Instant,
    ) -> anyhow::Result<ApplySummary> {
        if self.fleet.observe(at, outcome, latency, now) {
            return self.sync_service(&at.service, now);
        }
        Ok(ApplySummary::default())
    }

    /// Timers: passive samples, slow-start steps, deregistration delays. Weights are
    /// recomputed only when one of them may have changed something.
    pub fn tick(&mut self, now: Instant) -> anyhow::Result<ApplySummary> {
        let ejected = self.sample_passive(now)?;
        let purges = self.fleet.due_purges(now);
        let retry = !self.applied;
        if !ejected && purges.is_empty() && !self.fleet.ramping() && !retry {
            return Ok(ApplySummary::default());
        }
        for purge in purges {
            match purge {
                Purge::Drained(at) => {
                    let purged = self.controller.purge_flows(&at)?;
                    info!("backend {at}: deregistration delay passed; purged {purged} flows");
                }
                Purge::Removed(at) => {
                    info!("backend {at}: deregistration delay passed; purging its flows and freeing its slot");
                }
            }
        }
        self.sync(now)
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
    /// probe interval; true when that ejected a backend.
    fn sample_passive(&mut self, now: Instant) -> anyhow::Result<bool> {
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
        let mut ejected = false;
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
            ejected |= self.fleet.sample_service(&name, &readings, now);
        }
        Ok(ejected)
    }

    /// Recomputes effective weights and applies them if anything changed.
    fn sync(&mut self, now: Instant) -> anyhow::Result<ApplySummary> {
        self.fleet.refresh(now);
        let weights = self.fleet.weights(now);
        let overlay = self.fleet.overlay(&weights);
        if self.applied && self.overlay == overlay {
            return Ok(ApplySummary::default());
        }
        self.overlay = overlay;
        let modes = weights
            .iter()
            .map(|(name, w)| (name.clone(), (w.mode, w.backends.len())))
            .collect();
        self.apply(modes, true)
    }

    /// [`Runtime::sync`] for one service whose backend changed eligibility: only its
    /// weights are recomputed and only its part of the overlay is replaced.
    fn sync_service(&mut self, name: &str, now: Instant) -> anyhow::Result<ApplySummary> {
        if !self.applied {
            return self.sync(now);
        }
        self.fleet.refresh_service(name, now);
        let Some(w) = self.fleet.service_weights(name, now) else {
            return Ok(ApplySummary::default());
        };
        let mut changed = false;
        for (at, weight) in &w.backends {
            let ring = weights::ring_weight(*weight);
            if self.overlay.ring_weights.insert(at.clone(), ring) != Some(ring) {
                changed = true;
            }
        }
        if !changed {
            return Ok(ApplySummary::default());
        }
        self.apply(
            [(name.to_string(), (w.mode, w.backends.len()))].into(),
            false,
        )
    }

    /// Applies `self.overlay`; `modes` are the services' modes to log when they change,
    /// `all` whether they are every service's.
    fn apply(
        &mut self,
        modes: BTreeMap<String, (Mode, usize)>,
        all: bool,
    ) -> anyhow::Result<ApplySummary> {
        let started = Instant::now();
        // Until it succeeds, the tables are not known to match: the next tick retries.
        // Start-up and reloads (nothing applied before) report their own summary.
        let reported_elsewhere = !self.applied && all;
        self.applied = false;
        let summary = self.controller.apply_with(&self.config, &self.overlay)?;
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

#[cfg(test)]
mod tests;
