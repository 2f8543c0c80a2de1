//! What lbd knows about every backend at run time, beyond the config: its health
//! verdict, whether it drains (by config, or because it was removed), when its
//! deregistration delay ends, and its slow-start ramp. Pure: the clock is passed in, so
//! the lifecycle is tested on the host without waiting.
//!
//! Lifecycle: `active` -> `draining` (set in the config, or removed from it: no new
//! flows; existing flows continue until the deregistration delay passes, then their
//! entries are purged) -> gone (a removed backend's slot is freed after the purge).
use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use lb_common::counters::BackendSignals;
use log::{info, warn};

use crate::{
    config::{duration, BackendConfig, BackendState, Config, ServiceConfig},
    health::{
        machine::{Change, Health, Machine, Outcome},
        passive::Window,
    },
    plan::{BackendRef, Overlay},
    weights::{self, Member, Mode, ZonePolicy},
};

#[derive(Debug, Clone)]
struct MemberState {
    zone: String,
    weight: u32,
    state: BackendState,
    machine: Machine,
    /// Whether "no verdict yet" counts as serving. True for backends that arrived with
    /// their service (at start-up or with a new service): nothing is known against
    /// them, and holding them back would pile every new flow onto whichever backend
    /// passes its probes first (and an lbd restart would move traffic). False for a
    /// backend added to a running service: it waits for its healthy threshold.
    assume_serving: bool,
    draining_since: Option<Instant>,
    retired_at: Option<Instant>,
    /// The flows of a draining backend were purged after its delay.
    purged: bool,
    /// Took new flows at the last refresh (to see it start serving again).
    serving: bool,
    ramp_since: Option<Instant>,
    passive: Window,
}

impl MemberState {
    fn healthy(&self) -> bool {
        match self.machine.state() {
            Health::Healthy => true,
            Health::Unknown => self.assume_serving,
            Health::Unhealthy => false,
        }
    }

    fn draining(&self) -> bool {
        self.retired_at.is_some() || self.state == BackendState::Draining
    }

    fn eligible(&self) -> bool {
        self.healthy() && !self.draining()
    }

    fn new(s: &ServiceConfig, b: &BackendConfig, with_service: bool, now: Instant) -> Self {
        let h = &s.health;
        let mut m = MemberState {
            zone: b.zone.clone(),
            weight: b.weight,
            state: b.state,
            machine: Machine::new(h.healthy_threshold, h.unhealthy_threshold),
            assume_serving: with_service,
            draining_since: (b.state == BackendState::Draining).then_some(now),
            retired_at: None,
            purged: false,
            serving: false,
            ramp_since: None,
            passive: Window::default(),
        };
        m.serving = m.eligible();
        m
    }
}

/// A backend that stays in the config, maybe changed: weights and thresholds follow the
/// file; a removed one added back returns; a change of `state` starts or ends draining.
fn update(
    at: &BackendRef,
    m: &mut MemberState,
    s: &ServiceConfig,
    b: &BackendConfig,
    now: Instant,
) {
    m.zone.clone_from(&b.zone);
    m.weight = b.weight;
    m.machine
        .set_thresholds(s.health.healthy_threshold, s.health.unhealthy_threshold);
    let returning = m.retired_at.take().is_some();
    if returning {
        info!("backend {at}: back in the config");
    }
    match b.state {
        BackendState::Active => {
            if m.draining_since.take().is_some() && !returning {
                info!("backend {at}: active again");
            }
            m.purged = false;
        }
        BackendState::Draining if returning || m.state != BackendState::Draining => {
            info!(
                "backend {at}: draining (no new flows; existing flows may continue for {})",
                duration::format(s.deregistration_delay)
            );
            m.draining_since = Some(now);
            m.purged = false;
        }
        BackendState::Draining => {}
    }
    m.state = b.state;
}

/// What a due deregistration delay asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purge {
    /// A backend draining by config: purge its flows, keep its slot.
    Drained(BackendRef),
    /// A backend removed from the config: it is gone from the fleet, so the next apply
    /// purges its flows and frees its slot.
    Removed(BackendRef),
}

/// The weights of one service's backends.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceWeights {
    pub mode: Mode,
    pub backends: Vec<(BackendRef, f64)>,
}

#[derive(Debug, Clone, Default)]
pub struct Fleet {
    local_zone: String,
    services: BTreeMap<String, ServiceConfig>,
    members: BTreeMap<BackendRef, MemberState>,
}

