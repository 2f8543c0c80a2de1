//! The scaling signals of each service, taken with the once-a-second counter sample:
//! healthy backends per zone, active flows and new flows per second per healthy
//! backend, and, for a service with `scaling`, the desired backend count (see
//! `crate::model::scaling`), for `/metrics`.
use std::{collections::BTreeMap, time::Instant};

use crate::{
    control::fleet::Fleet,
    control::health::machine::Health,
    model::config::{BackendState, Config},
    model::desired::edit::BackendAddr,
    model::plan::BackendRef,
    model::scaling::{Load, Recommender},
    ops::stats::Snapshot,
};

/// One service's signals at the last sample.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalingView {
    pub service: String,
    /// Healthy active backends (not draining) per zone, every zone of the service named.
    pub healthy_by_zone: BTreeMap<String, u32>,
    /// `None` without a healthy backend.
    pub active_flows_per_healthy: Option<f64>,
    pub new_flows_per_second_per_healthy: Option<f64>,
    /// With `scaling` configured.
    pub desired_backends: Option<u32>,
}

#[derive(Debug, Default)]
pub struct Scaling {
    recommenders: BTreeMap<String, Recommender>,
    views: Vec<ScalingView>,
}

impl Scaling {
    /// Takes the sample `now`, with new-flow rates against `previous` (the sample
    /// before it, if any).
    pub fn update(
        &mut self,
        config: &Config,
        fleet: &Fleet,
        now: &Snapshot,
        previous: Option<&Snapshot>,
        at: Instant,
    ) {
        let secs = previous
            .map(|p| now.at.saturating_duration_since(p.at).as_secs_f64())
            .unwrap_or(0.0);
        self.recommenders
            .retain(|name, _| config.services.iter().any(|s| &s.name == name));
        self.views.clear();
        for s in &config.services {
            let mut healthy_by_zone = BTreeMap::new();
            let mut active_flows = 0;
            for b in &s.backends {
                let at = BackendRef {
                    service: s.name.clone(),
                    address: b.address,
                    port: b.port,
                };
                let healthy =
                    b.state == BackendState::Active && fleet.health(&at) == Some(Health::Healthy);
                *healthy_by_zone.entry(b.zone.clone()).or_insert(0) += u32::from(healthy);
                let key = (s.name.clone(), BackendAddr::from(b));
                active_flows += now.backends.get(&key).map_or(0, |b| b.active_flows);
            }
            let new_flows = |snap: &Snapshot| snap.services.get(&s.name).map(|c| c.new_flows);
            let new_per_second = match (new_flows(now), previous.and_then(new_flows)) {
                (Some(n), Some(p)) if secs > 0.0 => n.saturating_sub(p) as f64 / secs,
                _ => 0.0,
            };
            let healthy: u32 = healthy_by_zone.values().sum();
            let per_healthy = |v: f64| (healthy > 0).then(|| v / f64::from(healthy));
            let desired_backends = s.scaling.as_ref().map(|c| {
                let load = Load {
                    healthy_backends: healthy,
                    active_flows,
                    new_flows_per_second: new_per_second,
                };
                let r = self.recommenders.entry(s.name.clone()).or_default();
                r.update(c, &load, at)
            });
            if s.scaling.is_none() {
                self.recommenders.remove(&s.name);
            }
            self.views.push(ScalingView {
                service: s.name.clone(),
                healthy_by_zone,
                active_flows_per_healthy: per_healthy(active_flows as f64),
                new_flows_per_second_per_healthy: per_healthy(new_per_second),
                desired_backends,
            });
        }
    }

