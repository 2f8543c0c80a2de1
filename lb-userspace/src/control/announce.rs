//! Announcing VIPs: each step reads whether each VIP can be served (the data path
//! attached, the node not drained, a service of the VIP with enough healthy active
//! backends), lets [`crate::model::announce`] decide, and adds or removes the /32s (/128s)
//! through a [`VipAddresses`]. Only VIPs inside `announce.vip_ranges` are ever touched.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    time::{Duration, Instant},
};

use crate::{
    control::{fleet::Fleet, health::machine::Health},
    dataplane::VipAddresses,
    model::{
        announce::{Announcer, Change, Readiness},
        config::{AnnounceConfig, BackendState, Config},
        plan::BackendRef,
    },
};

/// What a step did, for the log and the metrics.
#[derive(Debug)]
pub enum Event {
    Announced {
        vip: IpAddr,
        services: Vec<String>,
        serving_for: Duration,
    },
    Withdrawn {
        vip: IpAddr,
        services: Vec<String>,
        why: String,
    },
    /// The change failed; it is tried again at every step. `first`: the first failure
    /// since the VIP's last successful change (log it once).
    Failed {
        vip: IpAddr,
        announce: bool,
        error: anyhow::Error,
        first: bool,
    },
    /// Renewing a /32's lifetime failed (retried every second; the kernel removes the
    /// address if it keeps failing for the lifetime); `first` as above.
    RenewFailed {
        vip: IpAddr,
        error: anyhow::Error,
        first: bool,
    },
    /// Listing the VIPs held on `lo` failed (retried every resync); `first` as above.
    ListFailed { error: anyhow::Error, first: bool },
}

/// The VIPs this node announces, and where.
pub struct Announcements<V> {
    addresses: V,
    decider: Announcer,
    failing: BTreeSet<IpAddr>,
    /// VIPs whose last renewal failed (logged once until one succeeds).
    renewals_failing: BTreeSet<IpAddr>,
    listing_failed: bool,
}

impl<V: VipAddresses> Announcements<V> {
    /// Starts from what is held now: the VIPs in range that a previous lbd announced
    /// stay announced until this lbd's probes decide (returned, for the log).
    pub fn start(addresses: V, config: &AnnounceConfig) -> anyhow::Result<(Self, Vec<IpAddr>)> {
        let held: Vec<IpAddr> = addresses
            .announced()?
            .into_iter()
            .filter(|vip| config.in_range(*vip))
            .collect();
        let mut decider = Announcer::default();
        decider.adopt(held.iter().copied());
        let announcements = Self {
            addresses,
            decider,
            failing: BTreeSet::new(),
            renewals_failing: BTreeSet::new(),
            listing_failed: false,
        };
        Ok((announcements, held))
    }

    /// One step at `now` (see the module docs).
    pub fn step(
        &mut self,
        config: &Config,
        fleet: &Fleet,
        attached: bool,
        now: Instant,
    ) -> Vec<Event> {
        // Announcing off (the default) costs the loop nothing.
        if config.announce.vip_ranges.is_empty() && self.decider.announced().next().is_none() {
            return Vec::new();
        }
        self.addresses.set_lifetime(config.announce.lifetime);
        let ready = readiness(config, fleet, attached);
        let states = ready
            .iter()
            .map(|(vip, (r, _))| (*vip, r.clone()))
            .collect();
        let changes = self.decider.decide(now, config.announce.hold_up, &states);
        let mut events = Vec::new();
        for change in changes {
            let (vip, made) = match &change {
                Change::Announce { vip, .. } => (*vip, self.addresses.announce(*vip)),
                Change::Withdraw { vip, .. } => (*vip, self.addresses.withdraw(*vip)),
            };
            let services = ready.get(&vip).map(|(_, s)| s.clone()).unwrap_or_default();
            match made {
                Ok(()) => {
                    self.failing.remove(&vip);
                    events.push(match change {
                        Change::Announce { serving_for, .. } => Event::Announced {
                            vip,
                            services,
                            serving_for,
                        },
                        Change::Withdraw { why, .. } => Event::Withdrawn { vip, services, why },
                    });
                }
                Err(error) => {
                    self.decider.failed(&change);
                    events.push(Event::Failed {
                        vip,
                        announce: matches!(change, Change::Announce { .. }),
                        error,
                        first: self.failing.insert(vip),
                    });
                }
            }
        }
        events
    }

