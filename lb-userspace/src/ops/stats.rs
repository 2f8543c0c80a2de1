//! Counters read from the data path, per service and backend, turned into the totals,
//! per-second rates and per-zone sums that `lbctl stats`/`top` and `/metrics` show.
//! Reading goes through [`Counters`], so the arithmetic is tested without a kernel.
use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use lb_common::counters::{TrafficCounters, REASONS};

use crate::{
    dataplane::Counters,
    model::config::Config,
    model::desired::edit::BackendAddr,
    model::plan::Plan,
    ops::views::{BackendStats, Counts, ReasonCount, ServiceStats, StatsView, ZoneStats},
};

/// One backend's counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct BackendSample {
    pub traffic: TrafficCounters,
    pub active_flows: u64,
}

/// Every counter at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub at: Instant,
    pub services: BTreeMap<String, TrafficCounters>,
    pub backends: BTreeMap<(String, BackendAddr), BackendSample>,
    pub reasons: Vec<u64>,
    pub flow_entries: u64,
    pub flow_entries6: u64,
    /// Of `flow_entries`, those in the LRU map behind the slots.
    pub flow_overflow_entries: u64,
}

impl Snapshot {
    /// Reads every counter of `plan`'s services and backends.
    pub fn read(plan: &Plan, source: &impl Counters) -> anyhow::Result<Snapshot> {
        let mut services = BTreeMap::new();
        for s in &plan.services {
            services.insert(s.name.clone(), source.service_counters(s.id)?);
        }
        let mut backends = BTreeMap::new();
        for b in &plan.backends {
            let at = BackendAddr {
                address: b.at.address,
                port: b.at.port,
            };
            backends.insert(
                (b.at.service.clone(), at),
                BackendSample {
                    traffic: source.backend_counters(b.id)?,
                    active_flows: source.active_flows(b.id)?,
                },
            );
        }
        Ok(Snapshot {
            at: Instant::now(),
            services,
            backends,
            reasons: source.reason_counters()?,
            flow_entries: source.flow_entries(),
            flow_entries6: source.flow_entries6(),
            flow_overflow_entries: source.flow_overflow_entries(),
        })
    }
}

/// The two most recent periodic samples, for rates over at least [`MIN_RATE_WINDOW`].
#[derive(Debug, Default)]
pub struct Sampler {
    recent: Option<Snapshot>,
    older: Option<Snapshot>,
}

/// Shortest interval a rate is computed over; shorter ones are too noisy.
pub const MIN_RATE_WINDOW: Duration = Duration::from_millis(500);

impl Sampler {
    pub fn push(&mut self, snapshot: Snapshot) {
        self.older = self.recent.take();
        self.recent = Some(snapshot);
    }

    /// The two most recent samples, newest first.
    pub fn latest(&self) -> (Option<&Snapshot>, Option<&Snapshot>) {
        (self.recent.as_ref(), self.older.as_ref())
    }

    /// The newest sample at least [`MIN_RATE_WINDOW`] older than `now`.
    pub fn baseline(&self, now: Instant) -> Option<&Snapshot> {
        [self.recent.as_ref(), self.older.as_ref()]
            .into_iter()
            .flatten()
            .find(|s| now.saturating_duration_since(s.at) >= MIN_RATE_WINDOW)
    }
}

/// Per-backend health as far as lbd knows it (`unknown` until its probes have answered).
pub type HealthOf<'a> = &'a dyn Fn(&str, &BackendAddr) -> String;

