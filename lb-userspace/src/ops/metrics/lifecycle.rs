//! The scaling signals (`lb_service_healthy_backends`, `..._per_healthy_backend`,
//! `lb_service_desired_backends`, from the last once-a-second sample, see
//! `crate::ops::scaling`) and the lifecycle events' own counters.
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge, MetricType},
};

use crate::ops::{
    scaling::ScalingView,
    shared::{DataPath, Shared},
};

pub struct LifecycleCollector<D> {
    runtime: Shared<D>,
}

impl<D> LifecycleCollector<D> {
    pub fn new(runtime: Shared<D>) -> Self {
        Self { runtime }
    }
}

impl<D> std::fmt::Debug for LifecycleCollector<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LifecycleCollector")
    }
}

/// A per-service gauge: its value for one service, `None` for no sample.
type PerService = fn(&ScalingView) -> Option<f64>;

impl<D: DataPath> Collector for LifecycleCollector<D> {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let events = self.runtime.events();
        let counters = [
            (
                "lb_events_published",
                "Lifecycle events lbd published (GET /v1/events)",
                events.published(),
            ),
            (
                "lb_events_followers_cut",
                "Event followers cut off for falling behind (they lost events)",
                events.followers_cut(),
            ),
            (
                "lb_events_followers_refused",
                "Event follow requests refused because as many followers as allowed were open",
                events.followers_refused(),
            ),
        ];
        for (name, help, value) in counters {
            let metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            ConstCounter::new(value).encode(metric)?;
        }
        let mut hooks = encoder.encode_descriptor(
            "lb_event_hook_runs",
            "Events given to the event hook, by result: ok, failed, timeout, not_started, dropped (never run: the hook fell behind)",
            None,
            MetricType::Counter,
        )?;
        for (result, count) in events.hook_counts().by_result() {
            ConstCounter::new(count).encode(hooks.encode_family(&[("result", result)])?)?;
        }
        let views = self.runtime.scaling();
        let mut healthy = encoder.encode_descriptor(
            "lb_service_healthy_backends",
            "Healthy backends taking new flows (not draining), per zone",
            None,
            MetricType::Gauge,
        )?;
        for v in &views {
            for (zone, count) in &v.healthy_by_zone {
                let labels = [("service", v.service.as_str()), ("zone", zone.as_str())];
                ConstGauge::new(i64::from(*count)).encode(healthy.encode_family(&labels)?)?;
            }
        }
        let per_service: [(&str, &str, PerService); 3] = [
            (
                "lb_service_active_flows_per_healthy_backend",
                "Active flows of the service over its healthy backends (absent without one)",
                |v| v.active_flows_per_healthy,
            ),
            (
                "lb_service_new_flows_per_second_per_healthy_backend",
                "New flows per second of the service over its healthy backends (absent without one)",
                |v| v.new_flows_per_second_per_healthy,
            ),
            (
                "lb_service_desired_backends",
                "Backends the service's scaling targets ask for, with scale-in cooldown (services with scaling only)",
                |v| v.desired_backends.map(f64::from),
            ),
        ];
        for (name, help, value) in per_service {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for v in &views {
                if let Some(x) = value(v) {
                    let labels = [("service", v.service.as_str())];
                    ConstGauge::new(x).encode(metric.encode_family(&labels)?)?;
                }
            }
        }
        Ok(())
    }
}
