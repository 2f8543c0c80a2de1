//! The Prometheus endpoint: `GET /metrics` (OpenMetrics text, which Prometheus scrapes
//! natively), `GET /healthz` (lbd's loop answers) and `GET /readyz` (the data path is
//! attached and programmed). Served on `metrics.listen`, apart from the admin API.
//!
//! - [`collector`]: reads every counter at scrape time and encodes it.
//! - [`listeners`]: connection counters of lbd's listeners, and its descriptors.
//! - [`Metrics`]: the registry, plus the metrics lbd pushes into (probe latencies).
//! - [`health`]: per-backend probe records, passive ejections, and lbd's loop.
//! - [`digests`]: each service's table and config digests, to compare nodes.
pub mod collector;
pub mod digests;
pub mod health;
pub mod lifecycle;
pub mod listeners;
pub mod syn_proxy;

use std::sync::Arc;

use axum::{
    extract::State,
    http::{header, StatusCode},
    response::IntoResponse,
    routing::get,
    Router,
};
use prometheus_client::{
    encoding::text,
    metrics::{
        counter::Counter,
        family::{Family, MetricConstructor},
        gauge::Gauge,
        histogram::{exponential_buckets, Histogram},
    },
    registry::Registry,
};

use crate::model::bird_reply::{BfdSession, Protocol};
use crate::ops::{
    api::blocking,
    shared::{DataPath, Shared},
};

/// Labels of per-backend series.
pub type BackendLabels = Vec<(&'static str, String)>;

/// Buckets of the probe latency histogram: 0.5 ms to about 4 s.
#[derive(Clone)]
pub struct ProbeBuckets;

impl MetricConstructor<Histogram> for ProbeBuckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(exponential_buckets(0.0005, 2.0, 14))
    }
}

/// What `/metrics` encodes.
pub struct Metrics {
    registry: Registry,
    /// Health-probe latency per backend, in seconds. Registered now so dashboards and
    /// alerts can be built on it; the health prober observes into it.
    pub probe_duration: Family<BackendLabels, Histogram, ProbeBuckets>,
    /// 1 while the data path is attached to the NIC, 0 while it is missing.
    interface_attached: Family<BackendLabels, Gauge>,
    /// NICs lost, re-attached, or failing to re-attach.
    interface_events: Family<BackendLabels, Counter>,
    /// How lbd's loop keeps up with probe results and timers.
    pub health: health::LoopMetrics,
    /// 1 while the service's VIP is announced (held on `lo`), per service.
    vip_announced: Family<BackendLabels, Gauge>,
    /// VIPs announced, withdrawn, or failing to be, per VIP.
    vip_changes: Family<BackendLabels, Counter>,
    /// 1 while the node is drained (config file or API).
    node_drained: Gauge,
    /// BIRD as last read from `announce.bird_socket` (see `crate::ops::bird`).
    bird_up: Gauge,
    bird_bgp_established: Family<BackendLabels, Gauge>,
    bird_bfd_up: Family<BackendLabels, Gauge>,
    /// BIRD at the last reading: 0 not read yet, 1 answered, 2 did not.
    bird_seen: std::sync::atomic::AtomicU8,
}