/// The `GET /v1/stats` view of `now`, with rates against `baseline`.
pub fn view(
    config: &Config,
    now: &Snapshot,
    baseline: Option<&Snapshot>,
    uptime: Duration,
    health: HealthOf<'_>,
) -> StatsView {
    let secs = baseline
        .map(|b| now.at.saturating_duration_since(b.at).as_secs_f64())
        .unwrap_or(0.0);
    let rate = |new: u64, old: Option<u64>| match old {
        Some(old) if secs > 0.0 => new.saturating_sub(old) as f64 / secs,
        _ => 0.0,
    };
    let mut services = Vec::new();
    let mut backends = Vec::new();
    let mut zones: BTreeMap<String, Counts> = BTreeMap::new();
    for s in &config.services {
        let traffic = now.services.get(&s.name).copied().unwrap_or_default();
        let old = baseline.and_then(|b| b.services.get(&s.name));
        let mut service_counts = counts(
            &traffic,
            0,
            rate(traffic.new_flows, old.map(|o| o.new_flows)),
        );
        for b in &s.backends {
            let at = BackendAddr::from(b);
            let key = (s.name.clone(), at);
            let sample = now.backends.get(&key).copied().unwrap_or_default();
            let old = baseline.and_then(|b| b.backends.get(&key));
            let c = counts(
                &sample.traffic,
                sample.active_flows,
                rate(sample.traffic.new_flows, old.map(|o| o.traffic.new_flows)),
            );
            service_counts.active_flows += sample.active_flows;
            add(zones.entry(b.zone.clone()).or_default(), &c);
            backends.push(BackendStats {
                service: s.name.clone(),
                address: b.address,
                port: b.port,
                zone: b.zone.clone(),
                state: b.state,
                health: health(&s.name, &at),
                counts: c,
            });
        }
        services.push(ServiceStats {
            service: s.name.clone(),
            counts: service_counts,
        });
    }
    StatsView {
        node_zone: config.node.zone.clone(),
        uptime_secs: uptime.as_secs(),
        rate_interval_secs: secs,
        services,
        backends,
        zones: zones
            .into_iter()
            .map(|(zone, counts)| ZoneStats { zone, counts })
            .collect(),
        reasons: REASONS
            .iter()
            .zip(&now.reasons)
            .filter(|(_, n)| **n > 0)
            .map(|((_, name), n)| ReasonCount {
                reason: name.to_string(),
                packets: *n,
            })
            .collect(),
        flow_table_entries: now.flow_entries,
        flow_table_capacity: config.limits.flow_table_size,
        flow_table6_entries: now.flow_entries6,
        flow_table6_capacity: config.limits.flow_table_size6,
        flow_table_overflow_entries: now.flow_overflow_entries,
        flow_table_overflow_capacity: lb_common::flow_slots::overflow_entries(
            config.limits.flow_table_size,
        ),
    }
}

fn counts(t: &TrafficCounters, active_flows: u64, new_flows_per_sec: f64) -> Counts {
    Counts {
        connections: t.new_flows,
        new_flows_per_sec,
        active_flows,
        packets_to_backend: t.packets_to_backend,
        bytes_to_backend: t.bytes_to_backend,
        packets_to_client: t.packets_to_client,
        bytes_to_client: t.bytes_to_client,
    }
}

