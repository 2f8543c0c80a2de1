use super::*;

const VALID: &str = r#"
node:
  zone: az-a
interfaces: [veth-c, veth-b]
services:
  - name: web
    vip: 10.0.0.100
    port: 80
    protocol: tcp
    mode: nat
    policy: maglev
    backends:
      - { address: 10.1.0.11, port: 8080, zone: az-a, weight: 1 }
      - { address: 10.1.0.12, port: 8080, zone: az-b }
"#;

#[test]
fn the_documented_example_parses_with_defaults() {
    let c = parse(VALID).unwrap();
    assert_eq!(c.node.zone, "az-a");
    assert_eq!(c.interfaces, ["veth-c", "veth-b"]);
    assert_eq!(c.cluster.ring_size, 65537);
    assert_eq!(c.services[0].backends[1].weight, 1);
    assert_eq!(c.xdp_mode, XdpAttachMode::Auto);
}

/// Each case replaces one piece of the valid file and names the field and the words the
/// error must carry.
#[test]
fn each_kind_of_bad_value_is_rejected_with_a_named_error() {
    let cases: &[(&str, &str, &str, &str)] = &[
        ("zone: az-a", "zone: ''", "node.zone", "must not be empty"),
        ("zone: az-a", "zone: 'a b'", "node.zone", "may only contain"),
        (
            "interfaces: [veth-c, veth-b]",
            "interfaces: []",
            "interfaces",
            "at least one",
        ),
        (
            "interfaces: [veth-c, veth-b]",
            "interfaces: [veth-c, veth-c]",
            "interfaces[1]",
            "listed twice",
        ),
        (
            "interfaces: [veth-c, veth-b]",
            "interfaces: [a-very-long-interface-name]",
            "interfaces[0]",
            "not a valid interface name",
        ),
        (
            "vip: 10.0.0.100",
            "vip: 10.0.0.300",
            "services[0].vip",
            "invalid",
        ),
        (
            "vip: 10.0.0.100",
            "vip: 0.0.0.0",
            "services[0].vip",
            "not a unicast",
        ),
        (
            "vip: 10.0.0.100",
            "vip: 224.0.0.1",
            "services[0].vip",
            "not a unicast",
        ),
        ("port: 80", "port: 0", "services[0].port", "1..=65535"),
        (
            "port: 80",
            "port: 70000",
            "services[0].port",
            "invalid value",
        ),
        (
            "protocol: tcp",
            "protocol: sctp",
            "services[0].protocol",
            "unknown variant",
        ),
        (
            "mode: nat",
            "mode: tunnel",
            "services[0].mode",
            "unknown variant",
        ),
        (
            "policy: maglev",
            "policy: random",
            "services[0].policy",
            "unknown variant",
        ),
        (
            "name: web",
            "name: ''",
            "services[0].name",
            "must not be empty",
        ),
        (
            "weight: 1 }",
            "weight: 0 }",
            "services[0].backends[0].weight",
            "out of range",
        ),
        (
            "weight: 1 }",
            "weight: 1001 }",
            "services[0].backends[0].weight",
            "out of range",
        ),
        (
            "weight: 1 }",
            "weight: -1 }",
            "services[0].backends[0].weight",
            "invalid type",
        ),
        (
            "address: 10.1.0.11, port: 8080",
            "address: 10.1.0.12, port: 8080",
            "services[0].backends[1].address",
            "listed twice",
        ),
        (
            "address: 10.1.0.11,",
            "address: 10.0.0.100,",
            "services[0].backends[0].address",
            "own VIP",
        ),
        (
            "address: 10.1.0.11,",
            "address: 127.0.0.1,",
            "services[0].backends[0].address",
            "not a unicast",
        ),
        (
            "address: 10.1.0.11, port: 8080",
            "address: 10.1.0.11, port: 0",
            "services[0].backends[0].port",
            "1..=65535",
        ),
        (
            "zone: az-b }",
            "zone: '' }",
            "services[0].backends[1].zone",
            "must not be empty",
        ),
        (
            "zone: az-b }",
            "zone: az-b, colour: red }",
            "services[0].backends[1]",
            "unknown field `colour`",
        ),
        ("node:", "nodes:", "", "unknown field `nodes`"),
        (
            "interfaces: [veth-c, veth-b]",
            "interfaces: [veth-c]\ncluster: { ring_size: 65536 }",
            "cluster.ring_size",
            "not prime",
        ),
        (
            "interfaces: [veth-c, veth-b]",
            "interfaces: [veth-c]\ncluster: { ring_size: 7 }",
            "cluster.ring_size",
            "out of range",
        ),
        (
            "interfaces: [veth-c, veth-b]",
            "interfaces: [veth-c]\nlimits: { max_services: 0 }",
            "limits.max_services",
            "at least 1",
        ),
        (
            "interfaces: [veth-c, veth-b]",
            "interfaces: [veth-c]\nlimits: { max_services: 16385 }",
            "limits.max_services",
            "more than the most supported, 16384",
        ),
        (
            "interfaces: [veth-c, veth-b]",
            "interfaces: [veth-c]\nlimits: { max_backends: 1048577 }",
            "limits.max_backends",
            "more than the most supported, 1048576",
        ),
        (
            "interfaces: [veth-c, veth-b]",
            "interfaces: [veth-c]\nlimits: { max_backends: 1 }",
            "limits.max_backends",
            "max_backends is 1",
        ),
        (
            "interfaces: [veth-c, veth-b]",
            "interfaces: [veth-c]\nlimits: { flow_table_size: 10 }",
            "limits.flow_table_size",
            "below the minimum",
        ),
        (
            "interfaces: [veth-c, veth-b]",
            "interfaces: [veth-c]\nlimits: { flow_table_size: 2147483647 }",
            "limits.flow_table_size",
            "more than the kernel allows in one hash map, 134217728",
        ),
        (
            "interfaces: [veth-c, veth-b]",
            "interfaces: [veth-c]\nlimits: { flow_table_size6: 1023 }",
            "limits.flow_table_size6",
            "1023 is below the minimum 1024",
        ),
        (
            "interfaces: [veth-c, veth-b]",
            "interfaces: [veth-c]\nlimits: { flow_table_size6: 134217729 }",
            "limits.flow_table_size6",
            "134217729 is more than the kernel allows in one hash map, 134217728",
        ),
        (
            "interfaces: [veth-c, veth-b]",
            "interfaces: [veth-c]\nxdp_mode: turbo",
            "xdp_mode",
            "unknown variant",
        ),
        (
            "interfaces: [veth-c, veth-b]",
            "interfaces: [veth-c]\npin_dir: lbd",
            "pin_dir",
            "absolute path",
        ),
        (
            "interfaces: [veth-c, veth-b]",
            "interfaces: [veth-c]\npin_dir: /sys/fs/bpf/../x",
            "pin_dir",
            "absolute path",
        ),
        (
            "interfaces: [veth-c, veth-b]",
            "interfaces: [veth-c]\nflow_timeouts: { syn: 0s }",
            "flow_timeouts.syn",
            "out of range",
        ),
        (
            "interfaces: [veth-c, veth-b]",
            "interfaces: [veth-c]\nflow_timeouts: { established: 2d }",
            "flow_timeouts.established",
            "unknown unit",
        ),
    ];
    for (from, to, field, words) in cases {
        assert!(
            VALID.contains(from),
            "case {to}: `{from}` is not in the base file"
        );
        let text = VALID.replacen(from, to, 1);
        let err = match parse(&text) {
            Ok(_) => panic!("`{to}` was accepted"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains(field) && err.contains(words),
            "`{to}`: expected `{field}` and `{words}` in:\n{err}"
        );
    }
}

#[test]
fn a_second_service_on_the_same_vip_and_port_is_rejected() {
    let text = format!("{VALID}  - {{ name: web2, vip: 10.0.0.100, port: 80, backends: [] }}\n");
    let err = parse(&text).unwrap_err().to_string();
    assert!(
        err.contains("services[1].vip") && err.contains("already used"),
        "{err}"
    );
}

#[test]
fn all_problems_are_reported_at_once() {
    let text = VALID
        .replace("port: 80\n", "port: 0\n")
        .replace("zone: az-a\n", "zone: ''\n");
    let err = parse(&text).unwrap_err();
    assert_eq!(err.errors.len(), 2, "{err}");
}

#[test]
fn api_metrics_and_state_file_have_secure_defaults() {
    let c = parse(VALID).unwrap();
    assert_eq!(c.api.socket, std::path::Path::new("/run/lbd/lbd.sock"));
    assert_eq!(c.api.listen, None);
    assert_eq!(c.metrics.listen.to_string(), "127.0.0.1:9464");
    assert_eq!(
        c.state_file,
        std::path::Path::new("/var/lib/lbd/state.yaml")
    );
    assert_eq!(c.services[0].backends[0].state, BackendState::Active);
    assert!(c.services[0].drained_zones.is_empty());
}

#[test]
fn registration_tokens_need_the_listener_their_own_files_and_valid_services() {
    let text = format!(
        "{VALID}api:\n  registration_tokens:\n    - {{ file: tokens/web, services: [] }}\n    \
         - {{ file: /etc/lbd/token, services: [web, 'a b'] }}\n    \
         - {{ file: /etc/lbd/token, services: [web] }}\n"
    );
    let e = parse(&text).unwrap_err().to_string();
    for expected in [
        "api.registration_tokens: only the TCP listener takes tokens",
        "api.registration_tokens[0].file: `tokens/web` must be an absolute path",
        "api.registration_tokens[0].services: must name at least one service",
        "api.registration_tokens[1].services[1]: `a b` may only contain",
        "api.registration_tokens[2].file: `/etc/lbd/token` is already another token's file",
    ] {
        assert!(e.contains(expected), "{expected}: {e}");
    }
    let ok = format!(
        "{VALID}api:\n  listen: 127.0.0.1:9500\n  token_file: /etc/lbd/token\n  \
         registration_tokens: [ {{ file: /etc/lbd/web.token, services: [web] }} ]\n"
    );
    let c = parse(&ok).unwrap();
    assert_eq!(c.api.registration_tokens[0].services, ["web"]);
}

#[test]
fn a_tcp_listener_without_a_token_file_is_refused() {
    let text = format!("{VALID}api:\n  listen: 127.0.0.1:9500\n");
    let e = parse(&text).unwrap_err().to_string();
    assert!(
        e.contains("api.listen: 127.0.0.1:9500 needs api.token_file"),
        "{e}"
    );
    let ok = format!("{VALID}api:\n  listen: 127.0.0.1:9500\n  token_file: /etc/lbd/token\n");
    assert_eq!(
        parse(&ok).unwrap().api.listen.unwrap().to_string(),
        "127.0.0.1:9500"
    );
}

#[test]
fn a_relative_state_file_is_refused() {
    let relative = format!("{VALID}state_file: state.yaml\n");
    let e = parse(&relative).unwrap_err().to_string();
    assert!(
        e.contains("state_file: `state.yaml` must be an absolute path"),
        "{e}"
    );
}

/// The config contract, every key spelled out.
const POLICY: &str = r#"
node:
  zone: az-a
interfaces: [veth-c]
services:
  - name: web
    vip: 10.0.0.100
    port: 80
    backends:
      - { address: 10.1.0.11, port: 8080, zone: az-a }
      - { address: 10.1.0.12, port: 8080, zone: az-c, state: draining }
    health:
      type: http
      port: 9090
      path: /healthz
      expect_status: 200-399
      interval: 1s
      timeout: 500ms
      healthy_threshold: 2
      unhealthy_threshold: 3
    cross_zone: false
    zone_weights: { az-a: 1, az-b: 1, az-c: 0.5 }
    zone_failover_threshold: 0.5
    drained_zones: []
    deregistration_delay: 30s
    slow_start: 10s
    on_all_unhealthy: fail_open
"#;

#[test]
fn the_policy_contract_parses() {
    use std::time::Duration;
    let c = parse(POLICY).unwrap();
    let s = &c.services[0];
    let h = &s.health;
    assert_eq!(h.kind, ProbeType::Http);
    assert_eq!(h.port, Some(9090));
    assert_eq!(h.path(), "/healthz");
    assert_eq!(h.expect_status(), StatusRange { min: 200, max: 399 });
    assert_eq!(h.interval, Duration::from_secs(1));
    assert_eq!(h.timeout, Duration::from_millis(500));
    assert_eq!((h.healthy_threshold, h.unhealthy_threshold), (2, 3));
    assert!(!s.cross_zone);
    assert_eq!(s.zone_weight("az-c"), 0.5);
    assert_eq!(s.zone_weight("az-z"), 1.0, "unlisted zones weigh 1");
    assert_eq!(s.zone_failover_threshold, 0.5);
    assert_eq!(s.deregistration_delay, Duration::from_secs(30));
    assert_eq!(s.slow_start, Duration::from_secs(10));
    assert_eq!(s.on_all_unhealthy, OnAllUnhealthy::FailOpen);
    assert_eq!(s.backends[0].state, BackendState::Active);
    assert_eq!(s.backends[1].state, BackendState::Draining);
}

#[test]
fn every_policy_key_has_its_documented_default() {
    use std::time::Duration;
    let c = parse(VALID).unwrap();
    let s = &c.services[0];
    let h = &s.health;
    assert_eq!(h.kind, ProbeType::Tcp);
    assert_eq!(h.port, None, "probes go to the backend's own port");
    assert_eq!(h.path(), "/");
    assert_eq!(h.expect_status().to_string(), "200-399");
    assert_eq!(h.interval, Duration::from_secs(2));
    assert_eq!(h.timeout, Duration::from_secs(1));
    assert_eq!((h.healthy_threshold, h.unhealthy_threshold), (2, 2));
    assert_eq!(
        (h.passive_failure_ratio(false), h.passive_min_attempts),
        (0.5, 20)
    );
    assert_eq!(h.passive_max_ejection_percent, 10);
    assert_eq!((h.flap_window, h.flap_flips), (10, 7));
    assert!(s.cross_zone);
    assert!(s.zone_weights.is_empty());
    assert_eq!(s.zone_failover_threshold, 0.5);
    assert!(s.drained_zones.is_empty());
    assert_eq!(s.deregistration_delay, Duration::from_secs(30));
    assert_eq!(s.slow_start, Duration::ZERO);
    assert_eq!(s.on_all_unhealthy, OnAllUnhealthy::FailOpen);
    assert_eq!(s.backends[0].state, BackendState::Active);
}

/// Like `each_kind_of_bad_value_is_rejected_with_a_named_error`, over the policy keys.
#[test]
fn each_bad_policy_value_is_rejected_with_a_named_error() {
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "type: http",
            "type: icmp",
            "services[0].health.type",
            "unknown variant",
        ),
        (
            "port: 9090",
            "port: 0",
            "services[0].health.port",
            "1..=65535",
        ),
        (
            "path: /healthz",
            "path: healthz",
            "services[0].health.path",
            "must start with `/`",
        ),
        (
            "path: /healthz",
            "path: '/a b'",
            "services[0].health.path",
            "visible ASCII",
        ),
        (
            "expect_status: 200-399",
            "expect_status: 400-200",
            "services[0].health.expect_status",
            "not a range",
        ),
        (
            "expect_status: 200-399",
            "expect_status: 200-700",
            "services[0].health.expect_status",
            "within 100-599",
        ),
        (
            "expect_status: 200-399",
            "expect_status: ok",
            "services[0].health.expect_status",
            "not a status code",
        ),
        (
            "interval: 1s",
            "interval: 1",
            "services[0].health.interval",
            "needs a unit",
        ),
        (
            "interval: 1s",
            "interval: 1d",
            "services[0].health.interval",
            "unknown unit",
        ),
        (
            "interval: 1s",
            "interval: 10ms",
            "services[0].health.interval",
            "out of range 100ms..=5m",
        ),
        (
            "interval: 1s",
            "interval: 10m",
            "services[0].health.interval",
            "out of range",
        ),
        (
            "timeout: 500ms",
            "timeout: 2s",
            "services[0].health.timeout",
            "longer than the interval 1s",
        ),
        (
            "timeout: 500ms",
            "timeout: 1ms",
            "services[0].health.timeout",
            "shorter than the minimum",
        ),
        (
            "healthy_threshold: 2",
            "healthy_threshold: 0",
            "services[0].health.healthy_threshold",
            "out of range 1..=10",
        ),
        (
            "unhealthy_threshold: 3",
            "unhealthy_threshold: 11",
            "services[0].health.unhealthy_threshold",
            "out of range",
        ),
        (
            "unhealthy_threshold: 3",
            "unhealthy_threshold: 3\n      passive_failure_ratio: 1.5",
            "services[0].health.passive_failure_ratio",
            "out of range 0..=1",
        ),
        (
            "unhealthy_threshold: 3",
            "unhealthy_threshold: 3\n      passive_min_attempts: 0",
            "services[0].health.passive_min_attempts",
            "at least 1",
        ),
        (
            "unhealthy_threshold: 3",
            "unhealthy_threshold: 3\n      passive_max_ejection_percent: 101",
            "services[0].health.passive_max_ejection_percent",
            "out of range 0..=100",
        ),
        (
            "unhealthy_threshold: 3",
            "unhealthy_threshold: 3\n      flap_window: 65",
            "services[0].health.flap_window",
            "out of range 4..=64",
        ),
        (
            "unhealthy_threshold: 3",
            "unhealthy_threshold: 3\n      flap_window: 2",
            "services[0].health.flap_window",
            "out of range 4..=64",
        ),
        (
            "unhealthy_threshold: 3",
            "unhealthy_threshold: 3\n      flap_window: 5\n      flap_flips: 5",
            "services[0].health.flap_flips",
            "out of range 3..=4",
        ),
        (
            "unhealthy_threshold: 3",
            "unhealthy_threshold: 3\n      flap_window: 5\n      flap_flips: 2",
            "services[0].health.flap_flips",
            "out of range 3..=4",
        ),
        (
            "unhealthy_threshold: 3",
            "unhealthy_threshold: 3\n      colour: red",
            "services[0].health",
            "unknown field `colour`",
        ),
        (
            "type: http",
            "type: tcp",
            "services[0].health.path",
            "only to `type: http`",
        ),
        (
            "type: http",
            "type: tcp",
            "services[0].health.expect_status",
            "only to `type: http`",
        ),
        (
            "cross_zone: false",
            "cross_zone: sometimes",
            "services[0].cross_zone",
            "invalid type",
        ),
        (
            "az-c: 0.5",
            "az-c: -1",
            "services[0].zone_weights.az-c",
            "out of range 0..=100",
        ),
        (
            "az-c: 0.5",
            "'a c': 1",
            "services[0].zone_weights.a c",
            "may only contain",
        ),
        (
            "zone_failover_threshold: 0.5",
            "zone_failover_threshold: 2",
            "services[0].zone_failover_threshold",
            "out of range 0..=1",
        ),
        (
            "drained_zones: []",
            "drained_zones: [az-b, az-b]",
            "services[0].drained_zones[1]",
            "listed twice",
        ),
        (
            "drained_zones: []",
            "drained_zones: ['']",
            "services[0].drained_zones[0]",
            "must not be empty",
        ),
        (
            "deregistration_delay: 30s",
            "deregistration_delay: 2h",
            "services[0].deregistration_delay",
            "longer than the maximum 1h",
        ),
        (
            "deregistration_delay: 30s",
            "deregistration_delay: soon",
            "services[0].deregistration_delay",
            "unknown unit",
        ),
        (
            "slow_start: 10s",
            "slow_start: 1h",
            "services[0].slow_start",
            "longer than the maximum 15m",
        ),
        (
            "on_all_unhealthy: fail_open",
            "on_all_unhealthy: panic",
            "services[0].on_all_unhealthy",
            "unknown variant",
        ),
        (
            "state: draining",
            "state: gone",
            "services[0].backends[1].state",
            "unknown variant",
        ),
    ];
    for (from, to, field, words) in cases {
        assert!(
            POLICY.contains(from),
            "case {to}: `{from}` is not in the base file"
        );
        let text = POLICY.replacen(from, to, 1);
        let err = match parse(&text) {
            Ok(_) => panic!("`{to}` was accepted"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains(field) && err.contains(words),
            "`{to}`: expected `{field}` and `{words}` in:\n{err}"
        );
    }
}

