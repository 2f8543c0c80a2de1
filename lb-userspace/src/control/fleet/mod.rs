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
    control::health::{
        flap::{Flap, FlapChange},
        machine::{Change, Health, Machine, Outcome},
        passive::{Failures, Window},
        record::ProbeRecord,
    },
    model::config::{
        duration, BackendConfig, BackendState, Config, HealthConfig, Protocol, ServiceConfig,
    },
    model::events::{self, Event, EventKind},
    model::plan::{BackendRef, Overlay},
    model::weights::{self, Basis, Member, Mode, Totals, ZonePolicy},
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
    /// This drain's [`EventKind::BackendDrained`] was noted (it is noted once per drain).
    drain_reported: bool,
    /// Took new flows at the last refresh (to see it start serving again).
    serving: bool,
    ramp_since: Option<Instant>,
    passive: Window,
    /// Out because passive signals ejected it (counts against the ejection cap until
    /// it is healthy again).
    passive_ejected: bool,
    /// When a refused passive ejection was last logged (one line a minute at most).
    refusal_logged: Option<Instant>,
    flap: Flap,
    record: ProbeRecord,
}

impl MemberState {
    /// The verdict: the state machine's, unless flap damping holds the backend out.
    fn verdict(&self) -> Health {
        if self.flap.held() {
            Health::Unhealthy
        } else {
            self.machine.state()
        }
    }

    fn healthy(&self) -> bool {
        match self.verdict() {
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

    /// The member as the weight rules see it, `now` into its slow start (if any).
    fn view(&self, s: &ServiceConfig, now: Instant) -> Member<'_> {
        Member {
            ramp: self.ramp_since.map_or(1.0, |since| {
                weights::ramp(now.saturating_duration_since(since), s.slow_start)
            }),
            ..self.counted()
        }
    }

    /// [`MemberState::view`] without the slow start, which plays no part in [`Totals`].
    fn counted(&self) -> Member<'_> {
        Member {
            zone: &self.zone,
            weight: self.weight,
            draining: self.draining(),
            healthy: self.healthy(),
            ramp: 1.0,
        }
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
            drain_reported: false,
            serving: false,
            ramp_since: None,
            passive: Window::default(),
            passive_ejected: false,
            refusal_logged: None,
            flap: Flap::default(),
            record: ProbeRecord::default(),
        };
        m.serving = m.eligible();
        m
    }
}

/// A backend gone from the config: its flows may continue for the deregistration delay.
fn retire(
    at: &BackendRef,
    m: &mut MemberState,
    s: &ServiceConfig,
    now: Instant,
    events: &mut Vec<Event>,
) {
    if m.retired_at.is_none() {
        let detail = format!(
            "removed from the config; its flows may continue for {}",
            duration::format(s.deregistration_delay)
        );
        info!("backend {at}: {detail}");
        // Already draining: its drain goes on, and its drained event is not repeated.
        if !m.draining() {
            events.push(Event::backend(
                EventKind::BackendDraining,
                at,
                &m.zone,
                detail,
            ));
        }
        m.retired_at = Some(now);
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
    events: &mut Vec<Event>,
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
            m.drain_reported = false;
        }
        BackendState::Draining if returning || m.state != BackendState::Draining => {
            let detail = format!(
                "draining (no new flows; existing flows may continue for {})",
                duration::format(s.deregistration_delay)
            );
            info!("backend {at}: {detail}");
            events.push(Event::backend(
                EventKind::BackendDraining,
                at,
                &b.zone,
                detail,
            ));
            m.draining_since = Some(now);
            m.purged = false;
            m.drain_reported = false;
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
    passive: BTreeMap<String, PassiveCounts>,
    /// Per service, how many members took new flows at the last refresh (`serving`):
    /// kept as members come, go and are refreshed, so that refreshing one backend does
    /// not count its whole service.
    serving: BTreeMap<String, usize>,
    /// Lifecycle events noted since the last [`Fleet::take_events`], in order.
    events: Vec<Event>,
    /// Per service, what its members add up to in the rules that choose its mode
    /// ([`Totals`]): kept through a change of one backend, dropped on any other change
    /// and counted again when next asked for, so that a change of one backend tells
    /// whether its service's mode changed without a walk of the service.
    totals: BTreeMap<String, Totals>,
}

/// Passive ejections of one service since lbd started (for `/metrics`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassiveCounts {
    pub ejected: u64,
    /// Ejections the cap (or the last healthy backend) refused.
    pub refused: u64,
    /// Flap-damping holds refused because the backend was its service's last one taking
    /// new flows.
    pub flap_refused: u64,
}