fn backend_ref(service: &ServiceConfig, address: std::net::Ipv4Addr, port: u16) -> BackendRef {
    BackendRef {
        service: service.name.clone(),
        address,
        port,
    }
}

impl Fleet {
    /// The fleet of a freshly started lbd: every backend arrives with its service.
    pub fn new(config: &Config, now: Instant) -> Self {
        let mut fleet = Fleet::default();
        fleet.reconfigure(config, now);
        fleet
    }

    /// Takes a new (validated) config: new backends start unknown, removed ones retire,
    /// state changes start or end draining. Backends of removed services are dropped at
    /// once (a removed VIP stops), so the next apply purges and frees them.
    pub fn reconfigure(&mut self, config: &Config, now: Instant) {
        self.local_zone = config.node.zone.clone();
        let old = std::mem::take(&mut self.services);
        self.members
            .retain(|at, _| config.services.iter().any(|s| s.name == at.service));
        for s in &config.services {
            let new_service = !old.contains_key(&s.name);
            let mut configured = BTreeSet::new();
            for b in &s.backends {
                let at = backend_ref(s, b.address, b.port);
                match self.members.get_mut(&at) {
                    Some(m) => update(&at, m, s, b, now),
                    None => {
                        let m = MemberState::new(s, b, new_service, now);
                        if !new_service {
                            info!(
                                "backend {at}: added, unknown until {} consecutive successful probes",
                                s.health.healthy_threshold
                            );
                        }
                        self.members.insert(at.clone(), m);
                    }
                }
                configured.insert(at);
            }
            let ours = self
                .members
                .range_mut(service_start(&s.name)..)
                .take_while(|(at, _)| at.service == s.name);
            for (at, m) in ours {
                if !configured.contains(at) && m.retired_at.is_none() {
                    info!(
                        "backend {at}: removed from the config; its flows may continue for {}",
                        duration::format(s.deregistration_delay)
                    );
                    m.retired_at = Some(now);
                }
            }
            self.services.insert(s.name.clone(), s.clone());
        }
    }

    /// A probe result; true when the backend's eligibility for new flows changed.
    pub fn observe(&mut self, at: &BackendRef, outcome: &Outcome) -> bool {
        let Some(m) = self.members.get_mut(at) else {
            return false;
        };
        if m.retired_at.is_some() {
            return false;
        }
        let before = m.healthy();
        match m.machine.observe(outcome) {
            Change::Became { from, to } => {
                let why = match outcome {
                    Ok(()) => "consecutive successful probes".to_string(),
                    Err(failure) => failure.to_string(),
                };
                if to == Health::Healthy {
                    m.passive.clear();
                    info!("backend {at}: {from} -> {to} ({why})");
                } else {
                    warn!("backend {at}: {from} -> {to} ({why})");
                }
            }
            Change::FirstFailure => {
                if let Err(failure) = outcome {
                    let threshold = self.services[&at.service].health.unhealthy_threshold;
                    info!(
                        "backend {at}: probe failed ({failure}), 1 of {threshold} toward unhealthy"
                    );
                }
            }
            Change::Nothing => {}
        }
        before != m.healthy()
    }

    /// A reading of the data path's counters for `at`; true when it ejected the backend.
    pub fn sample_signals(&mut self, at: &BackendRef, signals: BackendSignals) -> bool {
        let Some(m) = self.members.get_mut(at) else {
            return false;
        };
        let h = &self.services[&at.service].health;
        let Some(why) = m
            .passive
            .sample(signals, h.passive_failure_ratio, h.passive_min_attempts)
        else {
            return false;
        };
        if !m.eligible() {
            return false;
        }
        let from = m.machine.state();
        m.machine.eject();
        warn!("backend {at}: {from} -> unhealthy (passive: {why})");
        true
    }

