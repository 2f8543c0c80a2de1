//! Reads the data path's counters at scrape time (no background copy to go stale) and
//! encodes them. Names and labels are documented in docs/metrics.md.
use std::collections::BTreeMap;

use lb_common::{
    counters::{BackendSignals, REASONS},
    flow_slots::overflow_entries,
};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge, MetricType},
};

use crate::{
    control::health::machine::Health,
    model::config::{BackendConfig, BackendState, Config, ServiceConfig},
    model::desired::edit::BackendAddr,
    model::weights::RING_WEIGHT_SCALE,
    ops::shared::{DataPath, Shared},
    ops::stats::{BackendSample, Snapshot},
    ops::views::REASON_TABLE_FULL,
};

pub struct DataPathCollector<D> {
    runtime: Shared<D>,
}

impl<D> DataPathCollector<D> {
    pub fn new(runtime: Shared<D>) -> Self {
        Self { runtime }
    }
}

impl<D> std::fmt::Debug for DataPathCollector<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataPathCollector")
    }
}

type Labels = Vec<(&'static str, String)>;

/// One family's samples, gathered before encoding (the encoder wants one family at a
/// time).
struct Family {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    samples: Vec<(Labels, f64)>,
}

impl Family {
    fn new(name: &'static str, help: &'static str, kind: MetricType) -> Self {
        Self {
            name,
            help,
            kind,
            samples: Vec::new(),
        }
    }

    fn push(&mut self, labels: Labels, value: impl Into<f64>) {
        self.samples.push((labels, value.into()));
    }

    fn encode(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut metric = encoder.encode_descriptor(self.name, self.help, None, self.kind)?;
        for (labels, value) in &self.samples {
            let sample = metric.encode_family(labels)?;
            match self.kind {
                MetricType::Counter => ConstCounter::new(*value as u64).encode(sample)?,
                _ => ConstGauge::new(*value).encode(sample)?,
            }
        }
        Ok(())
    }
}

/// Everything read under the runtime's lock, so a scrape is one consistent moment.
struct Reading {
    config: Config,
    snapshot: Snapshot,
    /// Effective weight (the data path's) and health verdict per backend.
    weights: BTreeMap<(String, BackendAddr), f64>,
    health: BTreeMap<(String, BackendAddr), String>,
    /// SYNs to, SYN-ACKs and RSTs from each backend (the passive health signal).
    signals: BTreeMap<(String, BackendAddr), BackendSignals>,
    services_live: usize,
    backends_live: usize,
    edge: crate::ops::edge::EdgeReading,
}

impl<D: DataPath> DataPathCollector<D> {
    fn read(&self) -> anyhow::Result<Reading> {
        self.runtime.with(|runtime| {
            let controller = runtime.controller();
            let plan = controller
                .plan()
                .ok_or_else(|| anyhow::anyhow!("not programmed yet"))?;
            let snapshot = Snapshot::read(plan, controller.dataplane())?;
            let mut weights = BTreeMap::new();
            let mut health = BTreeMap::new();
            let mut signals = BTreeMap::new();
            for b in &plan.backends {
                let at = BackendAddr {
                    address: b.at.address,
                    port: b.at.port,
                };
                let key = (b.at.service.clone(), at);
                weights.insert(key.clone(), b.value.weight_milli as f64 / RING_WEIGHT_SCALE);
                signals.insert(key.clone(), controller.dataplane().backend_signals(b.id)?);
                let verdict = runtime.fleet().health(&b.at).unwrap_or(Health::Unknown);
                health.insert(key, verdict.to_string());
            }
            Ok(Reading {
                config: runtime.config().clone(),
                snapshot,
                weights,
                health,
                signals,
                services_live: plan.services.len(),
                backends_live: plan.backends.len(),
                edge: crate::ops::edge::read(controller, plan)?,
            })
        })
    }
}

impl<D: DataPath> Collector for DataPathCollector<D> {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.encode_lbd(&mut encoder)?;
        // A failed read leaves only build info: a scrape with missing series is better
        // than a failed scrape, and lbd logs the cause.
        let r = match self.read() {
            Ok(r) => r,
            Err(e) => {
                log::warn!("metrics: reading counters: {e:#}");
                return Ok(());
            }
        };
        let mut services = ServiceFamilies::new();
        let mut backends = BackendFamilies::new();
        let mut zones = ZoneFamilies::new();
        for s in &r.config.services {
            let mut service_active = 0u64;
            // Zones in a stable order, with every drained zone even without backends.
            let mut zone_totals: BTreeMap<&str, BackendSample> = s
                .drained_zones
                .iter()
                .map(|zone| (zone.as_str(), BackendSample::default()))
                .collect();
            for b in &s.backends {
                let sample = backends.push(&r, s, b);
                service_active += sample.active_flows;
                let total = zone_totals.entry(&b.zone).or_default();
                total.traffic.accumulate(&sample.traffic);
                total.active_flows += sample.active_flows;
            }
            services.push(&r, s, service_active);
            for (zone, total) in zone_totals {
                zones.push(s, zone, &total);
            }
        }
        let reasons = datapath_packets(&r.snapshot.reasons);
        let [entries, capacity] = map_usage(&r);
        let edge = edge_families(&r.edge);
        let families = (services.all().into_iter())
            .chain(backends.all())
            .chain(zones.all())
            .chain([&reasons, &entries, &capacity])
            .chain(&edge);
        for family in families {
            family.encode(&mut encoder)?;
        }
        Ok(())
    }
}

