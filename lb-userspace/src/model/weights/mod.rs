//! Effective weights: how much of a service's new flows each backend should get right
//! now, from the configured weights and zone policy and the observed state (draining,
//! health, slow start). Pure; `tests.rs` holds the rules as tables with the numbers
//! written out.
//!
//! The rules, in order:
//! 1. A backend is a *candidate* when it is active (not draining or removed), healthy,
//!    and its zone is neither drained nor weighted 0. A candidate's weight is
//!    `weight x zone weight x slow-start ramp`; everyone else gets 0.
//! 2. cross_zone on: every candidate keeps its weight.
//! 3. cross_zone off: only the local zone's candidates keep theirs, while the local
//!    zone's healthy share of configured weight is at least `zone_failover_threshold`
//!    and it has a candidate at all; otherwise new flows spill to the candidates of
//!    every zone, by weight. So a zone outage never black-holes traffic.
//! 4. No candidate anywhere: fail open (every active backend outside drained zones by
//!    `weight x zone weight`, or every active backend by weight if that leaves none) or
//!    fail closed (nothing).
use std::{collections::BTreeSet, fmt, time::Duration};

use crate::model::config::{OnAllUnhealthy, ServiceConfig, ZoneWeights};

/// The zone rules of one service, as seen from one LB node.
#[derive(Debug, Clone)]
pub struct ZonePolicy<'a> {
    pub local_zone: &'a str,
    pub cross_zone: bool,
    pub zone_weights: &'a ZoneWeights,
    pub failover_threshold: f64,
    pub drained_zones: BTreeSet<&'a str>,
    pub on_all_unhealthy: OnAllUnhealthy,
}

impl<'a> ZonePolicy<'a> {
    pub fn of(service: &'a ServiceConfig, local_zone: &'a str) -> Self {
        Self {
            local_zone,
            cross_zone: service.cross_zone,
            zone_weights: &service.zone_weights,
            failover_threshold: service.zone_failover_threshold,
            drained_zones: service.drained_zones.iter().map(String::as_str).collect(),
            on_all_unhealthy: service.on_all_unhealthy,
        }
    }

    fn zone_weight(&self, zone: &str) -> f64 {
        self.zone_weights.get(zone).copied().unwrap_or(1.0)
    }

    /// A zone that may take new flows: not drained, not weighted 0.
    fn usable(&self, zone: &str) -> bool {
        !self.drained_zones.contains(zone) && self.zone_weight(zone) > 0.0
    }

    /// A candidate (rule 1): active, healthy, in a usable zone.
    fn candidate(&self, m: &Member) -> bool {
        !m.draining && m.healthy && self.usable(m.zone)
    }
}

/// One backend as the weight rules see it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Member<'a> {
    pub zone: &'a str,
    /// Configured weight.
    pub weight: u32,
    /// Draining or removed: keeps its flows, takes no new ones.
    pub draining: bool,
    /// Healthy (or not yet probed but assumed to serve).
    pub healthy: bool,
    /// Slow-start factor in (0, 1]; 1 when not ramping.
    pub ramp: f64,
}

/// Which rule decided a service's weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Healthy backends of every zone share by weight.
    CrossZone,
    /// Only the local zone's healthy backends.
    LocalZone,
    /// The local zone is short of healthy backends: every zone's healthy backends.
    Spill,
    /// No backend is healthy: every active backend, as if all were.
    FailOpen,
    /// No backend is healthy: new flows are dropped.
    FailClosed,
    /// No active backend at all: new flows are dropped.
    NoBackend,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::CrossZone => "cross-zone",
            Mode::LocalZone => "local zone only",
            Mode::Spill => "spilling to other zones",
            Mode::FailOpen => "fail open",
            Mode::FailClosed => "fail closed",
            Mode::NoBackend => "no active backend",
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Weights {
    pub mode: Mode,
    /// One per member, in order.
    pub weights: Vec<f64>,
}

pub fn effective(policy: &ZonePolicy, members: &[Member]) -> Weights {
    let totals = members.iter().fold(Totals::default(), |mut t, m| {
        t.add(Totals::of(policy, m));
        t
    });
    let basis = Basis::of(policy, &totals);
    Weights {
        mode: basis.mode,
        weights: members.iter().map(|m| basis.weight(policy, m)).collect(),
    }
}

/// What a service's members add up to in the rules that choose its [`Mode`]: kept as a
/// running sum, so that a change of one member tells whether the mode (and so any
/// other member's weight) can change without a walk of the service. Integer sums, so
/// that adding and taking away a member leaves exactly what counting gives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Candidates (rule 1), in any zone.
    pub candidates: u64,
    /// Configured weight of the local zone's active members (rule 3's whole).
    pub local_weight: u64,
    /// Configured weight of the local zone's candidates (rule 3's healthy share).
    pub local_candidate_weight: u64,
    /// Active members of a positive weight in zones that may take new flows (rule 4).
    pub usable_active: u64,
    /// Active members of a positive weight, in any zone (rule 4's last resort).
    pub active: u64,
}