    /// The members of service `name`: keys sort by service first, so they are one range.
    fn members_of<'a>(
        members: &'a BTreeMap<BackendRef, MemberState>,
        name: &'a str,
    ) -> impl Iterator<Item = (&'a BackendRef, &'a MemberState)> + 'a {
        members
            .range(service_start(name)..)
            .take_while(move |(at, _)| at.service == name)
    }

    /// Notes which backends started serving again (their slow start begins, unless no
    /// other backend of the service was serving: then there is nothing to ramp from).
    pub fn refresh(&mut self, now: Instant) {
        for (name, s) in &self.services {
            let serving_before = Self::members_of(&self.members, name)
                .filter(|(_, m)| m.serving)
                .count();
            let ours = self
                .members
                .range_mut(service_start(name)..)
                .take_while(|(at, _)| &at.service == name);
            for (at, m) in ours {
                let serving = m.eligible();
                if serving && !m.serving && !s.slow_start.is_zero() && serving_before > 0 {
                    info!(
                        "backend {at}: slow start over {}",
                        duration::format(s.slow_start)
                    );
                    m.ramp_since = Some(now);
                }
                let ramp_done = m
                    .ramp_since
                    .is_some_and(|since| now.saturating_duration_since(since) >= s.slow_start);
                if !serving || ramp_done {
                    m.ramp_since = None;
                }
                m.serving = serving;
            }
        }
    }

    /// Effective weights of every service's backends (see [`weights::effective`]).
    pub fn weights(&self, now: Instant) -> BTreeMap<String, ServiceWeights> {
        let mut out = BTreeMap::new();
        for (name, s) in &self.services {
            let ours: Vec<(&BackendRef, &MemberState)> =
                Self::members_of(&self.members, name).collect();
            let members: Vec<Member> = ours
                .iter()
                .map(|(_, m)| Member {
                    zone: &m.zone,
                    weight: m.weight,
                    draining: m.draining(),
                    healthy: m.healthy(),
                    ramp: m.ramp_since.map_or(1.0, |since| {
                        weights::ramp(now.saturating_duration_since(since), s.slow_start)
                    }),
                })
                .collect();
            let w = weights::effective(&ZonePolicy::of(s, &self.local_zone), &members);
            out.insert(
                name.clone(),
                ServiceWeights {
                    mode: w.mode,
                    backends: ours
                        .iter()
                        .map(|(at, _)| (*at).clone())
                        .zip(w.weights)
                        .collect(),
                },
            );
        }
        out
    }

    /// The overlay the controller applies: ring weights and retiring backends.
    pub fn overlay(&self, weights: &BTreeMap<String, ServiceWeights>) -> Overlay {
        Overlay {
            ring_weights: weights
                .values()
                .flat_map(|s| s.backends.iter())
                .map(|(at, w)| (at.clone(), weights::ring_weight(*w)))
                .collect(),
            retiring: self
                .members
                .iter()
                .filter(|(_, m)| m.retired_at.is_some())
                .map(|(at, m)| (at.clone(), m.zone.clone()))
                .collect(),
        }
    }

    /// Backends whose deregistration delay has passed. Removed ones leave the fleet.
    pub fn due_purges(&mut self, now: Instant) -> Vec<Purge> {
        let mut due = Vec::new();
        let services = &self.services;
        let delay = |at: &BackendRef| {
            services
                .get(&at.service)
                .map_or(Duration::ZERO, |s| s.deregistration_delay)
        };
        for (at, m) in self.members.iter_mut() {
            if let Some(since) = m.draining_since {
                if m.retired_at.is_none() && !m.purged && now >= since + delay(at) {
                    m.purged = true;
                    due.push(Purge::Drained(at.clone()));
                }
            }
        }
        let removed: Vec<BackendRef> = self
            .members
            .iter()
            .filter(|(at, m)| m.retired_at.is_some_and(|t| now >= t + delay(at)))
            .map(|(at, _)| at.clone())
            .collect();
        for at in removed {
            self.members.remove(&at);
            due.push(Purge::Removed(at));
        }
        due
    }

    /// Backends to probe (every configured one, draining too: their health matters when
    /// they come back) with the policy of their service.
    pub fn probed(&self) -> Vec<(&BackendRef, &ServiceConfig)> {
        self.members
            .iter()
            .filter(|(_, m)| m.retired_at.is_none())
            .filter_map(|(at, _)| Some((at, self.services.get(&at.service)?)))
            .collect()
    }

    pub fn service(&self, name: &str) -> Option<&ServiceConfig> {
        self.services.get(name)
    }

    pub fn health(&self, at: &BackendRef) -> Option<Health> {
        self.members.get(at).map(|m| m.machine.state())
    }

    pub fn local_zone(&self) -> &str {
        &self.local_zone
    }

    /// Whether time alone can change a weight now: a slow start is ramping.
    pub fn ramping(&self) -> bool {
        self.members.values().any(|m| m.ramp_since.is_some())
    }
}

/// The smallest key of service `name`'s backends.
fn service_start(name: &str) -> BackendRef {
    BackendRef {
        service: name.to_string(),
        address: std::net::Ipv4Addr::UNSPECIFIED,
        port: 0,
    }
}

#[cfg(test)]
mod tests;