impl Metrics {
    pub fn new<D: DataPath>(runtime: Shared<D>) -> Self {
        let mut registry = Registry::default();
        let probe_duration = Family::new_with_constructor(ProbeBuckets);
        registry.register(
            "lb_probe_duration_seconds",
            "Health-probe latency per backend",
            probe_duration.clone(),
        );
        let interface_attached = Family::default();
        registry.register(
            "lb_interface_attached",
            "Whether the data path is attached to the configured NIC (0 while it is missing)",
            interface_attached.clone(),
        );
        let interface_events = Family::default();
        registry.register(
            "lb_interface_events",
            "Configured NICs lost, re-attached or failing to re-attach",
            interface_events.clone(),
        );
        let vip_announced = Family::default();
        registry.register(
            "lb_vip_announced",
            "Whether the service's VIP is announced (its /32 held on lo for the routing daemon)",
            vip_announced.clone(),
        );
        let vip_changes = Family::default();
        registry.register(
            "lb_vip_changes",
            "VIPs announced, withdrawn, or failing to be (announce_failed, withdraw_failed)",
            vip_changes.clone(),
        );
        let node_drained = Gauge::default();
        registry.register(
            "lb_node_drained",
            "Whether the node is drained: it announces no VIP (announce.drained or lbctl node drain)",
            node_drained.clone(),
        );
        let bird_up = Gauge::default();
        registry.register(
            "lb_bird_up",
            "Whether BIRD answered on announce.bird_socket at the last check (every 5 s; 0 without a socket)",
            bird_up.clone(),
        );
        let bird_bgp_established = Family::default();
        registry.register(
            "lb_bird_bgp_established",
            "Whether BIRD's BGP protocol is Established, per protocol, at the last check",
            bird_bgp_established.clone(),
        );
        let bird_bfd_up = Family::default();
        registry.register(
            "lb_bird_bfd_up",
            "Whether BIRD's BFD session with the peer is Up, at the last check",
            bird_bfd_up.clone(),
        );
        registry.register_collector(Box::new(collector::DataPathCollector::new(runtime.clone())));
        registry.register_collector(Box::new(digests::DigestCollector::new(runtime.clone())));
        registry.register_collector(Box::new(lifecycle::LifecycleCollector::new(
            runtime.clone(),
        )));
        registry.register_collector(Box::new(syn_proxy::SynProxyCollector::new(runtime.clone())));
        registry.register_collector(Box::new(health::HealthCollector::new(runtime)));
        let health = health::LoopMetrics::register(&mut registry);
        Self {
            registry,
            probe_duration,
            interface_attached,
            interface_events,
            health,
            vip_announced,
            vip_changes,
            node_drained,
            bird_up,
            bird_bgp_established,
            bird_bfd_up,
            bird_seen: std::sync::atomic::AtomicU8::new(0),
        }
    }

    /// The registry of a running lbd: [`Metrics::new`] plus its listeners' counters.
    pub fn serving<D: DataPath>(
        runtime: Shared<D>,
        listeners: Vec<Arc<crate::ops::listeners::stats::ListenerStats>>,
        tracer: Option<Arc<crate::kernel::trace::Tracer>>,
    ) -> Self {
        let mut metrics = Self::new(runtime);
        metrics
            .registry
            .register_collector(Box::new(listeners::ListenerCollector { listeners }));
        if let Some(tracer) = tracer {
            let trace = crate::ops::trace::metrics::TraceCollector { tracer };
            metrics.registry.register_collector(Box::new(trace));
        }
        metrics
    }

    /// Records whether the data path is attached to `interface` now.
    pub fn set_interface_attached(&self, interface: &str, attached: bool) {
        self.interface_attached
            .get_or_create(&vec![("interface", interface.to_string())])
            .set(attached as i64);
    }

    /// Counts a `lost`, `attached` or `attach_failed` event of `interface`.
    pub fn count_interface_event(&self, interface: &str, event: &'static str) {
        self.interface_events
            .get_or_create(&vec![
                ("interface", interface.to_string()),
                ("event", event.to_string()),
            ])
            .inc();
    }

    /// Records whether `service`'s VIP is announced now.
    /// BIRD's state as read now: `None` when it did not answer. The session series are
    /// those of this reading only (none while BIRD does not answer: the node cannot
    /// tell), so a removed protocol leaves no stale series.
    /// Returns whether BIRD's reachability changed since the last reading (or this is
    /// the first), for the log.
    pub fn set_bird(&self, read: Option<&(Vec<Protocol>, Vec<BfdSession>)>) -> bool {
        let now = if read.is_some() { 1 } else { 2 };
        let before = self
            .bird_seen
            .swap(now, std::sync::atomic::Ordering::Relaxed);
        self.bird_up.set(read.is_some() as i64);
        self.bird_bgp_established.clear();
        self.bird_bfd_up.clear();
        let Some((protocols, sessions)) = read else {
            return before != now;
        };
        for p in protocols.iter().filter(|p| p.proto == "BGP") {
            self.bird_bgp_established
                .get_or_create(&vec![("protocol", p.name.clone())])
                .set((p.info == "Established") as i64);
        }
        for s in sessions {
            self.bird_bfd_up
                .get_or_create(&vec![("peer", s.address.clone())])
                .set((s.state == "Up") as i64);
        }
        before != now
    }

    pub fn set_node_drained(&self, drained: bool) {
        self.node_drained.set(drained as i64);
    }