impl<D: DataPath> DataPathCollector<D> {
    /// lbd's own series, which need no counters from the data path.
    fn encode_lbd(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut build = Family::new("lb_build_info", "lbd's version", MetricType::Gauge);
        build.push(
            vec![("version", env!("CARGO_PKG_VERSION").to_string())],
            1.0,
        );
        build.encode(encoder)?;
        // No labels: encoded bare (`name value`), as an empty label set would be `{}`.
        let persist = encoder.encode_descriptor(
            "lb_state_persist_failures",
            "API changes (or their undo) that could not be written to the state file",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(self.runtime.persist_failures()).encode(persist)?;
        let mut refused = Family::new(
            "lb_api_changes_refused",
            "API changes refused and taken back, by reason: table_full (a data-path table \
             sized by limits.* had no room)",
            MetricType::Counter,
        );
        refused.push(
            vec![("reason", REASON_TABLE_FULL.to_string())],
            self.runtime.refused_table_full() as f64,
        );
        refused.encode(encoder)
    }
}

/// `labels` plus one more label.
fn with(labels: &Labels, name: &'static str, value: &str) -> Labels {
    let mut labels = labels.clone();
    labels.push((name, value.to_string()));
    labels
}

/// 1 when `on`, 0 otherwise: the value of a state gauge.
fn flag(on: bool) -> f64 {
    if on {
        1.0
    } else {
        0.0
    }
}

impl Family {
    /// One sample per direction of traffic.
    fn push_directions(&mut self, labels: &Labels, to_backend: u64, to_client: u64) {
        self.push(with(labels, "direction", "to_backend"), to_backend as f64);
        self.push(with(labels, "direction", "to_client"), to_client as f64);
    }
}

/// `lb_service_*`: one sample (or one per direction) per service.
struct ServiceFamilies {
    info: Family,
    packets: Family,
    bytes: Family,
    new_flows: Family,
    active: Family,
    stateless: Family,
    from_replies: Family,
    unproven_acks: Family,
    reverse_mapped: Family,
}

impl ServiceFamilies {
    fn new() -> Self {
        use MetricType::{Counter, Gauge};
        Self {
            info: Family::new(
                "lb_service_info",
                "1 per configured service; its VIP, port, protocol, forwarding mode and \
                 address family (ipv4, ipv6) as labels, to select services by them",
                Gauge,
            ),
            packets: Family::new(
                "lb_service_packets",
                "Packets rewritten per service and direction",
                Counter,
            ),
            bytes: Family::new(
                "lb_service_bytes",
                "Bytes rewritten per service and direction (Ethernet + IP length)",
                Counter,
            ),
            new_flows: Family::new(
                "lb_service_new_flows",
                "Flows (connections) created per service",
                Counter,
            ),
            active: Family::new("lb_service_active_flows", "Open flows per service", Gauge),
            stateless: Family::new(
                "lb_service_stateless_forwards",
                "Client packets without a flow entry forwarded by the table, recording nothing",
                Counter,
            ),
            from_replies: Family::new(
                "lb_service_flows_from_replies",
                "Flows recorded by a backend's reply to a stateless forward",
                Counter,
            ),
            unproven_acks: Family::new(
                "lb_service_unproven_acks",
                "Client ACKs of a handshake in the SYN cache that acknowledge no SYN-ACK that passed (spoofed SYN and ACK pairs), forwarded by the table, recording nothing",
                Counter,
            ),
            reverse_mapped: Family::new(
                "lb_service_replies_reverse_mapped",
                "Backend replies with no flow entry and no SYN-cache slot translated by the reverse map (stateless_return)",
                Counter,
            ),
        }
    }

