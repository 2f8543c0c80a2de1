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
            "interfaces: [veth-c]\nxdp_mode: turbo",
            "xdp_mode",
            "unknown variant",
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
fn drain_keys_parse_and_are_validated() {
    let text = VALID.replace("zone: az-b }", "zone: az-b, state: draining }")
        + "    drained_zones: [az-c]\n";
    let c = parse(&text).unwrap();
    assert_eq!(c.services[0].backends[1].state, BackendState::Draining);
    assert_eq!(c.services[0].drained_zones, ["az-c"]);
    let twice = VALID.to_string() + "    drained_zones: [az-c, az-c]\n";
    let e = parse(&twice).unwrap_err().to_string();
    assert!(
        e.contains("services[0].drained_zones[1]: zone `az-c` is listed twice"),
        "{e}"
    );
    let bad = VALID.replace("zone: az-b }", "zone: az-b, state: gone }");
    assert!(parse(&bad).is_err());
    let relative = format!("{VALID}state_file: state.yaml\n");
    let e = parse(&relative).unwrap_err().to_string();
    assert!(
        e.contains("state_file: `state.yaml` must be an absolute path"),
        "{e}"
    );
}