fn add(sum: &mut Counts, c: &Counts) {
    sum.connections += c.connections;
    sum.new_flows_per_sec += c.new_flows_per_sec;
    sum.active_flows += c.active_flows;
    sum.packets_to_backend += c.packets_to_backend;
    sum.bytes_to_backend += c.bytes_to_backend;
    sum.packets_to_client += c.packets_to_client;
    sum.bytes_to_client += c.bytes_to_client;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{model::config, model::plan};

    struct Fixed(u64);

    impl Counters for Fixed {
        fn service_counters(&self, _: u32) -> anyhow::Result<TrafficCounters> {
            Ok(TrafficCounters {
                new_flows: 2 * self.0,
                ..Default::default()
            })
        }
        fn backend_counters(&self, id: u32) -> anyhow::Result<TrafficCounters> {
            Ok(TrafficCounters {
                new_flows: self.0,
                packets_to_backend: 10 * self.0 + id as u64,
                ..Default::default()
            })
        }
        fn active_flows(&self, id: u32) -> anyhow::Result<u64> {
            Ok(id as u64 + 1)
        }
        fn edge_rule_hits(&self, _: u32) -> anyhow::Result<u64> {
            Ok(0)
        }
        fn edge_counters(&self, _: u32) -> anyhow::Result<lb_common::edge::EdgeCounters> {
            Ok(Default::default())
        }
        fn syn_proxy_syns(&self, _: u32) -> anyhow::Result<u64> {
            Ok(0)
        }
        fn reason_counters(&self) -> anyhow::Result<Vec<u64>> {
            Ok((0..REASONS.len() as u64).map(|i| i % 2).collect())
        }
        fn flow_entries(&self) -> u64 {
            7
        }
        fn flow_entries6(&self) -> u64 {
            5
        }
        fn flow_overflow_entries(&self) -> u64 {
            2
        }
    }

    #[test]
    fn totals_rates_and_zone_sums() {
        let c = config::parse(
            "node: { zone: az-a }\ninterfaces: [eth0]\ncluster: { ring_size: 1009 }\n\
             services:\n  - name: web\n    vip: 10.0.0.100\n    port: 80\n    backends:\n\
             \x20     - { address: 10.1.0.11, port: 8080, zone: az-a }\n\
             \x20     - { address: 10.1.0.12, port: 8080, zone: az-a }\n",
        )
        .unwrap();
        let none = plan::Overlay::default();
        let p = plan::plan(
            &c,
            &none,
            &plan::assign_ids(&c, &none, &plan::Ids::default()),
            None,
        );
        let mut before = Snapshot::read(&p, &Fixed(10)).unwrap();
        let mut now = Snapshot::read(&p, &Fixed(30)).unwrap();
        before.at = now.at - Duration::from_secs(2);
        now.at = before.at + Duration::from_secs(2);
        let unknown = |_: &str, _: &BackendAddr| "unknown".to_string();
        let v = view(&c, &now, Some(&before), Duration::from_secs(5), &unknown);
        assert_eq!(v.services[0].counts.connections, 60);
        assert_eq!(v.services[0].counts.new_flows_per_sec, 20.0);
        assert_eq!(v.services[0].counts.active_flows, 1 + 2);
        assert_eq!(v.backends[1].counts.packets_to_backend, 301);
        assert_eq!(v.backends[1].counts.new_flows_per_sec, 10.0);
        assert_eq!(v.zones.len(), 1);
        assert_eq!(v.zones[0].counts.connections, 60);
        assert_eq!(v.zones[0].counts.new_flows_per_sec, 20.0);
        assert_eq!(v.reasons.len(), REASONS.len() / 2);
        assert_eq!(v.reasons[0].reason, "pass_not_ipv4");
        assert_eq!(v.flow_table_entries, 7);
        let first = view(&c, &now, None, Duration::ZERO, &unknown);
        assert_eq!(first.services[0].counts.new_flows_per_sec, 0.0);
    }

    #[test]
    fn the_baseline_is_the_newest_sample_old_enough() {
        let c = config::parse("node: { zone: az-a }\ninterfaces: [eth0]\n").unwrap();
        let p = plan::plan(&c, &plan::Overlay::default(), &plan::Ids::default(), None);
        let mut sampler = Sampler::default();
        let t0 = Instant::now();
        let at = |ms: u64| {
            let mut s = Snapshot::read(&p, &Fixed(0)).unwrap();
            s.at = t0 + Duration::from_millis(ms);
            s
        };
        sampler.push(at(0));
        sampler.push(at(1000));
        let now = t0 + Duration::from_millis(1200);
        assert_eq!(sampler.baseline(now).unwrap().at, t0);
        let later = t0 + Duration::from_millis(1600);
        assert_eq!(
            sampler.baseline(later).unwrap().at,
            t0 + Duration::from_millis(1000)
        );
    }
}