/// How many of `total` backends passive signals may hold ejected at `percent`: the share
/// rounded down, but at least one (as Envoy does), so that a small service is not left
/// without passive ejection; 0 percent ejects none.
pub fn ejection_cap(total: usize, percent: u32) -> usize {
    if percent == 0 {
        return 0;
    }
    (total * percent as usize / 100).max(1)
}

/// Logs what one probe result did to backend `at` (now `m`, `before` it was `before`):
/// a transition with its cause, a new flap hold, a pass while held, or the first
/// failure toward the threshold.
fn log_probe(
    at: &BackendRef,
    m: &MemberState,
    before: Health,
    flap: FlapChange,
    change: Change,
    outcome: &Outcome,
    h: &HealthConfig,
) {
    let after = m.verdict();
    let window = h.flap_window;
    if before != after {
        let why = transition_reason(flap, outcome, window);
        if after == Health::Healthy {
            info!("backend {at}: {before} -> {after} ({why})");
        } else {
            warn!("backend {at}: {before} -> {after} ({why})");
        }
    } else if let FlapChange::Held { flips } = flap {
        warn!(
            "backend {at}: flapping ({flips} flips between passing and failing in the last {window} probes): held {after} until {window} in a row pass"
        );
    } else if m.flap.held()
        && change
            == (Change::Became {
                from: Health::Unhealthy,
                to: Health::Healthy,
            })
    {
        info!(
            "backend {at}: probes pass again, but it is held as flapping until {window} in a row pass"
        );
    } else if change == Change::FirstFailure && !m.flap.held() {
        if let Err(failure) = outcome {
            let threshold = h.unhealthy_threshold;
            info!("backend {at}: probe failed ({failure}), 1 of {threshold} toward unhealthy");
        }
    }
}

/// Why one probe result changed a backend's verdict, in words.
fn transition_reason(flap: FlapChange, outcome: &Outcome, window: u8) -> String {
    match (flap, outcome) {
        (FlapChange::Held { flips }, _) => format!(
            "flapping: {flips} flips between passing and failing in the last {window} probes; held until {window} in a row pass"
        ),
        (FlapChange::Released, _) => {
            format!("flapping stopped: {window} consecutive probes passed")
        }
        (FlapChange::Nothing, Ok(())) => "consecutive successful probes".to_string(),
        (FlapChange::Nothing, Err(failure)) => failure.to_string(),
    }
}