    /// Puts `lo` back in line with the decisions when something else changed it: a VIP
    /// lbd announced but whose /32 was removed (`ip addr del`, or its lifetime lapsed)
    /// is added again, and a /32 with lbd's label in range that lbd does not announce
    /// (added by hand with the label) is removed. Each repair is logged like a change.
    /// Every announced /32 still there has its lifetime renewed.
    pub fn resync(&mut self, config: &AnnounceConfig) -> Vec<Event> {
        self.addresses.set_lifetime(config.lifetime);
        if config.vip_ranges.is_empty() && self.decider.announced().next().is_none() {
            return Vec::new();
        }
        let held: BTreeSet<IpAddr> = match self.addresses.announced() {
            Ok(held) => held.into_iter().filter(|v| config.in_range(*v)).collect(),
            Err(error) => {
                let first = !std::mem::replace(&mut self.listing_failed, true);
                return vec![Event::ListFailed { error, first }];
            }
        };
        self.listing_failed = false;
        let mut events = Vec::new();
        let kept: Vec<IpAddr> = held
            .iter()
            .copied()
            .filter(|v| self.decider.is_announced(*v))
            .collect();
        for vip in kept {
            match self.addresses.renew(vip) {
                Ok(()) => {
                    self.renewals_failing.remove(&vip);
                }
                Err(error) => events.push(Event::RenewFailed {
                    vip,
                    error,
                    first: self.renewals_failing.insert(vip),
                }),
            }
        }
        let missing: Vec<IpAddr> = self
            .decider
            .announced()
            .filter(|vip| !held.contains(vip) && !self.failing.contains(vip))
            .collect();
        for vip in missing {
            events.push(match self.addresses.announce(vip) {
                Ok(()) => Event::Announced {
                    vip,
                    services: Vec::new(),
                    serving_for: Duration::ZERO,
                },
                Err(error) => Event::Failed {
                    vip,
                    announce: true,
                    error,
                    first: self.failing.insert(vip),
                },
            });
        }
        for vip in held.into_iter().filter(|v| !self.decider.is_announced(*v)) {
            events.push(match self.addresses.withdraw(vip) {
                Ok(()) => Event::Withdrawn {
                    vip,
                    services: Vec::new(),
                    why: "it was on lo with lbd's label although lbd does not announce it".into(),
                },
                Err(error) => Event::Failed {
                    vip,
                    announce: false,
                    error,
                    first: self.failing.insert(vip),
                },
            });
        }
        events
    }

    pub fn is_announced(&self, vip: IpAddr) -> bool {
        self.decider.is_announced(vip)
    }

    pub fn addresses(&self) -> &V {
        &self.addresses
    }
}

/// Whether each VIP in range can be served, and the services that have it.
pub fn readiness(
    config: &Config,
    fleet: &Fleet,
    attached: bool,
) -> BTreeMap<IpAddr, (Readiness, Vec<String>)> {
    let announce = &config.announce;
    let mut by_vip: BTreeMap<IpAddr, (Vec<Readiness>, Vec<String>)> = BTreeMap::new();
    for service in config.services.iter().filter(|s| announce.in_range(s.vip)) {
        let vip = service.vip;
        let (mut healthy, mut unknown, mut active) = (0u32, 0u32, 0u32);
        for b in &service.backends {
            if b.state != BackendState::Active {
                continue;
            }
            active += 1;
            let at = BackendRef {
                service: service.name.clone(),
                address: b.address,
                port: b.port,
            };
            match fleet.health(&at) {
                Some(Health::Healthy) => healthy += 1,
                Some(Health::Unknown) | None => unknown += 1,
                Some(Health::Unhealthy) => {}
            }
        }
        let needed = announce.min_healthy_backends;
        let state = if healthy >= needed {
            Readiness::Serving
        } else if unknown > 0 && healthy + unknown >= needed {
            Readiness::Undecided
        } else {
            Readiness::Not(format!(
                "{}: {healthy} of {active} active backends healthy, {needed} needed",
                service.name
            ))
        };
        let entry = by_vip.entry(vip).or_default();
        entry.0.push(state);
        entry.1.push(service.name.clone());
    }
    by_vip
        .into_iter()
        .map(|(vip, (states, services))| {
            let state = if let Some(why) = announce.drained_why() {
                Readiness::Not(why.into())
            } else if !attached {
                Readiness::Not("the data path is not attached to every configured NIC".into())
            } else {
                combine(states)
            };
            (vip, (state, services))
        })
        .collect()
}

/// A VIP serves while any of its services does (withdrawing it would take the serving
/// ones down with the rest).
fn combine(states: Vec<Readiness>) -> Readiness {
    if states.contains(&Readiness::Serving) {
        return Readiness::Serving;
    }
    if states.contains(&Readiness::Undecided) {
        return Readiness::Undecided;
    }
    let why: Vec<String> = states
        .into_iter()
        .filter_map(|s| match s {
            Readiness::Not(why) => Some(why),
            _ => None,
        })
        .collect();
    Readiness::Not(why.join("; "))
}

#[cfg(test)]
#[path = "announce_tests.rs"]
mod tests;