#[test]
fn a_reload_may_not_change_what_the_data_path_was_loaded_with() {
    let running = parse(VALID).unwrap();
    let mut changed = running.clone();
    changed.services[0].backends.pop();
    changed.services[0].health.interval = std::time::Duration::from_secs(5);
    assert_eq!(check_reloadable(&running, &changed), Ok(()));
    for (edit, field) in [
        ("interfaces: [veth-c, veth-b]", "interfaces"),
        ("cluster: { hash_seed: 1 }", "cluster.hash_seed"),
        ("cluster: { ring_size: 1009 }", "cluster.ring_size"),
        (
            "limits: { flow_table_size: 2048 }",
            "limits.flow_table_size",
        ),
        (
            "limits: { flow_table_size6: 2048 }",
            "limits.flow_table_size6",
        ),
        ("limits: { max_backends: 8 }", "limits.max_backends"),
        ("xdp_mode: generic", "xdp_mode"),
        ("tc_interfaces: [veth-c]", "tc_interfaces"),
        ("pin_dir: /sys/fs/bpf/other", "pin_dir"),
        ("api: { socket: /run/other.sock }", "api.socket"),
        ("metrics: { listen: 127.0.0.1:9999 }", "metrics.listen"),
        ("state_file: /var/lib/other.yaml", "state_file"),
        (
            "api: { listen: 127.0.0.1:9000, token_file: /etc/lbd/token }",
            "api.listen",
        ),
        (
            "events: { hook: { command: [/usr/local/bin/on-event] } }",
            "events.hook",
        ),
    ] {
        let text = if edit.starts_with("interfaces") {
            VALID.replace("interfaces: [veth-c, veth-b]", "interfaces: [veth-c]")
        } else {
            VALID.replace(
                "interfaces: [veth-c, veth-b]",
                &format!("interfaces: [veth-c, veth-b]\n{edit}"),
            )
        };
        let err = check_reloadable(&running, &parse(&text).unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!("{field}: cannot change")) && err.contains("restart lbd"),
            "{edit}: {err}"
        );
    }
}

