//! The rules of the direct-server-return modes (`dsr_l2`, `ipip`, `gue`; see
//! docs/dsr.md): the node only steers the client's packets, unchanged, and never sees a
//! reply, so ports are not rewritten, placement must be a hash every node agrees on, and
//! what needs the replies (`stateless_return`) means nothing.
use super::{
    collector::Collector,
    model::{Policy, ServiceConfig},
    SynProxyMode,
};

/// Reports what a DSR service `s` at `at` cannot do.
pub(super) fn check_dsr(c: &mut Collector, at: &str, s: &ServiceConfig) {
    if !s.mode.is_dsr() {
        return;
    }
    let mode = s.mode.name();
    if matches!(s.policy, Policy::RoundRobin | Policy::LeastConn) {
        c.err(
            format!("{at}.policy"),
            format!(
                "mode {mode} places every flow by a hash (maglev or source_hash): its nodes \
                 never see a reply, so a node that did not see a connection's first packets \
                 must find its backend by the table alone, which round_robin and least_conn \
                 do not give"
            ),
        );
    }
    if s.stateless_return {
        c.err(
            format!("{at}.stateless_return"),
            format!(
                "mode {mode}: backends answer clients directly, no reply crosses the node, \
                 so there is nothing to translate; remove stateless_return"
            ),
        );
    }
    if s.syn_proxy != SynProxyMode::Off {
        c.err(
            format!("{at}.syn_proxy"),
            format!(
                "mode {mode}: the proxy must shift the backend's sequence numbers in its \
                 replies, which never cross the node in this mode (docs/edge-protection.md, \
                 SYN proxy); use syn_proxy with mode nat"
            ),
        );
    }
    for (j, b) in s.backends.iter().enumerate() {
        if b.port != s.port {
            c.err(
                format!("{at}.backends[{j}].port"),
                format!(
                    "{} differs from the service's port {}: mode {mode} does not rewrite \
                     ports, so a backend must listen on the VIP's port (give it port {})",
                    b.port, s.port, s.port
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::model::config::parse;

    fn errors(service: &str) -> Vec<(String, String)> {
        let text = format!(
            "node: {{ zone: az-a }}\ninterfaces: [eth0]\nservices:\n  - {{ name: web, vip: \
             10.0.0.100, port: 80, {service} }}\n"
        );
        match parse(&text) {
            Ok(_) => Vec::new(),
            Err(e) => e.errors.into_iter().map(|f| (f.field, f.message)).collect(),
        }
    }

    #[test]
    fn dsr_modes_parse_and_keep_the_vip_port() {
        for mode in ["nat", "dsr_l2", "ipip", "gue"] {
            let ok =
                format!("mode: {mode}, backends: [{{ address: 10.1.0.11, port: 80, zone: az-a }}]");
            assert_eq!(errors(&ok), Vec::new(), "{mode}");
        }
        let moved = "mode: ipip, backends: [{ address: 10.1.0.11, port: 8080, zone: az-a }]";
        assert_eq!(
            errors(moved),
            vec![(
                "services[0].backends[0].port".to_string(),
                "8080 differs from the service's port 80: mode ipip does not rewrite ports, \
                 so a backend must listen on the VIP's port (give it port 80)"
                    .to_string()
            )]
        );
        // NAT rewrites the port.
        let nat = "mode: nat, backends: [{ address: 10.1.0.11, port: 8080, zone: az-a }]";
        assert_eq!(errors(nat), Vec::new());
    }

    #[test]
    fn dsr_modes_refuse_what_needs_replies_or_a_per_node_choice() {
        let fields = |service: &str| -> Vec<String> {
            errors(service).into_iter().map(|(f, _)| f).collect()
        };
        assert_eq!(
            fields("mode: gue, policy: round_robin"),
            ["services[0].policy"]
        );
        assert_eq!(
            fields("mode: dsr_l2, policy: least_conn"),
            ["services[0].policy"]
        );
        assert_eq!(
            fields("mode: dsr_l2, policy: source_hash"),
            Vec::<String>::new()
        );
        assert_eq!(
            fields("mode: ipip, stateless_return: true"),
            ["services[0].stateless_return"]
        );
        assert_eq!(
            fields("mode: gue, syn_proxy: on"),
            ["services[0].syn_proxy"]
        );
        assert_eq!(
            fields("mode: dsr_l2, syn_proxy: auto"),
            ["services[0].syn_proxy"]
        );
        assert_eq!(fields("mode: tunnel").len(), 1);
    }
}