fn backend_ref(service: &ServiceConfig, address: std::net::IpAddr, port: u16) -> BackendRef {
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
        self.passive
            .retain(|name, _| config.services.iter().any(|s| &s.name == name));
        self.serving
            .retain(|name, _| config.services.iter().any(|s| &s.name == name));
        self.totals.clear();
        for s in &config.services {
            if let Some(before) = old.get(&s.name) {
                self.note_zone_changes(before.drained_zones.clone(), s);
            }
            self.reconfigure_one(s, !old.contains_key(&s.name), now);
        }
    }

    /// [`Fleet::reconfigure`] when only service `name` changed: its backends alone are
    /// updated. The caller checks that the set of services is the same; a service the
    /// fleet does not know is handled as a new one.
    pub fn reconfigure_service(&mut self, config: &Config, name: &str, now: Instant) {
        if let Some(s) = config.services.iter().find(|s| s.name == name) {
            let new_service = !self.services.contains_key(name);
            if let Some(before) = self.services.get(name) {
                self.note_zone_changes(before.drained_zones.clone(), s);
            }
            self.totals.remove(name);
            self.reconfigure_one(s, new_service, now);
        }
    }

    /// Drops backend `at` outright, with no deregistration delay: for taking back an add
    /// that never reached the data path, so no flow can be pinned to it (a removal would
    /// keep it retiring, holding a backend slot the data path never gave it).
    pub fn forget(&mut self, at: &BackendRef) {
        let before = self.contribution(at);
        if let Some(m) = self.members.remove(at) {
            self.count_serving(&at.service, m.serving, false);
        }
        self.recount(at, before);
    }

    /// What backend `at` adds to its service's [`Totals`] (nothing once it left).
    fn contribution(&self, at: &BackendRef) -> Totals {
        let (Some(m), Some(s)) = (self.members.get(at), self.services.get(&at.service)) else {
            return Totals::default();
        };
        Totals::of(&ZonePolicy::of(s, &self.local_zone), &m.counted())
    }

    /// Replaces what backend `at` added to its service's running totals, `before` it
    /// changed, with what it adds now.
    fn recount(&mut self, at: &BackendRef, before: Totals) {
        let after = self.contribution(at);
        if let Some(t) = self.totals.get_mut(&at.service) {
            t.remove(before);
            t.add(after);
        }
    }

    /// The [`Basis`] of service `name`'s weights (its mode), from its running totals,
    /// which are counted first if they were dropped.
    pub fn basis_of(&mut self, name: &str) -> Option<Basis> {
        let s = self.services.get(name)?;
        let policy = ZonePolicy::of(s, &self.local_zone);
        let totals = match self.totals.get(name) {
            Some(t) => *t,
            None => {
                let t = Self::count_totals(&self.members, name, &policy);
                self.totals.insert(name.to_string(), t);
                t
            }
        };
        Some(Basis::of(&policy, &totals))
    }

    /// Service `name`'s [`Totals`], counted member by member.
    fn count_totals(
        members: &BTreeMap<BackendRef, MemberState>,
        name: &str,
        policy: &ZonePolicy,
    ) -> Totals {
        let mut t = Totals::default();
        for (_, m) in Self::members_of(members, name) {
            t.add(Totals::of(policy, &m.counted()));
        }
        t
    }

    /// Backend `at`'s effective weight under `basis`, its service's (see
    /// [`Fleet::basis_of`]); `None` once it left the fleet.
    pub fn weight_under(&self, at: &BackendRef, basis: Basis, now: Instant) -> Option<f64> {
        let m = self.members.get(at)?;
        let s = self.services.get(&at.service)?;
        let policy = ZonePolicy::of(s, &self.local_zone);
        Some(basis.weight(&policy, &m.view(s, now)))
    }

    /// The zone of backend `at` if it was removed and its flows still drain (its entry
    /// in [`Fleet::overlay`]'s retiring backends).
    pub fn retiring_zone(&self, at: &BackendRef) -> Option<&str> {
        self.members
            .get(at)
            .filter(|m| m.retired_at.is_some())
            .map(|m| m.zone.as_str())
    }

    /// Whether each kept running total is what counting the members gives (for the
    /// tests that hold the running totals to the walk).
    #[cfg(test)]
    pub fn totals_agree(&self) -> bool {
        self.totals.iter().all(|(name, kept)| {
            let Some(s) = self.services.get(name) else {
                return false;
            };
            let policy = ZonePolicy::of(s, &self.local_zone);
            Self::count_totals(&self.members, name, &policy) == *kept
        })
    }

    /// Moves service `name`'s count of serving members from `before` to `after` for one
    /// member.
    fn count_serving(&mut self, name: &str, before: bool, after: bool) {
        if before == after {
            return;
        }
        let count = self.serving.entry(name.to_string()).or_default();
        if after {
            *count += 1;
        } else {
            *count -= 1;
        }
    }

    /// [`Fleet::reconfigure_service`] when only backend `at` changed (added, removed, or
    /// one of its fields): that backend alone is updated, so the cost does not grow with
    /// the service. The caller checks that the fleet knows the service.
    pub fn reconfigure_backend(&mut self, config: &Config, at: &BackendRef, now: Instant) {
        let Some(s) = config.services.iter().find(|s| s.name == at.service) else {
            return;
        };
        let before = self.contribution(at);
        match s
            .backends
            .iter()
            .find(|b| b.address == at.address && b.port == at.port)
        {
            Some(b) => {
                self.reconfigure_member(s, b, false, now);
            }
            None => {
                if let Some(m) = self.members.get_mut(at) {
                    retire(at, m, s, now, &mut self.events);
                }
            }
        }
        self.recount(at, before);
    }

    /// Notes the zones service `s` drains or undrains, against `before`.
    fn note_zone_changes(&mut self, before: Vec<String>, s: &ServiceConfig) {
        let changes = events::zone_changes(&s.name, &before, &s.drained_zones);
        self.events.extend(changes);
    }

    fn reconfigure_one(&mut self, s: &ServiceConfig, new_service: bool, now: Instant) {
        let mut configured = BTreeSet::new();
        for b in &s.backends {
            configured.insert(self.reconfigure_member(s, b, new_service, now));
        }
        let ours = self
            .members
            .range_mut(service_start(&s.name)..)
            .take_while(|(at, _)| at.service == s.name);
        for (at, m) in ours {
            if !configured.contains(at) {
                retire(at, m, s, now, &mut self.events);
            }
        }
        self.services.insert(s.name.clone(), s.clone());
    }

    /// Backend `b` of service `s` as the config now has it: updated, or added.
    fn reconfigure_member(
        &mut self,
        s: &ServiceConfig,
        b: &BackendConfig,
        new_service: bool,
        now: Instant,
    ) -> BackendRef {
        let at = backend_ref(s, b.address, b.port);
        match self.members.get_mut(&at) {
            Some(m) => update(&at, m, s, b, now, &mut self.events),
            None => {
                let m = MemberState::new(s, b, new_service, now);
                if !new_service {
                    info!(
                        "backend {at}: added, unknown until {} consecutive successful probes",
                        s.health.healthy_threshold
                    );
                }
                self.count_serving(&s.name, false, m.serving);
                self.members.insert(at.clone(), m);
            }
        }
        at
    }

    /// A probe result; true when the backend's eligibility for new flows changed.
    pub fn observe(
        &mut self,
        at: &BackendRef,
        outcome: &Outcome,
        latency: Duration,
        now: Instant,
    ) -> bool {
        let Some(m) = self.members.get_mut(at) else {
            return false;
        };
        if m.retired_at.is_some() {
            return false;
        }
        m.record.record(outcome, latency, now);
        let counted = self.contribution(at);
        let m = self.members.get_mut(at).expect("looked up above");
        let h = &self.services[&at.service].health;
        let (before, serving_before) = (m.verdict(), m.healthy());
        let mut flap = m
            .flap
            .observe(outcome.is_ok(), h.flap_window.into(), h.flap_flips.into());
        let change = m.machine.observe(outcome);
        if let FlapChange::Held { flips } = flap {
            if self.refuse_lone_hold(at, flips, now) {
                flap = FlapChange::Nothing;
            }
        }
        let h = &self.services[&at.service].health;
        let m = self.members.get_mut(at).expect("looked up above");
        let after = m.verdict();
        if before != after && after == Health::Healthy {
            m.passive.clear();
            m.passive_ejected = false;
        }
        log_probe(at, m, before, flap, change, outcome, h);
        if before != after {
            let kind = match after {
                Health::Healthy => EventKind::BackendHealthy,
                Health::Unhealthy | Health::Unknown => EventKind::BackendUnhealthy,
            };
            let why = transition_reason(flap, outcome, h.flap_window);
            self.events.push(Event::backend(kind, at, &m.zone, why));
        }
        let changed = serving_before != m.healthy();
        self.recount(at, counted);
        changed
    }

    /// A new flap hold of `at`, refused when no other backend of its service takes new
    /// flows: damping takes a backend out early and, like passive ejection, must never
    /// take the last one that serves (a health endpoint flapping on every backend would
    /// otherwise be an outage). Only a new hold walks the service. True when refused.
    fn refuse_lone_hold(&mut self, at: &BackendRef, flips: u32, now: Instant) -> bool {
        let others_serve = Self::members_of(&self.members, &at.service)
            .any(|(other, o)| other != at && o.retired_at.is_none() && o.eligible());
        if others_serve {
            return false;
        }
        let m = self.members.get_mut(at).expect("a member on probation");
        m.flap.refuse_hold();
        self.passive
            .entry(at.service.clone())
            .or_default()
            .flap_refused += 1;
        if m.refusal_logged
            .is_none_or(|t| now >= t + REFUSAL_LOG_EVERY)
        {
            m.refusal_logged = Some(now);
            warn!(
                "backend {at}: flapping ({flips} flips in the last {} probes), but not held out: it is the last backend of its service taking new flows",
                self.services[&at.service].health.flap_window
            );
        }
        true
    }

    /// One reading of the data path's counters for each backend of service `name`;
    /// true when that ejected a backend. Ejections stop at the service's cap
    /// ([`ejection_cap`]) and never take its last healthy backend; a refused one is
    /// logged and counted.
    pub fn sample_service(
        &mut self,
        name: &str,
        readings: &[(BackendRef, BackendSignals)],
        now: Instant,
    ) -> bool {
        let Some(s) = self.services.get(name) else {
            return false;
        };
        let h = &s.health;
        let ratio = h.passive_failure_ratio(s.stateless_return);
        let (mut total, mut ejected, mut eligible) = (0, 0, 0);
        for (_, m) in Self::members_of(&self.members, name).filter(|(_, m)| m.retired_at.is_none())
        {
            total += 1;
            ejected += usize::from(m.passive_ejected && m.verdict() == Health::Unhealthy);
            eligible += usize::from(m.eligible());
        }
        let cap = ejection_cap(total, h.passive_max_ejection_percent.into());
        let counts = self.passive.entry(name.to_string()).or_default();
        let mut any = false;
        for (at, signals) in readings {
            let Some(m) = self.members.get_mut(at) else {
                continue;
            };
            let signal = if s.protocol == Protocol::Udp {
                Failures::Unreachable
            } else if s.mode.is_dsr() {
                Failures::Retransmits
            } else {
                Failures::Unanswered
            };
            let Some(why) = m
                .passive
                .sample(*signals, signal, ratio, h.passive_min_attempts)
            else {
                continue;
            };
            if !m.eligible() {
                continue;
            }
            if ejected >= cap || eligible <= 1 {
                counts.refused += 1;
                let quiet = m
                    .refusal_logged
                    .is_some_and(|t| now.saturating_duration_since(t) < REFUSAL_LOG_EVERY);
                if !quiet {
                    m.refusal_logged = Some(now);
                    let limit = if eligible <= 1 {
                        "it is the last healthy backend".to_string()
                    } else {
                        format!(
                            "{ejected} of {total} backends are already ejected by passive signals (passive_max_ejection_percent {}%)",
                            h.passive_max_ejection_percent
                        )
                    };
                    warn!("backend {at}: passive ejection refused ({why}): {limit}");
                }
                continue;
            }
            let from = m.verdict();
            m.machine.eject();
            m.passive_ejected = true;
            counts.ejected += 1;
            ejected += 1;
            eligible -= 1;
            any = true;
            warn!("backend {at}: {from} -> unhealthy (passive: {why})");
            if from != Health::Unhealthy {
                self.events.push(Event::backend(
                    EventKind::BackendUnhealthy,
                    at,
                    &m.zone,
                    format!("passive: {why}"),
                ));
            }
        }
        if any {
            self.totals.remove(name);
        }
        any
    }

    /// The lifecycle events noted since the last call, in order.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// Draining or removed backends whose [`EventKind::BackendDrained`] is still to
    /// come: the caller looks at their active flows.
    pub fn drains_pending(&self) -> Vec<BackendRef> {
        self.members
            .iter()
            .filter(|(_, m)| m.draining() && !m.drain_reported)
            .map(|(at, _)| at.clone())
            .collect()
    }

    /// Notes that draining backend `at` has no flow left (once per drain: a later call
    /// for the same drain notes nothing). True when noted.
    pub fn report_drained(&mut self, at: &BackendRef, detail: String) -> bool {
        let Some(m) = self.members.get_mut(at) else {
            return false;
        };
        if !m.draining() || m.drain_reported {
            return false;
        }
        m.drain_reported = true;
        info!("backend {at}: drained: {detail}");
        let event = Event::backend(EventKind::BackendDrained, at, &m.zone, detail);
        self.events.push(event);
        true
    }

    /// Passive ejections and refusals per service since lbd started.
    pub fn passive_counts(&self) -> &BTreeMap<String, PassiveCounts> {
        &self.passive
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
        let names: Vec<String> = self.services.keys().cloned().collect();
        for name in &names {
            self.refresh_service(name, now);
        }
    }

    /// [`Fleet::refresh`] for the backends of one service.
    pub fn refresh_service(&mut self, name: &str, now: Instant) {
        let Some(s) = self.services.get(name) else {
            return;
        };
        let serving_before = Self::members_of(&self.members, name)
            .filter(|(_, m)| m.serving)
            .count();
        let ours = self
            .members
            .range_mut(service_start(name)..)
            .take_while(|(at, _)| at.service == name);
        let mut serving_after = 0;
        for (at, m) in ours {
            refresh_member(at, m, s, serving_before, now);
            serving_after += usize::from(m.serving);
        }
        self.serving.insert(name.to_string(), serving_after);
    }

    /// [`Fleet::refresh_service`] after a change of backend `at` alone: the others were
    /// refreshed after their own last change, so only `at` is, and its cost does not grow
    /// with the service. (A finished slow start of another backend is left for the tick
    /// that follows it: its weight is already whole.)
    pub fn refresh_backend(&mut self, at: &BackendRef, now: Instant) {
        let Some(s) = self.services.get(&at.service) else {
            return;
        };
        let serving_before = self.serving.get(&at.service).copied().unwrap_or(0);
        let Some(m) = self.members.get_mut(at) else {
            return;
        };
        let before = m.serving;
        refresh_member(at, m, s, serving_before, now);
        let after = m.serving;
        self.count_serving(&at.service, before, after);
    }

    /// Whether each service's count of serving members is what counting them gives (for
    /// the tests that hold the running count to the walk).
    #[cfg(test)]
    pub fn serving_counts_agree(&self) -> bool {
        self.services.keys().all(|name| {
            let counted = Self::members_of(&self.members, name)
                .filter(|(_, m)| m.serving)
                .count();
            self.serving.get(name).copied().unwrap_or(0) == counted
        })
    }

    /// Effective weights of every service's backends (see [`weights::effective`]).
    pub fn weights(&self, now: Instant) -> BTreeMap<String, ServiceWeights> {
        self.services
            .keys()
            .filter_map(|name| Some((name.clone(), self.service_weights(name, now)?)))
            .collect()
    }

    /// Effective weights of the backends of one service.
    pub fn service_weights(&self, name: &str, now: Instant) -> Option<ServiceWeights> {
        let (mode, backends) = self.service_weights_of(name, now)?;
        Some(ServiceWeights {
            mode,
            backends: backends
                .into_iter()
                .map(|(at, w)| (at.clone(), w))
                .collect(),
        })
    }

    /// [`Fleet::service_weights`], borrowing the backends' names rather than copying
    /// them: a change of one backend then allocates nothing per backend of its service.
    pub fn service_weights_of<'a>(
        &'a self,
        name: &'a str,
        now: Instant,
    ) -> Option<(Mode, Vec<(&'a BackendRef, f64)>)> {
        let s = self.services.get(name)?;
        let ours: Vec<(&BackendRef, &MemberState)> =
            Self::members_of(&self.members, name).collect();
        let members: Vec<Member> = ours.iter().map(|(_, m)| m.view(s, now)).collect();
        let w = weights::effective(&ZonePolicy::of(s, &self.local_zone), &members);
        Some((
            w.mode,
            ours.into_iter().map(|(at, _)| at).zip(w.weights).collect(),
        ))
    }

    /// The overlay the controller applies: ring weights and retiring backends (the
    /// runtime adds which auto SYN proxies are on).
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
            syn_proxy_on: Default::default(),
        }
    }

    /// The removed backends of service `name` whose flows still drain, with their zone
    /// (its part of [`Fleet::overlay`]).
    pub fn retiring_of<'a>(
        &'a self,
        name: &'a str,
    ) -> impl Iterator<Item = (&'a BackendRef, &'a str)> + 'a {
        Self::members_of(&self.members, name)
            .filter(|(_, m)| m.retired_at.is_some())
            .map(|(at, m)| (at, m.zone.as_str()))
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
            if let Some(m) = self.members.remove(&at) {
                self.count_serving(&at.service, m.serving, false);
                let waited = self
                    .services
                    .get(&at.service)
                    .map_or(Duration::ZERO, |s| s.deregistration_delay);
                let mut detail = format!(
                    "deregistration delay of {} passed; its slot is freed",
                    duration::format(waited)
                );
                if !m.drain_reported {
                    detail.push_str("; flows still open are purged");
                }
                let event = Event::backend(EventKind::BackendDeregistered, &at, &m.zone, detail);
                self.events.push(event);
            }
            self.totals.remove(&at.service);
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

    /// The probed backends of service `name` (see [`Fleet::probed`]).
    pub fn probed_of<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a BackendRef> + 'a {
        Self::members_of(&self.members, name)
            .filter(|(_, m)| m.retired_at.is_none())
            .map(|(at, _)| at)
    }

    pub fn service(&self, name: &str) -> Option<&ServiceConfig> {
        self.services.get(name)
    }

    pub fn health(&self, at: &BackendRef) -> Option<Health> {
        self.members.get(at).map(|m| m.verdict())
    }

    /// What was kept of a backend's probes.
    pub fn probe_record(&self, at: &BackendRef) -> Option<&ProbeRecord> {
        self.members.get(at).map(|m| &m.record)
    }

    /// The zone of a configured backend (`None` once it was removed).
    pub fn zone(&self, at: &BackendRef) -> Option<&str> {
        self.members
            .get(at)
            .filter(|m| m.retired_at.is_none())
            .map(|m| m.zone.as_str())
    }

    /// Whether flap damping holds a backend out.
    pub fn flapping(&self, at: &BackendRef) -> bool {
        self.members.get(at).is_some_and(|m| m.flap.held())
    }

    pub fn local_zone(&self) -> &str {
        &self.local_zone
    }

    /// The services where time alone can change a weight now: a slow start is ramping.
    pub fn ramping_services(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for (at, m) in &self.members {
            if m.ramp_since.is_some() && !out.contains(&at.service) {
                out.insert(at.service.clone());
            }
        }
        out
    }
}

/// One member of service `s` at a refresh: it starts its slow start when it starts
/// serving while `serving_before` members of its service already did (otherwise there is
/// nothing to ramp from), and ends it when the window has passed.
fn refresh_member(
    at: &BackendRef,
    m: &mut MemberState,
    s: &ServiceConfig,
    serving_before: usize,
    now: Instant,
) {
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

/// How often a passive ejection refused again and again is logged per backend.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(60);

/// The smallest key of service `name`'s backends.
fn service_start(name: &str) -> BackendRef {
    BackendRef::first_of(name)
}

#[cfg(test)]
mod tests;