    pub fn views(&self) -> &[ScalingView] {
        &self.views
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use lb_common::counters::TrafficCounters;

    use super::*;
    use crate::{model::config, ops::stats::BackendSample};

    fn cfg(scaling: &str) -> Config {
        config::parse(&format!(
            "node: {{ zone: az-a }}\ninterfaces: [eth0]\nservices:\n  - name: web\n    vip: 10.0.0.100\n    port: 80\n    backends:\n      - {{ address: 10.1.0.11, port: 8080, zone: az-a }}\n      - {{ address: 10.1.0.12, port: 8080, zone: az-b }}\n      - {{ address: 10.1.0.13, port: 8080, zone: az-b, state: draining }}\n      - {{ address: 10.1.0.14, port: 8080, zone: az-c }}\n{scaling}"
        ))
        .unwrap()
    }

    fn at(last: u8) -> BackendRef {
        BackendRef {
            service: "web".into(),
            address: std::net::Ipv4Addr::new(10, 1, 0, last).into(),
            port: 8080,
        }
    }

    /// `new_flows` of the service and each backend's active flows, at `at`.
    fn snapshot(at: Instant, new_flows: u64, active: &[(u8, u64)]) -> Snapshot {
        let services = BTreeMap::from([(
            "web".to_string(),
            TrafficCounters {
                new_flows,
                ..TrafficCounters::default()
            },
        )]);
        let backends = active
            .iter()
            .map(|(last, flows)| {
                let b = at_addr(*last);
                let sample = BackendSample {
                    active_flows: *flows,
                    ..BackendSample::default()
                };
                (("web".to_string(), b), sample)
            })
            .collect();
        Snapshot {
            at,
            services,
            backends,
            reasons: Vec::new(),
            flow_entries: 0,
            flow_entries6: 0,
            flow_overflow_entries: 0,
        }
    }

    fn at_addr(last: u8) -> BackendAddr {
        BackendAddr {
            address: std::net::Ipv4Addr::new(10, 1, 0, last).into(),
            port: 8080,
        }
    }

    #[test]
    fn signals_count_healthy_active_backends_per_zone_and_divide_the_load_by_them() {
        let config = cfg(
            "    scaling: { target_active_flows_per_backend: 10, min_backends: 1, max_backends: 8, scale_in_cooldown: 60s }\n",
        );
        let t0 = Instant::now();
        let mut fleet = Fleet::new(&config, t0);
        // 11, 12 and the draining 13 healthy; 14 unhealthy.
        for last in [11, 12, 13] {
            for _ in 0..2 {
                fleet.observe(&at(last), &Ok(()), Duration::ZERO, t0);
            }
        }
        for _ in 0..2 {
            let failed = Err(crate::control::health::machine::Failure::Refused);
            fleet.observe(&at(14), &failed, Duration::ZERO, t0);
        }
        let mut scaling = Scaling::default();
        let first = snapshot(t0, 100, &[(11, 30), (12, 20), (13, 5), (14, 0)]);
        scaling.update(&config, &fleet, &first, None, t0);
        let t1 = t0 + Duration::from_secs(2);
        let second = snapshot(t1, 130, &[(11, 40), (12, 25), (13, 5), (14, 0)]);
        scaling.update(&config, &fleet, &second, Some(&first), t1);
        let v = &scaling.views()[0];
        let zones: Vec<(&str, u32)> = v
            .healthy_by_zone
            .iter()
            .map(|(z, n)| (z.as_str(), *n))
            .collect();
        assert_eq!(zones, [("az-a", 1), ("az-b", 1), ("az-c", 0)]);
        // 70 active flows (the draining backend's count too) over 2 healthy backends;
        // 30 new flows in 2 s over 2.
        assert_eq!(v.active_flows_per_healthy, Some(35.0));
        assert_eq!(v.new_flows_per_second_per_healthy, Some(7.5));
        // 70 flows at 10 each: 7, out at once from the 2 healthy ones.
        assert_eq!(v.desired_backends, Some(7));
    }

    #[test]
    fn without_scaling_or_healthy_backends_those_signals_are_absent() {
        let config = cfg("");
        let t0 = Instant::now();
        let fleet = Fleet::new(&config, t0);
        let mut scaling = Scaling::default();
        scaling.update(&config, &fleet, &snapshot(t0, 0, &[]), None, t0);
        let v = &scaling.views()[0];
        assert_eq!(
            v.healthy_by_zone.values().sum::<u32>(),
            0,
            "unknown is not healthy"
        );
        assert_eq!(v.active_flows_per_healthy, None);
        assert_eq!(v.desired_backends, None);
    }
}
