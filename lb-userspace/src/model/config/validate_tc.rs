//! The rules of NICs attached at tc (`tc_interfaces`, see docs/performance.md, The tc
//! hook): their program, `lb_tc`, carries IPv4 TCP services in NAT mode, and nothing that
//! `lb_xdp` hands to programs of its own. With any such NIC every service must fit it,
//! as every NIC takes every VIP's packets.
use super::{
    collector::Collector,
    edge::UnlistedPorts,
    model::{Config, ForwardingMode, Protocol, ServiceConfig},
    SynProxyMode,
};

/// Checks `tc_interfaces` against `interfaces` and the node-wide settings.
pub(super) fn check_tc_interfaces(c: &mut Collector, config: &Config) {
    let mut seen = std::collections::HashSet::new();
    for (i, name) in config.tc_interfaces.iter().enumerate() {
        let field = format!("tc_interfaces[{i}]");
        if !config.interfaces.contains(name) {
            c.err(
                &field,
                format!("`{name}` is not in `interfaces`; list it there too"),
            );
        }
        if !seen.insert(name) {
            c.err(&field, format!("`{name}` is listed twice"));
        }
    }
    if !config.tc_interfaces.is_empty() && config.unlisted_ports == UnlistedPorts::Drop {
        c.err(
            "unlisted_ports",
            "`drop` is done by XDP's edge program, which NICs in `tc_interfaces` do not \
             run; use `pass` (the default) or attach every NIC with XDP",
        );
    }
}

/// Reports what service `s` at `at` uses that a NIC at tc cannot carry.
pub(super) fn check_tc(c: &mut Collector, config: &Config, at: &str, s: &ServiceConfig) {
    if config.tc_interfaces.is_empty() {
        return;
    }
    let mut refuse = |field: &str, what: &str| {
        c.err(
            format!("{at}.{field}"),
            format!(
                "{what}: the NICs in `tc_interfaces` carry IPv4 TCP services in NAT mode \
                 only, without source rules, rate limits or the SYN proxy; attach every \
                 NIC with XDP (remove `tc_interfaces`) to serve it"
            ),
        );
    };
    if s.vip.is_ipv6() {
        refuse("vip", "an IPv6 VIP");
    }
    if s.protocol == Protocol::Udp {
        refuse("protocol", "protocol udp");
    }
    if s.mode != ForwardingMode::Nat {
        refuse("mode", "direct server return");
    }
    if !s.filter.is_empty() {
        refuse("filter", "source rules");
    }
    if s.rate_limit.is_some() {
        refuse("rate_limit", "a SYN rate limit");
    }
    if s.syn_proxy != SynProxyMode::Off {
        refuse("syn_proxy", "the SYN proxy");
    }
}

#[cfg(test)]
mod tests {
    use crate::model::config::parse;

    fn errors(top: &str, services: &[&str]) -> Vec<(String, String)> {
        let listed: String = services
            .iter()
            .enumerate()
            .map(|(i, s)| {
                // A backend of its own on the VIP's port, as direct server return and
                // stateless_return want.
                format!(
                    "  - {{ name: s{i}, vip: 10.0.0.{}, port: 80, backends: [{{ address: 10.1.0.{}, port: 80, zone: az-a }}], {s} }}\n",
                    100 + i,
                    11 + i
                )
            })
            .collect();
        let text = format!(
            "node: {{ zone: az-a }}\ninterfaces: [eth0, veth0]\n{top}\nservices:\n{listed}"
        );
        match parse(&text) {
            Ok(_) => Vec::new(),
            Err(e) => e.errors.into_iter().map(|f| (f.field, f.message)).collect(),
        }
    }

    fn fields(top: &str, services: &[&str]) -> Vec<String> {
        errors(top, services).into_iter().map(|(f, _)| f).collect()
    }

    #[test]
    fn ipv4_tcp_nat_services_of_every_policy_fit_a_tc_nic() {
        let services = [
            "policy: maglev",
            "policy: round_robin",
            "policy: least_conn",
            "policy: source_hash, stateless_return: true",
        ];
        assert_eq!(errors("tc_interfaces: [veth0]", &services), vec![]);
    }

    #[test]
    fn what_only_xdp_carries_is_refused_at_its_own_field() {
        let services = [
            "protocol: udp",
            "mode: ipip",
            "filter: { deny: [192.0.2.0/24] }",
            "rate_limit: { syns_per_second: 10, burst: 20 }",
            "syn_proxy: on",
            "syn_proxy: auto",
        ];
        assert_eq!(
            fields("tc_interfaces: [veth0]", &services),
            vec![
                "services[0].protocol",
                "services[1].mode",
                "services[2].filter",
                "services[3].rate_limit",
                "services[4].syn_proxy",
                "services[5].syn_proxy",
            ]
        );
        let (_, message) = &errors("tc_interfaces: [veth0]", &services[..1])[0];
        assert!(
            message.starts_with("protocol udp: the NICs in `tc_interfaces`"),
            "{message}"
        );
        // The same services are fine when every NIC runs XDP.
        assert_eq!(errors("", &services), vec![]);
    }

    #[test]
    fn an_ipv6_vip_is_refused_with_a_tc_nic() {
        let text = "node: { zone: az-a }\ninterfaces: [eth0]\ntc_interfaces: [eth0]\nservices:\n  - { name: v6, vip: 2001:db8::100, port: 80, backends: [{ address: 2001:db8:1::11, port: 8080, zone: az-a }] }\n";
        let e = parse(text).expect_err("an IPv6 service with a tc NIC");
        let fields: Vec<&str> = e.errors.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(fields, vec!["services[0].vip"]);
    }

    #[test]
    fn tc_interfaces_must_be_listed_interfaces_once_and_exclude_unlisted_drop() {
        assert_eq!(
            fields("tc_interfaces: [veth1, veth0, veth0]", &[]),
            vec!["tc_interfaces[0]", "tc_interfaces[2]"]
        );
        assert_eq!(
            fields("tc_interfaces: [veth0]\nunlisted_ports: drop", &[]),
            vec!["unlisted_ports"]
        );
        assert_eq!(fields("unlisted_ports: drop", &[]), Vec::<String>::new());
    }
}
