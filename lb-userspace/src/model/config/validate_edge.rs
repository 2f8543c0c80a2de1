//! Validation of a service's edge protection keys (see `super::edge`).
use lb_common::edge::EDGE_RULES_PER_SERVICE;

use super::{
    collector::Collector,
    duration,
    edge::{MAX_BLOCK, MIN_RATE_PREFIX6_LEN},
    model::ServiceConfig,
};
use crate::model::family::family_name;

/// Checks a service's `filter` and `rate_limit`.
pub(super) fn check_edge(c: &mut Collector, at: &str, s: &ServiceConfig) {
    let rules = s.filter.allow.len() + s.filter.deny.len();
    if rules > EDGE_RULES_PER_SERVICE as usize {
        c.err(
            format!("{at}.filter"),
            format!("{rules} rules; a service has at most {EDGE_RULES_PER_SERVICE}"),
        );
    }
    for (list, nets) in [("allow", &s.filter.allow), ("deny", &s.filter.deny)] {
        for (i, net) in nets.iter().enumerate() {
            if nets[..i].contains(net) {
                c.err(
                    format!("{at}.filter.{list}[{i}]"),
                    format!("{net} is listed twice"),
                );
            }
            // A VIP is reached over its own family only (NAT keeps the family), so a rule
            // of the other family could never match: a mistake, not a rule.
            if net.is_ipv6() != s.vip.is_ipv6() {
                c.err(
                    format!("{at}.filter.{list}[{i}]"),
                    format!(
                        "{net} is {} but the service's VIP {} is {}: a service's source rules \
                         are of its VIP's family, as its clients are",
                        family_name(net.address),
                        s.vip,
                        family_name(s.vip)
                    ),
                );
            }
        }
    }
    if let Some(limit) = &s.rate_limit {
        if limit.syns_per_second == 0 {
            c.err(
                format!("{at}.rate_limit.syns_per_second"),
                "must be at least 1 (remove rate_limit to have none)",
            );
        }
        if limit.burst == 0 {
            c.err(format!("{at}.rate_limit.burst"), "must be at least 1");
        }
        match limit.ipv6_prefix_len {
            Some(_) if !s.vip.is_ipv6() => c.err(
                format!("{at}.rate_limit.ipv6_prefix_len"),
                format!(
                    "applies to IPv6 services only (the VIP {} is IPv4, whose buckets are per \
                     address)",
                    s.vip
                ),
            ),
            Some(len) if !(MIN_RATE_PREFIX6_LEN..=128).contains(&len) => c.err(
                format!("{at}.rate_limit.ipv6_prefix_len"),
                format!("{len} is out of range {MIN_RATE_PREFIX6_LEN}..=128"),
            ),
            _ => {}
        }
        if limit.block > MAX_BLOCK || limit.block.subsec_nanos() != 0 {
            c.err(
                format!("{at}.rate_limit.block"),
                format!(
                    "{} must be whole seconds, at most {}",
                    duration::format(limit.block),
                    duration::format(MAX_BLOCK)
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::model::config::parse;

    const BASE: &str =
        "node: { zone: a }\ninterfaces: [eth0]\ncluster: { ring_size: 13 }\nservices:\n";

    fn fields(service: &str) -> Vec<String> {
        match parse(&format!(
            "{BASE}  - {{ name: web, vip: 10.0.0.1, port: 80, {service} }}\n"
        )) {
            Ok(_) => Vec::new(),
            Err(e) => e
                .errors
                .into_iter()
                .map(|e| format!("{}: {}", e.field, e.message))
                .collect(),
        }
    }

    #[test]
    fn rules_and_limits_that_parse_are_accepted() {
        assert_eq!(
            fields("filter: { allow: [10.0.0.0/8], deny: [10.1.0.0/16, 10.0.0.0/8] }, rate_limit: { syns_per_second: 10, burst: 20, block: 30s }"),
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_prefix_with_host_bits_is_refused_by_the_parser() {
        let errors = fields("filter: { deny: [10.1.2.3/8] }");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("address bits beyond /8"), "{errors:?}");
    }

    #[test]
    fn a_rule_of_the_other_family_than_the_vip_is_refused_naming_both() {
        assert_eq!(
            fields("filter: { allow: [10.0.0.0/8], deny: [\"2001:db8:66::/48\"] }"),
            [
                "services[0].filter.deny[0]: 2001:db8:66::/48 is IPv6 but the service's VIP \
              10.0.0.1 is IPv4: a service's source rules are of its VIP's family, as its \
              clients are"
            ]
        );
        let v6 = parse(&format!(
            "{BASE}  - {{ name: web6, vip: \"2001:db8::100\", port: 80, filter: {{ allow: \
             [\"2001:db8:10::/48\", 192.0.2.0/24] }} }}\n"
        ))
        .unwrap_err();
        let got: Vec<String> = v6
            .errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect();
        assert_eq!(
            got,
            [
                "services[0].filter.allow[1]: 192.0.2.0/24 is IPv4 but the service's VIP \
              2001:db8::100 is IPv6: a service's source rules are of its VIP's family, as its \
              clients are"
            ]
        );
    }

    #[test]
    fn an_ipv6_prefix_length_is_for_ipv6_services_and_within_range() {
        assert_eq!(
            fields("rate_limit: { syns_per_second: 1, burst: 1, ipv6_prefix_len: 64 }"),
            [
                "services[0].rate_limit.ipv6_prefix_len: applies to IPv6 services only (the VIP \
              10.0.0.1 is IPv4, whose buckets are per address)"
            ]
        );
        let v6 = |len: u8| {
            parse(&format!(
                "{BASE}  - {{ name: web6, vip: \"2001:db8::100\", port: 80, rate_limit: {{ \
                 syns_per_second: 1, burst: 1, ipv6_prefix_len: {len} }} }}\n"
            ))
            .map(|_| ())
            .map_err(|e| {
                e.errors
                    .iter()
                    .map(|e| format!("{}: {}", e.field, e.message))
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(v6(48), Ok(()));
        assert_eq!(v6(128), Ok(()));
        assert_eq!(
            v6(31),
            Err(vec![
                "services[0].rate_limit.ipv6_prefix_len: 31 is out of range 32..=128".to_string()
            ])
        );
    }

    #[test]
    fn duplicates_too_many_rules_and_empty_limits_are_named() {
        assert_eq!(
            fields("filter: { deny: [10.1.0.0/16, 10.1.0.0/16] }"),
            ["services[0].filter.deny[1]: 10.1.0.0/16 is listed twice"]
        );
        let many: Vec<String> = (0..65).map(|i| format!("10.{i}.0.0/16")).collect();
        assert_eq!(
            fields(&format!("filter: {{ deny: [{}] }}", many.join(", "))),
            ["services[0].filter: 65 rules; a service has at most 64"]
        );
        assert_eq!(
            fields("rate_limit: { syns_per_second: 0, burst: 0, block: 1500ms }"),
            [
                "services[0].rate_limit.syns_per_second: must be at least 1 (remove rate_limit to have none)",
                "services[0].rate_limit.burst: must be at least 1",
                "services[0].rate_limit.block: 1500ms must be whole seconds, at most 1h",
            ]
        );
    }
}
