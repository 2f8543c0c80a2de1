//! Health checking as an on-call engineer needs to see it: per backend, failed probes
//! and the age of the last result (read from the fleet at scrape time); per service,
//! passive ejections and the ones the cap refused; and how well lbd's loop keeps up
//! (pushed by the loop): results applied, the lag from a probe's completion to its
//! application, how late the loop's timer ticks are handled, and its busy time.
use std::time::{Duration, Instant};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::ConstGauge,
        histogram::{exponential_buckets, Histogram},
        MetricType,
    },
    registry::Registry,
};

use crate::{
    model::plan::BackendRef,
    ops::shared::{DataPath, Shared},
};

/// What lbd's loop pushes.
#[derive(Clone)]
pub struct LoopMetrics {
    results: Counter,
    apply_lag: Histogram,
    loop_lag: Histogram,
    busy: Family<Vec<(&'static str, &'static str)>, Counter<f64>>,
}

/// 0.1 ms to about 3.3 s.
fn lag_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

impl LoopMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            results: Counter::default(),
            apply_lag: lag_buckets(),
            loop_lag: lag_buckets(),
            busy: Family::default(),
        };
        registry.register(
            "lb_probe_results",
            "Probe results applied by lbd's loop",
            m.results.clone(),
        );
        registry.register(
            "lb_probe_apply_lag_seconds",
            "Time from a probe's completion to lbd's loop applying its result",
            m.apply_lag.clone(),
        );
        registry.register(
            "lb_loop_lag_seconds",
            "How late lbd's loop handles its 50 ms timer tick",
            m.loop_lag.clone(),
        );
        registry.register(
            "lb_loop_busy_seconds",
            "Wall time lbd's loop spent handling events, by event",
            m.busy.clone(),
        );
        m
    }

    /// One probe result applied, which completed `lag` ago and took `busy` to apply.
    pub fn probe_applied(&self, lag: Duration, busy: Duration) {
        self.results.inc();
        self.apply_lag.observe(lag.as_secs_f64());
        self.busy(&[("event", "probe")], busy);
    }

    /// A timer tick due at `due`, handled from `handled` to now.
    pub fn tick(&self, due: Instant, handled: Instant) {
        self.loop_lag
            .observe(handled.saturating_duration_since(due).as_secs_f64());
        self.busy(&[("event", "tick")], handled.elapsed());
    }

    fn busy(&self, labels: &[(&'static str, &'static str)], d: Duration) {
        self.busy
            .get_or_create(&labels.to_vec())
            .inc_by(d.as_secs_f64());
    }
}

/// Per-backend and per-service health series, read at scrape time.
pub struct HealthCollector<D> {
    runtime: Shared<D>,
}

impl<D> HealthCollector<D> {
    pub fn new(runtime: Shared<D>) -> Self {
        Self { runtime }
    }
}

impl<D> std::fmt::Debug for HealthCollector<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HealthCollector")
    }
}