    pub fn set_vip_announced(&self, service: &str, announced: bool) {
        self.vip_announced
            .get_or_create(&vec![("service", service.to_string())])
            .set(announced as i64);
    }

    /// Counts an `announce`, `withdraw`, `announce_failed` or `withdraw_failed` of `vip`,
    /// or a `list_failed` (vip "": listing lo's addresses failed).
    pub fn count_vip_change(&self, vip: &dyn std::fmt::Display, change: &'static str) {
        self.vip_changes
            .get_or_create(&vec![
                ("vip", vip.to_string()),
                ("change", change.to_string()),
            ])
            .inc();
    }

    /// Records one health-probe latency (for the health prober).
    pub fn observe_probe(&self, service: &str, backend: &str, zone: &str, seconds: f64) {
        self.probe_duration
            .get_or_create(&vec![
                ("service", service.to_string()),
                ("backend", backend.to_string()),
                ("zone", zone.to_string()),
            ])
            .observe(seconds);
    }

    /// The exposition text.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(64 * 1024);
        text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

struct MetricsState<D> {
    metrics: Arc<Metrics>,
    runtime: Shared<D>,
}

impl<D> Clone for MetricsState<D> {
    fn clone(&self) -> Self {
        Self {
            metrics: self.metrics.clone(),
            runtime: self.runtime.clone(),
        }
    }
}

pub fn router<D: DataPath>(metrics: Arc<Metrics>, runtime: Shared<D>) -> Router {
    Router::new()
        .route("/metrics", get(scrape::<D>))
        .route("/healthz", get(healthz::<D>))
        .route("/readyz", get(readyz::<D>))
        .with_state(MetricsState { metrics, runtime })
}

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

async fn scrape<D: DataPath>(State(s): State<MetricsState<D>>) -> impl IntoResponse {
    let metrics = s.metrics.clone();
    match blocking(move || metrics.encode()).await {
        Ok(Ok(body)) => (StatusCode::OK, [(header::CONTENT_TYPE, OPENMETRICS)], body),
        Ok(Err(e)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain")],
            format!("encoding metrics: {e}\n"),
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain")],
            format!("{}\n", e.message),
        ),
    }
}

/// Alive: the runtime's lock can be taken (a wedged controller fails this).
async fn healthz<D: DataPath>(State(s): State<MetricsState<D>>) -> (StatusCode, &'static str) {
    let rt = s.runtime.clone();
    match blocking(move || rt.with(|_| ())).await {
        Ok(()) => (StatusCode::OK, "ok\n"),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "wedged\n"),
    }
}

