//! The rules of UDP services (see docs/udp.md): placed by a hash, and none of the
//! settings that act on TCP handshakes. Every forwarding mode carries UDP, and source
//! rules (`filter`) apply to a datagram that opens a flow.
use super::{
    collector::Collector,
    model::{Policy, Protocol, ServiceConfig},
    SynProxyMode,
};

/// Reports what UDP service `s` at `at` cannot do.
pub(super) fn check_udp(c: &mut Collector, at: &str, s: &ServiceConfig) {
    if s.protocol != Protocol::Udp {
        return;
    }
    if matches!(s.policy, Policy::RoundRobin | Policy::LeastConn) {
        c.err(
            format!("{at}.policy"),
            "protocol udp places flows by a hash (maglev or source_hash): with no handshake, \
             the first datagram of a flow cannot be told from one whose entry was lost (a \
             restart, an eviction, an ECMP move), so both must go where the table says, \
             which round_robin and least_conn do not give",
        );
    }
    if s.syn_proxy != SynProxyMode::Off {
        c.err(
            format!("{at}.syn_proxy"),
            "protocol udp has no handshake to answer with SYN cookies; remove syn_proxy",
        );
    }
    if s.rate_limit.is_some() {
        c.err(
            format!("{at}.rate_limit"),
            "protocol udp has no SYNs to rate-limit; remove rate_limit",
        );
    }
    if s.stateless_return {
        c.err(
            format!("{at}.stateless_return"),
            "protocol udp: replies are translated by their flow's return entry only; \
             remove stateless_return",
        );
    }
}

#[cfg(test)]
mod tests {
    use crate::model::config::{parse, Protocol};

    fn errors(services: &[&str]) -> Vec<(String, String)> {
        let listed: String = services
            .iter()
            .enumerate()
            .map(|(i, s)| format!("  - {{ name: s{i}, vip: 10.0.0.100, port: 53, {s} }}\n"))
            .collect();
        let text = format!("node: {{ zone: az-a }}\ninterfaces: [eth0]\nservices:\n{listed}");
        match parse(&text) {
            Ok(_) => Vec::new(),
            Err(e) => e.errors.into_iter().map(|f| (f.field, f.message)).collect(),
        }
    }

    #[test]
    fn a_tcp_and_a_udp_service_share_a_vip_and_port_but_two_of_one_protocol_do_not() {
        assert_eq!(errors(&["protocol: tcp", "protocol: udp"]), Vec::new());
        let taken = vec![(
            "services[1].vip".to_string(),
            "10.0.0.100:53 is already used by another service".to_string(),
        )];
        assert_eq!(errors(&["protocol: udp", "protocol: udp"]), taken);
        // No protocol is TCP, as in every config written before UDP services.
        assert_eq!(errors(&["protocol: tcp", "policy: maglev"]), taken);
        let text = "node: { zone: az-a }\ninterfaces: [eth0]\nservices:\n  - { name: dns, \
                    vip: 10.0.0.100, port: 53 }\n";
        assert_eq!(parse(text).unwrap().services[0].protocol, Protocol::Tcp);
    }

    #[test]
    fn a_udp_service_refuses_what_acts_on_handshakes_naming_each_field() {
        let refused = [
            ("policy: round_robin", "services[0].policy"),
            ("policy: least_conn", "services[0].policy"),
            ("syn_proxy: on", "services[0].syn_proxy"),
            (
                "rate_limit: { syns_per_second: 10, burst: 20, block: 30s }",
                "services[0].rate_limit",
            ),
            ("stateless_return: true", "services[0].stateless_return"),
        ];
        for (setting, field) in refused {
            let udp = errors(&[&format!("protocol: udp, {setting}")]);
            let fields: Vec<&str> = udp.iter().map(|(f, _)| f.as_str()).collect();
            assert!(fields.contains(&field), "{setting}: {udp:?}");
            let tcp = errors(&[&format!("protocol: tcp, {setting}")]);
            assert!(
                !tcp.iter().any(|(f, m)| f == field && m.contains("udp")),
                "{setting} on TCP: {tcp:?}"
            );
        }
        let policy = errors(&["protocol: udp, policy: least_conn"]);
        assert!(policy[0].1.contains("maglev or source_hash"), "{policy:?}");
        for ok in [
            "policy: maglev",
            "policy: source_hash",
            "mode: nat",
            "mode: dsr_l2",
            "mode: ipip",
            "mode: gue",
            "filter: { deny: [192.0.2.0/24] }",
        ] {
            assert_eq!(
                errors(&[&format!("protocol: udp, {ok}")]),
                Vec::new(),
                "{ok}"
            );
        }
    }

    #[test]
    fn udp_probes_take_text_or_hex_payloads_and_only_their_own_fields() {
        let ok = "protocol: udp, health: { type: udp, send: \"hex:00ff10\", expect: pong }";
        assert_eq!(errors(&[ok]), Vec::new());
        assert_eq!(
            crate::model::config::probe_payload("hex:00ff10"),
            Ok(vec![0, 0xff, 0x10])
        );
        assert_eq!(
            crate::model::config::probe_payload("hex"),
            Ok(b"hex".to_vec())
        );
        let cases = [
            (
                "health: { type: udp, send: \"hex:0\" }",
                "services[0].health.send",
            ),
            (
                "health: { type: udp, expect: \"hex:zz\" }",
                "services[0].health.expect",
            ),
            (
                "health: { type: udp, expect: \"\" }",
                "services[0].health.expect",
            ),
            ("health: { type: udp, path: /x }", "services[0].health.path"),
            (
                "health: { type: tcp, send: ping }",
                "services[0].health.send",
            ),
            (
                "health: { type: http, expect: pong }",
                "services[0].health.expect",
            ),
        ];
        for (setting, field) in cases {
            let got = errors(&[setting]);
            assert!(got.iter().any(|(f, _)| f == field), "{setting}: {got:?}");
        }
        let long = format!("health: {{ type: udp, send: \"{}\" }}", "x".repeat(513));
        assert_eq!(
            errors(&[&long]),
            vec![(
                "services[0].health.send".to_string(),
                "513 bytes; at most 512".to_string()
            )]
        );
    }
}