type Labels = Vec<(&'static str, String)>;

#[derive(Default)]
struct Reading {
    failures: Vec<(Labels, u64)>,
    ages: Vec<(Labels, f64)>,
    ejected: Vec<(Labels, u64)>,
    refused: Vec<(Labels, u64)>,
    flap_refused: Vec<(Labels, u64)>,
}

impl<D: DataPath> HealthCollector<D> {
    fn read(&self) -> Reading {
        let now = Instant::now();
        self.runtime.with(|rt| {
            let mut r = Reading::default();
            let fleet = rt.fleet();
            for s in &rt.config().services {
                for b in &s.backends {
                    let at = BackendRef {
                        service: s.name.clone(),
                        address: b.address,
                        port: b.port,
                    };
                    let labels = vec![
                        ("service", s.name.clone()),
                        (
                            "backend",
                            std::net::SocketAddr::new(b.address, b.port).to_string(),
                        ),
                        ("zone", b.zone.clone()),
                    ];
                    let Some(record) = fleet.probe_record(&at) else {
                        continue;
                    };
                    if let Some(age) = record.age(now) {
                        r.ages.push((labels.clone(), age.as_secs_f64()));
                    }
                    r.failures.push((labels, record.failures));
                }
                let counts = fleet
                    .passive_counts()
                    .get(&s.name)
                    .copied()
                    .unwrap_or_default();
                r.ejected
                    .push((vec![("service", s.name.clone())], counts.ejected));
                r.refused
                    .push((vec![("service", s.name.clone())], counts.refused));
                r.flap_refused
                    .push((vec![("service", s.name.clone())], counts.flap_refused));
            }
            r
        })
    }
}

fn counters(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: &[(Labels, u64)],
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in samples {
        ConstCounter::new(*value).encode(metric.encode_family(labels)?)?;
    }
    Ok(())
}

impl<D: DataPath> Collector for HealthCollector<D> {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let r = self.read();
        counters(
            &mut encoder,
            "lb_backend_probe_failures",
            "Failed health probes per backend since it joined (or lbd started)",
            &r.failures,
        )?;
        let mut ages = encoder.encode_descriptor(
            "lb_backend_last_probe_age_seconds",
            "Time since lbd applied the backend's last probe result",
            None,
            MetricType::Gauge,
        )?;
        for (labels, age) in &r.ages {
            ConstGauge::new(*age).encode(ages.encode_family(labels)?)?;
        }
        counters(
            &mut encoder,
            "lb_passive_ejections",
            "Backends ejected by passive signals",
            &r.ejected,
        )?;
        counters(
            &mut encoder,
            "lb_passive_ejections_refused",
            "Passive ejections refused by passive_max_ejection_percent or to keep the last healthy backend",
            &r.refused,
        )?;
        counters(
            &mut encoder,
            "lb_flap_holds_refused",
            "Flap-damping holds refused because the backend was its service's last one taking new flows",
            &r.flap_refused,
        )
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{
        control::health::machine::Failure, control::runtime::Runtime, control::tables::Controller,
        dataplane::FakeDataplane, model::config, ops::metrics::Metrics, ops::shared::SharedRuntime,
    };

    #[test]
    fn probe_failures_result_ages_and_the_loop_are_exported() {
        let c = config::parse(
            "node: { zone: az-a }\ninterfaces: [eth0]\ncluster: { ring_size: 13 }\n\
             services: [ { name: web, vip: 10.0.0.100, port: 80, backends: [\
             { address: 10.1.0.11, port: 8080, zone: az-a }, \
             { address: 10.1.0.12, port: 8080, zone: az-b } ] } ]\n",
        )
        .unwrap();
        let controller = Controller::new(FakeDataplane::new(13, 1), 13);
        let (runtime, _) = Runtime::start(c, controller, Instant::now()).unwrap();
        let shared = Arc::new(SharedRuntime::new(runtime));
        let metrics = Metrics::new(shared.clone());
        let at = BackendRef {
            service: "web".into(),
            address: "10.1.0.11".parse().unwrap(),
            port: 8080,
        };
        for outcome in [Ok(()), Err(Failure::Timeout), Err(Failure::Refused)] {
            shared.on_probe(&at, &outcome, Duration::ZERO).unwrap();
        }
        metrics
            .health
            .probe_applied(Duration::from_millis(3), Duration::from_micros(20));
        let due = Instant::now();
        metrics.health.tick(due, due + Duration::from_millis(7));
        let text = metrics.encode().unwrap();
        let b11 = "service=\"web\",backend=\"10.1.0.11:8080\",zone=\"az-a\"";
        let b12 = "service=\"web\",backend=\"10.1.0.12:8080\",zone=\"az-b\"";
        for line in [
            format!("lb_backend_probe_failures_total{{{b11}}} 2"),
            format!("lb_backend_probe_failures_total{{{b12}}} 0"),
            "lb_passive_ejections_total{service=\"web\"} 0".to_string(),
            "lb_passive_ejections_refused_total{service=\"web\"} 0".to_string(),
            "lb_flap_holds_refused_total{service=\"web\"} 0".to_string(),
            "lb_probe_results_total 1".to_string(),
            "lb_probe_apply_lag_seconds_count 1".to_string(),
            "lb_loop_lag_seconds_count 1".to_string(),
            // 7 ms late: over the 6.4 ms bucket, under the 12.8 ms one.
            "lb_loop_lag_seconds_bucket{le=\"0.0064\"} 0".to_string(),
            "lb_loop_lag_seconds_bucket{le=\"0.0128\"} 1".to_string(),
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("lb_backend_last_probe_age_seconds{{{b11}}} "))),
            "{text}"
        );
        assert!(
            !text.contains(&format!("lb_backend_last_probe_age_seconds{{{b12}}}")),
            "no age before the first result"
        );
        assert!(
            text.contains("lb_loop_busy_seconds_total{event=\"probe\"}"),
            "{text}"
        );
    }
}
