use std::{
    net::Ipv4Addr,
    sync::Arc,
    time::{Duration, Instant},
};

use crate::{
    control::{health::machine::Failure, runtime::Runtime, tables::Controller},
    dataplane::FakeDataplane,
    model::{
        config::{self, Config},
        plan::BackendRef,
    },
    ops::{
        metrics::Metrics,
        shared::{Shared, SharedRuntime},
    },
};

const RING: u32 = 1009;

/// Services `web` (maglev) and `api` (round robin), backends `10.1.0.<n>:8080` in zone
/// `az-<letter>`, on a node in `zone`.
fn config(zone: &str, cross_zone: bool, web: &[(u8, char)], api: &[(u8, char)]) -> Config {
    let list = |backends: &[(u8, char)]| {
        let entries: Vec<String> = backends
            .iter()
            .map(|(n, z)| format!("{{ address: 10.1.0.{n}, port: 8080, zone: az-{z} }}"))
            .collect();
        entries.join(", ")
    };
    config::parse(&format!(
        "node: {{ zone: {zone} }}\ninterfaces: [eth0]\n\
         cluster: {{ ring_size: {RING}, hash_seed: 7 }}\nservices:\n\
         - {{ name: web, vip: 10.0.0.100, port: 80, cross_zone: {cross_zone}, backends: [{}] }}\n\
         - {{ name: api, vip: 10.0.0.101, port: 80, policy: round_robin, backends: [{}] }}\n",
        list(web),
        list(api),
    ))
    .unwrap()
}

fn node(c: Config) -> Shared<FakeDataplane> {
    let controller = Controller::new(FakeDataplane::new(RING, 7), RING);
    let (runtime, _) = Runtime::start(c, controller, Instant::now()).unwrap();
    Arc::new(SharedRuntime::new(runtime))
}

fn at(service: &str, n: u8) -> BackendRef {
    BackendRef {
        service: service.into(),
        address: Ipv4Addr::new(10, 1, 0, n).into(),
        port: 8080,
    }
}

fn id(node: &Shared<FakeDataplane>, at: &BackendRef) -> u32 {
    node.with(|rt| rt.controller().backend_id(at)).unwrap()
}

/// The value of `metric{service="<service>"}` in a scrape of `node`.
fn sample(node: &Shared<FakeDataplane>, metric: &str, service: &str) -> u64 {
    let text = Metrics::new(node.clone()).encode().unwrap();
    let prefix = format!("{metric}{{service=\"{service}\"}} ");
    let line = text
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} in\n{text}"));
    line[prefix.len()..].parse().unwrap()
}

fn digests(node: &Shared<FakeDataplane>) -> [u64; 4] {
    [
        sample(node, "lb_service_table_digest", "web"),
        sample(node, "lb_service_table_digest", "api"),
        sample(node, "lb_service_config_digest", "web"),
        sample(node, "lb_service_config_digest", "api"),
    ]
}

fn probe(node: &Shared<FakeDataplane>, at: &BackendRef, ok: bool, times: u32) {
    let outcome = if ok { Ok(()) } else { Err(Failure::Refused) };
    for _ in 0..times {
        node.on_probe(at, &outcome, Duration::ZERO).unwrap();
    }
}

/// Two nodes given the same config export the same digests although they numbered the
/// backends differently; one node's own health view makes them differ, and its recovery
/// makes them equal again.
#[test]
fn nodes_with_one_config_and_one_health_view_export_one_digest() {
    let web = [(11, 'a'), (12, 'a'), (13, 'a')];
    let api = [(21, 'a'), (22, 'a'), (23, 'a')];
    let final_config = config("az-a", true, &web, &api);
    let a = node(final_config.clone());
    // Node b saw the backends arrive in another order, so its ids differ.
    let b = node(config("az-a", true, &[(13, 'a'), (12, 'a')], &[(23, 'a')]));
    b.reload(final_config).unwrap();
    for (service, n) in [("web", 11), ("web", 13), ("api", 21), ("api", 23)] {
        assert_ne!(id(&a, &at(service, n)), id(&b, &at(service, n)));
    }
    // Backends added to a running node wait for their probes: until both nodes have
    // seen every backend healthy, their health views (and tables) differ.
    let thresholds = a.desired().services[0].health.clone();
    assert_ne!(digests(&a)[1], digests(&b)[1]);
    let every = web.iter().map(|(n, _)| at("web", *n));
    for backend in every.chain(api.iter().map(|(n, _)| at("api", *n))) {
        probe(&a, &backend, true, thresholds.healthy_threshold);
        probe(&b, &backend, true, thresholds.healthy_threshold);
    }
    let same = digests(&a);
    assert_eq!(same, digests(&b));
    assert!(same.iter().all(|d| *d > 0 && *d < 1 << 48), "{same:x?}");

    // Node a alone finds 10.1.0.12 of `web` unhealthy: its web table differs, its config
    // and the other service's table do not.
    probe(&a, &at("web", 12), false, thresholds.unhealthy_threshold);
    let diverged = digests(&a);
    assert_ne!(diverged[0], same[0]);
    assert_eq!(diverged[1..], same[1..]);
    assert_eq!(digests(&b), same);

    probe(&a, &at("web", 12), true, thresholds.healthy_threshold);
    assert_eq!(digests(&a), same);
}

/// `cross_zone: false` keeps each node's new flows in its own zone, so nodes in two zones
/// build different tables from one config: the digest shows it.
#[test]
fn nodes_in_two_zones_differ_only_without_cross_zone() {
    let web = [(11, 'a'), (12, 'a'), (13, 'b'), (14, 'b')];
    let api = [(21, 'a')];
    for cross_zone in [true, false] {
        let a = digests(&node(config("az-a", cross_zone, &web, &api)));
        let b = digests(&node(config("az-b", cross_zone, &web, &api)));
        assert_eq!(a[1..], b[1..], "cross_zone {cross_zone}");
        assert_eq!(a[0] == b[0], cross_zone, "cross_zone {cross_zone}");
    }
}

/// The tier's alerting rules in deploy/ query only series that lbd exports (`promtool
/// test rules` checks what they do with them, see docs/tier.md).
#[test]
fn the_tier_rules_query_only_exported_metrics() {
    let web = [(11, 'a')];
    let text = Metrics::new(node(config("az-a", true, &web, &web)))
        .encode()
        .unwrap();
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/prometheus/lbd-tier.rules.yml"
    );
    let rules = std::fs::read_to_string(path).unwrap();
    let names = crate::ops::metrics::metric_names_in(&rules);
    assert_eq!(
        names,
        ["lb_service_config_digest", "lb_service_table_digest"]
    );
    for name in names {
        assert!(
            text.lines().any(|l| l.starts_with(&format!("{name}{{"))),
            "the rules query {name}, which lbd does not export"
        );
    }
}
