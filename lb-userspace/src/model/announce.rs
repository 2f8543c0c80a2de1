//! When a VIP is announced: the decision, per VIP, from whether its services can serve
//! now. lbd announces a VIP by holding its /32 (IPv6: /128) on `lo`, which the routing
//! daemon exports to the routers; see docs/tier.md.
//!
//! The rule, with hysteresis so a flapping service does not flap the route:
//! - a VIP is announced once it has been able to serve for `hold_up` without a break
//!   (a break restarts the count);
//! - it is withdrawn at once when it cannot serve (too few healthy backends, the data
//!   path detached, the node drained, or no service in range has it any more);
//! - while no verdict exists yet (every backend still unprobed, as after a restart),
//!   nothing changes: an lbd that restarts keeps the VIPs its predecessor announced
//!   ([`Announcer::adopt`]) until its own probes decide.
use std::{
    collections::BTreeMap,
    net::IpAddr,
    time::{Duration, Instant},
};

/// Whether a VIP can be served now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Serving,
    /// No verdict yet: keep what is.
    Undecided,
    /// Cannot serve, and why (for the log).
    Not(String),
}

/// A change to make to `lo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Add the /32: the VIP has been able to serve for `serving_for` (at least
    /// `hold_up`).
    Announce { vip: IpAddr, serving_for: Duration },
    /// Remove the /32, and why.
    Withdraw { vip: IpAddr, why: String },
}

#[derive(Debug, Clone, Default)]
struct VipState {
    /// Since when the VIP can serve without a break.
    serving_since: Option<Instant>,
    announced: bool,
}

/// The announcement state of every VIP lbd has seen.
#[derive(Debug, Clone, Default)]
pub struct Announcer {
    vips: BTreeMap<IpAddr, VipState>,
}

impl Announcer {
    /// VIPs found announced at start (left by the previous lbd): they stay announced
    /// until a verdict says they cannot be served.
    pub fn adopt(&mut self, vips: impl IntoIterator<Item = IpAddr>) {
        for vip in vips {
            self.vips.entry(vip).or_default().announced = true;
        }
    }

    /// One step at `now`: `readiness` holds every VIP that may be announced (the VIPs of
    /// services in a configured range); a VIP missing from it is withdrawn. Returns the
    /// changes, in address order; the caller makes them and reports failures with
    /// [`Announcer::failed`].
    pub fn decide(
        &mut self,
        now: Instant,
        hold_up: Duration,
        readiness: &BTreeMap<IpAddr, Readiness>,
    ) -> Vec<Change> {
        let mut changes = Vec::new();
        for (vip, ready) in readiness {
            let state = self.vips.entry(*vip).or_default();
            match ready {
                Readiness::Serving => {
                    let since = *state.serving_since.get_or_insert(now);
                    let serving_for = now.saturating_duration_since(since);
                    if !state.announced && serving_for >= hold_up {
                        state.announced = true;
                        changes.push(Change::Announce {
                            vip: *vip,
                            serving_for,
                        });
                    }
                }
                Readiness::Undecided => state.serving_since = None,
                Readiness::Not(why) => {
                    state.serving_since = None;
                    if state.announced {
                        state.announced = false;
                        changes.push(Change::Withdraw {
                            vip: *vip,
                            why: why.clone(),
                        });
                    }
                }
            }
        }
        let gone: Vec<IpAddr> = self
            .vips
            .keys()
            .filter(|vip| !readiness.contains_key(vip))
            .copied()
            .collect();
        for vip in gone {
            if self.vips.remove(&vip).is_some_and(|s| s.announced) {
                changes.push(Change::Withdraw {
                    vip,
                    why: "no service in an announced range has this VIP any more".into(),
                });
            }
        }
        changes.sort_by_key(|c| match c {
            Change::Announce { vip, .. } | Change::Withdraw { vip, .. } => *vip,
        });
        changes
    }

    /// `change` could not be made: the VIP is back in its previous state, so the next
    /// step tries again (an announce waits for no new hold-up).
    pub fn failed(&mut self, change: &Change) {
        match change {
            Change::Announce { vip, .. } => {
                if let Some(state) = self.vips.get_mut(vip) {
                    state.announced = false;
                }
            }
            Change::Withdraw { vip, .. } => {
                self.vips.entry(*vip).or_default().announced = true;
            }
        }
    }

    /// Withdraws every announced VIP (the node drained or detaching).
    pub fn withdraw_all(&mut self, why: &str) -> Vec<Change> {
        let mut changes = Vec::new();
        for (vip, state) in &mut self.vips {
            state.serving_since = None;
            if state.announced {
                state.announced = false;
                changes.push(Change::Withdraw {
                    vip: *vip,
                    why: why.to_string(),
                });
            }
        }
        changes
    }

    /// The VIPs announced now.
    pub fn announced(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.vips
            .iter()
            .filter(|(_, s)| s.announced)
            .map(|(vip, _)| *vip)
    }

    pub fn is_announced(&self, vip: IpAddr) -> bool {
        self.vips.get(&vip).is_some_and(|s| s.announced)
    }
}

#[cfg(test)]
#[path = "announce_tests.rs"]
mod tests;