/// Ready: attached to every NIC and the desired state applied.
async fn readyz<D: DataPath>(State(s): State<MetricsState<D>>) -> (StatusCode, &'static str) {
    if s.runtime.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

/// Every distinct `lb_*` metric name a dashboard or rules file mentions, sorted.
#[cfg(test)]
pub(crate) fn metric_names_in(text: &str) -> Vec<&str> {
    let mut names: Vec<&str> = text
        .match_indices("lb_")
        .map(|(at, _)| {
            let rest = &text[at..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        control::runtime::Runtime, control::tables::Controller, dataplane::FakeDataplane,
        model::config, ops::shared::SharedRuntime,
    };

    fn shared(c: config::Config) -> Shared<FakeDataplane> {
        let controller = Controller::new(FakeDataplane::new(13, 1), 13);
        let (runtime, _) = Runtime::start(c, controller, std::time::Instant::now()).unwrap();
        Arc::new(SharedRuntime::new(runtime))
    }

    #[test]
    fn probe_latencies_appear_as_a_histogram_once_observed() {
        let c = config::parse(
            "node: { zone: az-a }\ninterfaces: [eth0]\ncluster: { ring_size: 13 }\n\
             services: [ { name: web, vip: 10.0.0.100, port: 80 } ]\n",
        )
        .unwrap();
        let metrics = Metrics::new(shared(c));
        let before = metrics.encode().unwrap();
        assert!(
            before.contains("lb_service_new_flows_total{service=\"web\"} 0"),
            "{before}"
        );
        assert!(!before.contains("lb_probe_duration_seconds_bucket"));
        metrics.observe_probe("web", "10.1.0.11:8080", "az-a", 0.003);
        let after = metrics.encode().unwrap();
        assert!(
            after.contains("# TYPE lb_probe_duration_seconds histogram"),
            "{after}"
        );
        assert!(after.contains(
            "lb_probe_duration_seconds_count{service=\"web\",backend=\"10.1.0.11:8080\",zone=\"az-a\"} 1"
        ), "{after}");
        assert!(after.ends_with("# EOF\n"));
    }

    /// Not ready until lbd says the data path is attached everywhere, and again once it
    /// stops or loses a NIC; the per-NIC gauge says which.
    #[test]
    fn readyz_follows_readiness_and_interfaces_are_exported() {
        let c =
            config::parse("node: { zone: az-a }\ninterfaces: [eth0]\ncluster: { ring_size: 13 }\n")
                .unwrap();
        let runtime = shared(c);
        let metrics = Arc::new(Metrics::new(runtime.clone()));
        let state = MetricsState {
            metrics: metrics.clone(),
            runtime: runtime.clone(),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let status = || rt.block_on(readyz(State(state.clone()))).0;
        assert_eq!(status(), StatusCode::SERVICE_UNAVAILABLE);
        runtime.set_ready(true);
        assert_eq!(status(), StatusCode::OK);
        runtime.set_ready(false);
        assert_eq!(status(), StatusCode::SERVICE_UNAVAILABLE);
        metrics.set_interface_attached("eth0", false);
        metrics.count_interface_event("eth0", "lost");
        let text = metrics.encode().unwrap();
        assert!(
            text.contains("lb_interface_attached{interface=\"eth0\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("lb_interface_events_total{interface=\"eth0\",event=\"lost\"} 1\n"),
            "{text}"
        );
    }

    /// The Grafana dashboard in deploy/ only queries series that lbd exports.
    #[test]
    fn the_dashboard_queries_only_exported_metrics() {
        let c = config::parse(
            "node: { zone: az-a }\ninterfaces: [eth0]\ncluster: { ring_size: 13 }\n\
             services: [ { name: web, vip: 10.0.0.100, port: 80, drained_zones: [az-b],\
             backends: [ { address: 10.1.0.11, port: 8080, zone: az-a } ] } ]\n",
        )
        .unwrap();
        let metrics = Metrics::new(shared(c));
        metrics.observe_probe("web", "10.1.0.11:8080", "az-a", 0.003);
        let text = metrics.encode().unwrap();
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/grafana/lbd-dashboard.json"
        );
        let dashboard = std::fs::read_to_string(path).unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
        assert!(parsed["panels"].as_array().is_some_and(|p| !p.is_empty()));
        let names = metric_names_in(&dashboard);
        assert!(names.len() > 8, "{names:?}");
        for name in names {
            assert!(
                text.lines().any(|l| l.starts_with(name)),
                "the dashboard queries {name}, which lbd does not export"
            );
        }
    }

    /// The edge alerting rules in deploy/ query only series that lbd exports (`promtool
    /// test rules lbd-edge.rules.test.yml` checks what they do with them).
    #[test]
    fn the_edge_rules_query_only_exported_metrics() {
        let c = config::parse(
            "node: { zone: az-a }\ninterfaces: [eth0]\ncluster: { ring_size: 13 }\n\
             services: [ { name: web, vip: 10.0.0.100, port: 80,\
             filter: { allow: [10.0.0.0/8] }, rate_limit: { syns_per_second: 1, burst: 1 },\
             backends: [ { address: 10.1.0.11, port: 8080, zone: az-a } ] } ]\n",
        )
        .unwrap();
        let text = Metrics::new(shared(c)).encode().unwrap();
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/prometheus/lbd-edge.rules.yml"
        );
        let rules = std::fs::read_to_string(path).unwrap();
        let names = metric_names_in(&rules);
        // Only series every lbd exports: the lab's Prometheus test wants each of them
        // scraped from an lbd without edge rules.
        assert_eq!(names, ["lb_datapath_packets_total"]);
        for name in names {
            assert!(
                text.lines().any(|l| l.starts_with(&format!("{name}{{"))),
                "the rules name {name}, which lbd does not export:\n{text}"
            );
        }
        for line in [
            "lb_edge_rule_matches_total{service=\"web\",verdict=\"allow\",rule=\"10.0.0.0/8\"} 0",
            "lb_edge_not_allowed_total{service=\"web\"} 0",
            "lb_edge_rate_limited_total{service=\"web\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }
}