    /// Service `s`, whose backends hold `active_flows` open flows between them.
    fn push(&mut self, r: &Reading, s: &ServiceConfig, active_flows: u64) {
        let labels = vec![("service", s.name.clone())];
        let family = if s.vip.is_ipv6() { "ipv6" } else { "ipv4" };
        self.info.push(
            vec![
                ("service", s.name.clone()),
                ("vip", s.vip.to_string()),
                ("port", s.port.to_string()),
                ("protocol", s.protocol.name().to_string()),
                ("mode", s.mode.name().to_string()),
                ("family", family.to_string()),
            ],
            1.0,
        );
        let t = r
            .snapshot
            .services
            .get(&s.name)
            .copied()
            .unwrap_or_default();
        self.packets
            .push_directions(&labels, t.packets_to_backend, t.packets_to_client);
        self.bytes
            .push_directions(&labels, t.bytes_to_backend, t.bytes_to_client);
        self.new_flows.push(labels.clone(), t.new_flows as f64);
        self.active.push(labels.clone(), active_flows as f64);
        self.stateless
            .push(labels.clone(), t.stateless_forwards as f64);
        self.from_replies
            .push(labels.clone(), t.flows_from_replies as f64);
        self.unproven_acks
            .push(labels.clone(), t.unproven_acks as f64);
        self.reverse_mapped
            .push(labels, t.replies_reverse_mapped as f64);
    }

    fn all(&self) -> [&Family; 9] {
        [
            &self.info,
            &self.packets,
            &self.bytes,
            &self.new_flows,
            &self.active,
            &self.stateless,
            &self.from_replies,
            &self.unproven_acks,
            &self.reverse_mapped,
        ]
    }
}

/// `lb_backend_*`: traffic, passive signals, health and weights per backend.
struct BackendFamilies {
    signals: Family,
    packets: Family,
    bytes: Family,
    new_flows: Family,
    active: Family,
    health: Family,
    weight: Family,
    configured: Family,
    draining: Family,
}

impl BackendFamilies {
    fn new() -> Self {
        use MetricType::{Counter, Gauge};
        Self {
            signals: Family::new(
                "lb_backend_signals",
                "SYNs forwarded to, SYN-ACKs and RSTs from each backend (signal: syn, syn_ack, reset)",
                Counter,
            ),
            packets: Family::new(
                "lb_backend_packets",
                "Packets rewritten per backend and direction",
                Counter,
            ),
            bytes: Family::new(
                "lb_backend_bytes",
                "Bytes rewritten per backend and direction (Ethernet + IP length)",
                Counter,
            ),
            new_flows: Family::new(
                "lb_backend_new_flows",
                "Flows (connections) created per backend",
                Counter,
            ),
            active: Family::new("lb_backend_active_flows", "Open flows per backend", Gauge),
            health: Family::new(
                "lb_backend_health_state",
                "1 for the backend's current health state (healthy, unhealthy, unknown)",
                Gauge,
            ),
            weight: Family::new(
                "lb_backend_effective_weight",
                "Weight the data path uses for the backend",
                Gauge,
            ),
            configured: Family::new(
                "lb_backend_configured_weight",
                "Weight set by the operator",
                Gauge,
            ),
            draining: Family::new(
                "lb_backend_draining",
                "1 when the operator set the backend to draining",
                Gauge,
            ),
        }
    }