impl Totals {
    /// What member `m` adds.
    pub fn of(policy: &ZonePolicy, m: &Member) -> Totals {
        let local = m.zone == policy.local_zone;
        let candidate = policy.candidate(m);
        let active = !m.draining && m.weight > 0;
        let weight = u64::from(m.weight);
        Totals {
            candidates: u64::from(candidate),
            local_weight: if !m.draining && local { weight } else { 0 },
            local_candidate_weight: if candidate && local { weight } else { 0 },
            usable_active: u64::from(active && policy.usable(m.zone)),
            active: u64::from(active),
        }
    }

    pub fn add(&mut self, t: Totals) {
        self.candidates += t.candidates;
        self.local_weight += t.local_weight;
        self.local_candidate_weight += t.local_candidate_weight;
        self.usable_active += t.usable_active;
        self.active += t.active;
    }

    pub fn remove(&mut self, t: Totals) {
        self.candidates -= t.candidates;
        self.local_weight -= t.local_weight;
        self.local_candidate_weight -= t.local_candidate_weight;
        self.usable_active -= t.usable_active;
        self.active -= t.active;
    }
}

/// What decides each member's weight besides the member itself: the mode, and in fail
/// open whether only drained or zero-weight zones are left. While it stays, a change of
/// one member changes that member's weight alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Basis {
    pub mode: Mode,
    /// Fail open with no active member in a usable zone: every active member by weight.
    any_zone: bool,
}

impl Basis {
    /// The basis of a service whose members add up to `t`.
    pub fn of(policy: &ZonePolicy, t: &Totals) -> Basis {
        let (mode, any_zone) = if t.candidates == 0 {
            if policy.on_all_unhealthy == OnAllUnhealthy::FailClosed {
                (Mode::FailClosed, false)
            } else if t.usable_active > 0 {
                (Mode::FailOpen, false)
            } else if t.active > 0 {
                // Only drained or zero-weight zones are left: they still beat dropping.
                (Mode::FailOpen, true)
            } else {
                (Mode::NoBackend, true)
            }
        } else if policy.cross_zone {
            (Mode::CrossZone, false)
        } else {
            let share = if t.local_weight > 0 {
                t.local_candidate_weight as f64 / t.local_weight as f64
            } else {
                0.0
            };
            if t.local_candidate_weight > 0 && share >= policy.failover_threshold {
                (Mode::LocalZone, false)
            } else {
                (Mode::Spill, false)
            }
        };
        Basis { mode, any_zone }
    }

    /// Member `m`'s effective weight under this basis.
    pub fn weight(&self, policy: &ZonePolicy, m: &Member) -> f64 {
        let base = || m.weight as f64 * policy.zone_weight(m.zone) * m.ramp;
        let candidate = policy.candidate(m);
        match self.mode {
            Mode::CrossZone | Mode::Spill if candidate => base(),
            Mode::LocalZone if candidate && m.zone == policy.local_zone => base(),
            Mode::FailOpen if !m.draining && self.any_zone => m.weight as f64,
            Mode::FailOpen if !m.draining && policy.usable(m.zone) => {
                m.weight as f64 * policy.zone_weight(m.zone)
            }
            _ => 0.0,
        }
    }
}

/// Effective weights in integer thousandths: the unit of the Maglev builder's weights,
/// the policy tables and the kernel's `weight_milli`.
pub const WEIGHT_SCALE: u32 = 1000;

/// Scale of [`ring_weight`]: effective weights keep three decimals in the Maglev
/// builder's integer weights.
pub const RING_WEIGHT_SCALE: f64 = WEIGHT_SCALE as f64;

/// The integer weight the Maglev builder gets. Multiplying every weight by one constant
/// leaves the builder's table unchanged, so shares still follow weights; a positive
/// weight never rounds down to 0, so a ramping backend always gets a few slots.
pub fn ring_weight(weight: f64) -> u32 {
    if weight.is_nan() || weight <= 0.0 {
        return 0;
    }
    (weight * RING_WEIGHT_SCALE)
        .round()
        .clamp(1.0, u32::MAX as f64) as u32
}

/// Steps of the slow-start ramp.
pub const RAMP_STEPS: u32 = 10;

/// The slow-start factor `elapsed` into a `window`: 1/10 at once, then one more tenth
/// every window/10, 1 at the end. Steps rather than a smooth line, so a ramp rewrites
/// the ring ten times and not on every tick.
pub fn ramp(elapsed: Duration, window: Duration) -> f64 {
    if window.is_zero() || elapsed >= window {
        return 1.0;
    }
    let step = (elapsed.as_secs_f64() / window.as_secs_f64() * RAMP_STEPS as f64).floor();
    ((step + 1.0) / RAMP_STEPS as f64).min(1.0)
}

#[cfg(test)]
mod tests;
