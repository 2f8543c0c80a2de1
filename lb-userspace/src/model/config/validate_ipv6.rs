//! The rules of IPv6 services (see docs/ipv6.md): a service's backends are of its VIP's
//! family (NAT translates addresses within one family, the DSR modes wrap a packet in its
//! own family), and an IPv6 service is served without the feature whose kernel state is
//! IPv4 only so far (the SYN proxy). Refusing it names the key rather than letting the
//! data path pass the service's packets to the kernel.
use std::net::IpAddr;

use super::{
    collector::Collector,
    model::{BackendConfig, ServiceConfig},
    SynProxyMode,
};
use crate::model::family::family_name;

/// Reports an IPv6 address no VIP or backend can have (the unicast checks are the
/// caller's).
pub(super) fn check_address(c: &mut Collector, field: &str, address: IpAddr) {
    let IpAddr::V6(v6) = address else {
        return;
    };
    if let Some(v4) = v6.to_ipv4_mapped() {
        c.err(
            field,
            format!("{address} is an IPv4-mapped IPv6 address: write the IPv4 address {v4}"),
        );
    } else if v6.segments()[0] & 0xffc0 == 0xfe80 {
        c.err(
            field,
            format!(
                "{address} is link-local (fe80::/10): it means nothing beyond one link, give a \
                 global or unique local address"
            ),
        );
    }
}

/// Reports what IPv6 service `s` at `at` cannot do yet.
pub(super) fn check_ipv6(c: &mut Collector, at: &str, s: &ServiceConfig) {
    if !s.vip.is_ipv6() {
        return;
    }
    if s.syn_proxy != SynProxyMode::Off {
        c.err(
            format!("{at}.syn_proxy"),
            "the SYN proxy is not applied to IPv6 services yet (its cookies are IPv4's); \
             remove syn_proxy",
        );
    }
}

/// Reports backend `b` (at `bt`) of service `s` if it is not of the VIP's family.
pub(super) fn check_backend_family(
    c: &mut Collector,
    bt: &str,
    s: &ServiceConfig,
    b: &BackendConfig,
) {
    if b.address.is_ipv6() == s.vip.is_ipv6() {
        return;
    }
    let why = if s.mode.is_dsr() {
        "the direct server return modes do not carry one family to the other yet"
    } else {
        "NAT translates addresses within one family"
    };
    c.err(
        format!("{bt}.address"),
        format!(
            "{} is {} but the service's VIP {} is {}: a service's backends are of its VIP's \
             family ({why})",
            b.address,
            family_name(b.address),
            s.vip,
            family_name(s.vip)
        ),
    );
}

#[cfg(test)]
mod tests {
    use crate::model::config::parse;

    fn errors(yaml_services: &str) -> Vec<(String, String)> {
        let text = format!(
            "node: {{ zone: az-a }}\ninterfaces: [eth0]\ncluster: {{ ring_size: 13 }}\n\
             services:\n{yaml_services}"
        );
        match parse(&text) {
            Ok(_) => Vec::new(),
            Err(e) => e.errors.into_iter().map(|f| (f.field, f.message)).collect(),
        }
    }

    fn service(vip: &str, rest: &str) -> String {
        format!("  - {{ name: web, vip: \"{vip}\", port: 80, {rest} }}\n")
    }

    #[test]
    fn an_ipv6_nat_service_with_ipv6_backends_is_valid() {
        let ok = service(
            "2001:db8::100",
            "backends: [{ address: \"2001:db8:1::11\", port: 8080, zone: az-a }, \
             { address: \"2001:db8:1::12\", port: 8080, zone: az-a }]",
        );
        assert_eq!(errors(&ok), Vec::new());
        // Unquoted, as operators write them.
        let plain = "  - name: web\n    vip: 2001:db8::100\n    port: 80\n    backends:\n      \
                     - { address: 2001:db8:1::11, port: 8080, zone: az-a }\n";
        assert_eq!(errors(plain), Vec::new());
    }

    #[test]
    fn a_backend_of_the_other_family_is_refused_naming_both_addresses() {
        assert_eq!(
            errors(&service(
                "2001:db8::100",
                "backends: [{ address: 10.1.0.11, port: 8080, zone: az-a }]"
            )),
            [(
                "services[0].backends[0].address".to_string(),
                "10.1.0.11 is IPv4 but the service's VIP 2001:db8::100 is IPv6: a service's \
                 backends are of its VIP's family (NAT translates addresses within one family)"
                    .to_string()
            )]
        );
        assert_eq!(
            errors(&service(
                "10.0.0.100",
                "mode: ipip, backends: [{ address: \"2001:db8:1::11\", port: 80, zone: az-a }]"
            )),
            [(
                "services[0].backends[0].address".to_string(),
                "2001:db8:1::11 is IPv6 but the service's VIP 10.0.0.100 is IPv4: a service's \
                 backends are of its VIP's family (the direct server return modes do not carry \
                 one family to the other yet)"
                    .to_string()
            )]
        );
    }

    #[test]
    fn an_ipv6_dsr_service_with_ipv6_backends_on_its_port_is_valid() {
        for mode in ["dsr_l2", "ipip", "gue"] {
            let ok = service(
                "2001:db8::100",
                &format!(
                    "mode: {mode}, backends: [{{ address: \"2001:db8:1::11\", port: 80, zone: \
                     az-a }}]"
                ),
            );
            assert_eq!(errors(&ok), Vec::new(), "{mode}");
        }
    }

    #[test]
    fn an_ipv6_service_refuses_the_syn_proxy_by_key() {
        let b = "backends: [{ address: \"2001:db8:1::11\", port: 80, zone: az-a }]";
        let proxy = "the SYN proxy is not applied to IPv6 services yet (its cookies are \
                     IPv4's); remove syn_proxy";
        for (rest, field, message) in [
            ("syn_proxy: on", "services[0].syn_proxy", proxy.to_string()),
            (
                "syn_proxy: auto",
                "services[0].syn_proxy",
                proxy.to_string(),
            ),
        ] {
            assert_eq!(
                errors(&service("2001:db8::100", &format!("{rest}, {b}"))),
                [(field.to_string(), message)],
                "{rest}"
            );
        }
    }

    #[test]
    fn mapped_link_local_and_non_unicast_ipv6_addresses_are_refused() {
        let b = |address: &str| {
            service(
                "2001:db8::100",
                &format!("backends: [{{ address: \"{address}\", port: 80, zone: az-a }}]"),
            )
        };
        assert_eq!(
            errors(&b("::ffff:10.1.0.11")),
            [(
                "services[0].backends[0].address".to_string(),
                "::ffff:10.1.0.11 is an IPv4-mapped IPv6 address: write the IPv4 address \
                 10.1.0.11"
                    .to_string()
            )]
        );
        assert_eq!(
            errors(&b("fe80::1")),
            [(
                "services[0].backends[0].address".to_string(),
                "fe80::1 is link-local (fe80::/10): it means nothing beyond one link, give a \
                 global or unique local address"
                    .to_string()
            )]
        );
        for not_unicast in ["::", "::1", "ff02::1"] {
            assert_eq!(
                errors(&service(not_unicast, "backends: []")),
                [(
                    "services[0].vip".to_string(),
                    format!("{not_unicast} is not a unicast address")
                )]
            );
        }
    }
}