    /// Backend `b` of service `s`; returns its counters, which its zone and service sum.
    fn push(&mut self, r: &Reading, s: &ServiceConfig, b: &BackendConfig) -> BackendSample {
        let at = BackendAddr::from(b);
        let key = (s.name.clone(), at);
        let sample = r.snapshot.backends.get(&key).copied().unwrap_or_default();
        let labels = vec![
            ("service", s.name.clone()),
            ("backend", at.to_string()),
            ("zone", b.zone.clone()),
        ];
        let tr = sample.traffic;
        self.packets
            .push_directions(&labels, tr.packets_to_backend, tr.packets_to_client);
        self.bytes
            .push_directions(&labels, tr.bytes_to_backend, tr.bytes_to_client);
        self.new_flows.push(labels.clone(), tr.new_flows as f64);
        self.active.push(labels.clone(), sample.active_flows as f64);
        let sig = r.signals.get(&key).copied().unwrap_or_default();
        for (signal, n) in [
            ("syn", sig.syns),
            ("syn_ack", sig.syn_acks),
            ("reset", sig.resets),
            ("syn_retransmit", sig.syn_retransmits),
            ("udp_flow", sig.datagram_flows),
            ("port_unreachable", sig.unreachables),
        ] {
            self.signals.push(with(&labels, "signal", signal), n as f64);
        }
        let state = r.health.get(&key).map(String::as_str).unwrap_or("unknown");
        for candidate in ["healthy", "unhealthy", "unknown"] {
            let labels = with(&labels, "state", candidate);
            self.health.push(labels, flag(candidate == state));
        }
        let effective = r.weights.get(&key).copied().unwrap_or(0.0);
        self.weight.push(labels.clone(), effective);
        self.configured.push(labels.clone(), b.weight);
        let draining = b.state == BackendState::Draining;
        self.draining.push(labels, flag(draining));
        sample
    }

    fn all(&self) -> [&Family; 9] {
        [
            &self.signals,
            &self.packets,
            &self.bytes,
            &self.new_flows,
            &self.active,
            &self.health,
            &self.weight,
            &self.configured,
            &self.draining,
        ]
    }
}

/// `lb_zone_*`: each service's backends summed per zone.
struct ZoneFamilies {
    packets: Family,
    bytes: Family,
    new_flows: Family,
    active: Family,
    drained: Family,
}

impl ZoneFamilies {
    fn new() -> Self {
        use MetricType::{Counter, Gauge};
        Self {
            packets: Family::new(
                "lb_zone_packets",
                "Packets rewritten per service, zone and direction",
                Counter,
            ),
            bytes: Family::new(
                "lb_zone_bytes",
                "Bytes rewritten per service, zone and direction",
                Counter,
            ),
            new_flows: Family::new(
                "lb_zone_new_flows",
                "Flows created per service and zone",
                Counter,
            ),
            active: Family::new(
                "lb_zone_active_flows",
                "Open flows per service and zone",
                Gauge,
            ),
            drained: Family::new(
                "lb_zone_drained",
                "1 when the zone is drained in the service",
                Gauge,
            ),
        }
    }

    /// `zone` of service `s`, with the sum of its backends' counters.
    fn push(&mut self, s: &ServiceConfig, zone: &str, total: &BackendSample) {
        let labels = vec![("service", s.name.clone()), ("zone", zone.to_string())];
        let t = total.traffic;
        self.packets
            .push_directions(&labels, t.packets_to_backend, t.packets_to_client);
        self.bytes
            .push_directions(&labels, t.bytes_to_backend, t.bytes_to_client);
        self.new_flows.push(labels.clone(), t.new_flows as f64);
        self.active.push(labels.clone(), total.active_flows as f64);
        let drained = s.drained_zones.iter().any(|d| d == zone);
        self.drained.push(labels, flag(drained));
    }