#[test]
fn a_reload_that_only_writes_fixed_keys_differently_is_accepted() {
    let running = parse(VALID).unwrap();
    let pin_dir = running.pin_dir.display().to_string();
    let state_file = running.state_file.display().to_string();
    let text = VALID.replace(
        "interfaces: [veth-c, veth-b]",
        &format!(
            "interfaces: [veth-b, veth-c]\npin_dir: {pin_dir}/\nstate_file: {}",
            state_file.replacen('/', "//", 2)
        ),
    );
    let reordered = parse(&text).unwrap();
    assert_ne!(reordered.interfaces, running.interfaces);
    assert_ne!(
        reordered.pin_dir.display().to_string(),
        pin_dir,
        "the file writes it differently"
    );
    assert_eq!(check_reloadable(&running, &reordered), Ok(()));
}

#[test]
fn the_shipped_example_config_is_valid() {
    let c = parse(include_str!("../../../../deploy/lb.yaml")).unwrap();
    assert_eq!(c.services[0].health.kind, ProbeType::Http);
    assert_eq!(c.services[0].health.path(), "/healthz");
}

/// Nodes built from the example and nodes left on defaults sit behind one router: the
/// cluster keys they show must be the defaults, or the two would hash flows differently.
#[test]
fn the_example_config_and_the_config_reference_show_the_default_cluster_keys() {
    let example = parse(include_str!("../../../../deploy/lb.yaml")).unwrap();
    assert_eq!(example.cluster, ClusterConfig::default(), "deploy/lb.yaml");

    let reference = include_str!("../../../../docs/config.md");
    let block = reference
        .split("```yaml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("docs/config.md has a yaml block");
    let shown: serde_yaml_ng::Value = serde_yaml_ng::from_str(block).unwrap();
    let cluster: ClusterConfig = serde_yaml_ng::from_value(shown["cluster"].clone()).unwrap();
    assert_eq!(
        cluster,
        ClusterConfig::default(),
        "docs/config.md's example"
    );
}