    fn all(&self) -> [&Family; 5] {
        [
            &self.packets,
            &self.bytes,
            &self.new_flows,
            &self.active,
            &self.drained,
        ]
    }
}

/// `lb_datapath_packets`: the data path's reason counters, in [`REASONS`] order.
fn datapath_packets(counts: &[u64]) -> Family {
    let mut reasons = Family::new(
        "lb_datapath_packets",
        "Packets by what the data path did and why (pass_*, drop_*, tx_*, redirect_*)",
        MetricType::Counter,
    );
    for ((_, name), n) in REASONS.iter().zip(counts) {
        let action = name.split('_').next().unwrap_or("pass").to_string();
        reasons.push(
            vec![("action", action), ("reason", name.to_string())],
            *n as f64,
        );
    }
    reasons
}

/// Edge protection's families (see [`super::edge`]).
fn edge_families(e: &crate::ops::edge::EdgeReading) -> [Family; 3] {
    let mut rules = Family::new(
        "lb_edge_rule_matches",
        "Packets without a flow entry whose source a rule decided, per service and rule",
        MetricType::Counter,
    );
    for r in &e.rules {
        let labels = vec![
            ("service", r.service.clone()),
            ("verdict", r.verdict.to_string()),
            ("rule", r.rule.clone()),
        ];
        rules.push(labels, r.matches as f64);
    }
    let mut not_allowed = Family::new(
        "lb_edge_not_allowed",
        "Packets without a flow entry refused because no allow rule of the service matched",
        MetricType::Counter,
    );
    for (service, n) in &e.not_allowed {
        not_allowed.push(vec![("service", service.clone())], *n as f64);
    }
    let mut limited = Family::new(
        "lb_edge_rate_limited",
        "SYNs dropped by the service's per-source rate limit",
        MetricType::Counter,
    );
    for (service, n) in &e.rate_limited {
        limited.push(vec![("service", service.clone())], *n as f64);
    }
    [rules, not_allowed, limited]
}

/// `lb_map_entries` and `lb_map_capacity` of the services, backends and flow maps.
fn map_usage(r: &Reading) -> [Family; 2] {
    let limits = &r.config.limits;
    let mut entries = Family::new(
        "lb_map_entries",
        "Entries in use per kernel map (flows: forward entries at the last scan)",
        MetricType::Gauge,
    );
    let mut capacity = Family::new(
        "lb_map_capacity",
        "Capacity per kernel map",
        MetricType::Gauge,
    );
    for (map, used, cap) in [
        ("services", r.services_live as f64, limits.max_services),
        ("backends", r.backends_live as f64, limits.max_backends),
        (
            "flows",
            r.snapshot.flow_entries as f64,
            limits.flow_table_size,
        ),
        (
            "flows_overflow",
            r.snapshot.flow_overflow_entries as f64,
            overflow_entries(limits.flow_table_size),
        ),
        (
            "flows6",
            r.snapshot.flow_entries6 as f64,
            limits.flow_table_size6,
        ),
    ] {
        entries.push(vec![("map", map.to_string())], used);
        capacity.push(vec![("map", map.to_string())], cap);
    }
    [entries, capacity]
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use lb_common::counters::TrafficCounters;
    use prometheus_client::{encoding::text, registry::Registry};

    use super::*;
    use crate::{
        control::health::machine::Failure,
        control::runtime::Runtime,
        control::tables::Controller,
        dataplane::{FakeCounters, FakeDataplane},
        model::config,
        model::plan::BackendRef,
        ops::shared::SharedRuntime,
    };

    fn traffic(base: u64) -> TrafficCounters {
        TrafficCounters {
            packets_to_backend: base + 1,
            packets_to_client: base + 2,
            bytes_to_backend: base + 3,
            bytes_to_client: base + 4,
            new_flows: base + 5,
            stateless_forwards: base + 6,
            flows_from_replies: base + 7,
            unproven_acks: base + 8,
            replies_reverse_mapped: base + 9,
        }
    }

    /// The fake data path with a distinct, non-zero value in every counter of the
    /// config's ids, so every series of the exposition carries a number that says where
    /// it came from.
    fn counting() -> FakeDataplane {
        let ids = 0..64u32;
        let mut fake = FakeDataplane::new(13, 1);
        fake.counters = FakeCounters {
            services: ids
                .clone()
                .map(|id| (id, traffic(1000 * (u64::from(id) + 1))))
                .collect(),
            backends: ids
                .clone()
                .map(|id| (id, traffic(10 * (u64::from(id) + 1))))
                .collect(),
            active_flows: ids.clone().map(|id| (id, u64::from(id) + 8)).collect(),
            reasons: (0..REASONS.len() as u64).map(|slot| 3 * slot + 1).collect(),
            flow_entries: 42,
            flow_entries6: 17,
            flow_overflow_entries: 9,
            ..FakeCounters::default()
        };
        fake.signals = ids
            .map(|id| {
                let id64 = u64::from(id);
                let signals = BackendSignals {
                    syns: 100 * id64 + 1,
                    syn_acks: 100 * id64 + 2,
                    resets: 100 * id64 + 3,
                    syn_retransmits: 100 * id64 + 4,
                    datagram_flows: 100 * id64 + 5,
                    unreachables: 100 * id64 + 6,
                };
                (id, signals)
            })
            .collect();
        fake
    }

    const CONFIG: &str = "\
node: { zone: az-a }
interfaces: [eth0]
cluster: { ring_size: 13 }
limits: { max_services: 8, max_backends: 64, flow_table_size: 4096 }
services:
  - name: web
    vip: 10.0.0.100
    port: 80
    drained_zones: [az-c]
    zone_weights: { az-a: 0.5 }
    backends:
      - { address: 10.1.0.11, port: 8080, zone: az-a, weight: 3 }
      - { address: 10.1.0.12, port: 8080, zone: az-b, weight: 2, state: draining }
      - { address: 10.1.0.13, port: 8080, zone: az-b }
  - name: db
    vip: 10.0.0.101
    port: 5432
    backends:
      - { address: 10.2.0.21, port: 5432, zone: az-a }
";

    /// Every family of the data path, for a fixed config and fixed counters, exactly as
    /// lbd exposes it: the names, labels, order and values scrapers and dashboards read.
    #[test]
    fn the_data_path_exposition_is_unchanged_for_fixed_counters() {
        let c = config::parse(CONFIG).unwrap();
        let controller = Controller::new(counting(), 13);
        let (runtime, _) = Runtime::start(c, controller, std::time::Instant::now()).unwrap();
        let shared = Arc::new(SharedRuntime::new(runtime));
        let web = |last: u8| BackendRef {
            service: "web".into(),
            address: format!("10.1.0.{last}").parse().unwrap(),
            port: 8080,
        };
        for _ in 0..3 {
            shared.on_probe(&web(11), &Ok(()), Duration::ZERO).unwrap();
            shared
                .on_probe(&web(13), &Err(Failure::Refused), Duration::ZERO)
                .unwrap();
        }
        let mut registry = Registry::default();
        registry.register_collector(Box::new(DataPathCollector::new(shared)));
        let mut text = String::new();
        text::encode(&mut text, &registry).unwrap();
        let version = concat!("version=\"", env!("CARGO_PKG_VERSION"), "\"");
        let text = text.replace(version, "version=\"VERSION\"");
        let expected = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/data_path_metrics.txt"
        ));
        assert_eq!(text, expected, "the exposition changed:\n{text}");
    }

    /// An IPv6 backend's `backend` label is `[address]:port`, as a Prometheus `instance`
    /// label writes it: the brackets keep the port apart from the address's colons; the
    /// service's info carries its family and bare VIP.
    #[test]
    fn an_ipv6_backend_is_labelled_in_brackets() {
        let c = config::parse(
            "node: { zone: az-a }\ninterfaces: [eth0]\ncluster: { ring_size: 13 }\n\
             services:\n  - name: web6\n    vip: 2001:db8::100\n    port: 443\n    \
             backends:\n      - { address: 2001:db8:1::11, port: 8443, zone: az-a }\n",
        )
        .unwrap();
        let controller = Controller::new(FakeDataplane::new(13, 1), 13);
        let (runtime, _) = Runtime::start(c, controller, std::time::Instant::now()).unwrap();
        let mut registry = Registry::default();
        registry.register_collector(Box::new(DataPathCollector::new(Arc::new(
            SharedRuntime::new(runtime),
        ))));
        let mut text = String::new();
        text::encode(&mut text, &registry).unwrap();
        assert!(
            text.lines().any(|l| l
                == "lb_backend_draining{service=\"web6\",backend=\"[2001:db8:1::11]:8443\",zone=\"az-a\"} 0.0"),
            "{text}"
        );
        assert!(
            text.lines().any(|l| l
                == "lb_service_info{service=\"web6\",vip=\"2001:db8::100\",port=\"443\",protocol=\"tcp\",mode=\"nat\",family=\"ipv6\"} 1.0"),
            "{text}"
        );
    }
}
