//! The edge protection tables (see `lb_common::edge`) a config asks for: each protected
//! service's rules as trie entries with a hit counter each, its rate limit, and the VIP
//! addresses (`unlisted_ports` is a global set at load, see `crate::kernel`). Pure, so the controller only diffs and writes.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use lb_common::edge::{
    EdgeRule, EdgeService, DEFAULT_RATE_PREFIX6_LEN, EDGE_ALLOW, EDGE_DENY, EDGE_RULES_PER_SERVICE,
    EDGE_S_ALLOW_LIST, EDGE_S_RATE_LIMIT, EDGE_S_RULES,
};

use super::config::SourceNet;
use super::{config::Config, plan::Plan};

/// A rule's place in the trie: its service's id and source prefix (of the service's
/// VIP's family).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EdgeRuleKey {
    pub service: u32,
    pub net: IpAddr,
    pub len: u8,
}

impl std::fmt::Display for EdgeRuleKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.net, self.len)
    }
}

/// What the edge maps hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EdgeTables {
    /// The trie: every protected service's rules.
    pub rules: BTreeMap<EdgeRuleKey, EdgeRule>,
    /// Settings by service id; an id not listed has none (all zero).
    pub services: BTreeMap<u32, EdgeService>,
    /// Every IPv4 VIP address, for `unlisted_ports`.
    pub vips: BTreeSet<Ipv4Addr>,
    /// Every IPv6 VIP address, for `unlisted_ports`.
    pub vips6: BTreeSet<Ipv6Addr>,
    /// The VIP and port of each protected service, by id. The data path's drop memo is
    /// keyed by VIP, port and source, so it must be forgotten when a protected service
    /// moves or another service takes its VIP:port, which changes no rule: listing them
    /// here makes such a change a write of the tables, and every write clears the memo.
    pub listeners: BTreeMap<u32, (IpAddr, u16)>,
}

/// The tables `config` asks for with the ids of `plan`. A rule keeps the hit counter it
/// had in `previous` (same service id, prefix and verdict), so its count carries on
/// across changes to other rules; a new rule takes the lowest free slot of its
/// service's block. A prefix listed both ways is a deny rule (deny wins).
pub fn edge_tables(
    config: &Config,
    plan: &Plan,
    previous: &BTreeMap<EdgeRuleKey, EdgeRule>,
) -> EdgeTables {
    let mut tables = EdgeTables::default();
    let ids: BTreeMap<&str, u32> = plan
        .services
        .iter()
        .map(|p| (p.name.as_str(), p.id))
        .collect();
    for s in &config.services {
        match s.vip {
            IpAddr::V4(vip) => tables.vips.insert(vip),
            IpAddr::V6(vip) => tables.vips6.insert(vip),
        };
        let Some(&id) = ids.get(s.name.as_str()) else {
            continue;
        };
        let mut wanted: BTreeMap<EdgeRuleKey, u32> = BTreeMap::new();
        let key = |net: &SourceNet| EdgeRuleKey {
            service: id,
            net: net.address,
            len: net.len,
        };
        for net in &s.filter.allow {
            wanted.insert(key(net), EDGE_ALLOW);
        }
        for net in &s.filter.deny {
            wanted.insert(key(net), EDGE_DENY);
        }
        let mut flags = 0;
        if !wanted.is_empty() {
            flags |= EDGE_S_RULES;
        }
        if wanted.values().any(|v| *v == EDGE_ALLOW) || !s.filter.allow.is_empty() {
            flags |= EDGE_S_ALLOW_LIST;
        }
        let (rate, burst, block_secs, prefix6_len) = match &s.rate_limit {
            Some(limit) => {
                flags |= EDGE_S_RATE_LIMIT;
                let prefix6_len = match s.vip {
                    IpAddr::V6(_) => limit
                        .ipv6_prefix_len
                        .map_or(DEFAULT_RATE_PREFIX6_LEN, u32::from),
                    IpAddr::V4(_) => 0,
                };
                (
                    limit.syns_per_second,
                    limit.burst,
                    limit.block.as_secs() as u32,
                    prefix6_len,
                )
            }
            None => (0, 0, 0, 0),
        };
        if flags != 0 {
            tables.listeners.insert(id, (s.vip, s.port));
            tables.services.insert(
                id,
                EdgeService {
                    flags,
                    rate,
                    burst,
                    block_secs,
                    prefix6_len,
                },
            );
        }
        assign_counters(id, &wanted, previous, &mut tables.rules);
    }
    tables
}

/// Gives each of service `id`'s `wanted` rules a hit counter: its previous one if it had
/// one, else the lowest free slot of the service's block.
fn assign_counters(
    id: u32,
    wanted: &BTreeMap<EdgeRuleKey, u32>,
    previous: &BTreeMap<EdgeRuleKey, EdgeRule>,
    rules: &mut BTreeMap<EdgeRuleKey, EdgeRule>,
) {
    let block = id * EDGE_RULES_PER_SERVICE..(id + 1) * EDGE_RULES_PER_SERVICE;
    let kept = |key: &EdgeRuleKey, verdict: u32| {
        previous
            .get(key)
            .filter(|r| r.verdict == verdict && block.contains(&r.counter))
            .copied()
    };
    let mut used = BTreeSet::new();
    for (key, &verdict) in wanted {
        if let Some(rule) = kept(key, verdict) {
            used.insert(rule.counter);
            rules.insert(*key, rule);
        }
    }
    let mut free = block.clone().filter(|c| !used.contains(c));
    for (key, &verdict) in wanted {
        if rules.contains_key(key) {
            continue;
        }
        // Validation caps a service's rules at the block's size.
        let Some(counter) = free.next() else { break };
        rules.insert(*key, EdgeRule { counter, verdict });
    }
}

/// The hit counters `next` gives to rules that did not hold them in `previous`: zeroed
/// before the rules are written, so a new rule starts from 0.
pub fn fresh_counters(
    previous: &BTreeMap<EdgeRuleKey, EdgeRule>,
    next: &BTreeMap<EdgeRuleKey, EdgeRule>,
) -> Vec<u32> {
    next.iter()
        .filter(|(key, rule)| previous.get(key) != Some(rule))
        .map(|(_, rule)| rule.counter)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        config,
        plan::{assign_ids, plan, Ids, Overlay},
    };

    const BASE: &str =
        "node: { zone: a }\ninterfaces: [eth0]\ncluster: { ring_size: 13 }\nservices:\n";

    fn tables(services: &str, previous: &BTreeMap<EdgeRuleKey, EdgeRule>) -> EdgeTables {
        let config = config::parse(&format!("{BASE}{services}")).unwrap();
        let overlay = Overlay::default();
        let ids = assign_ids(&config, &overlay, &Ids::default());
        let plan = plan(&config, &overlay, &ids, None);
        edge_tables(&config, &plan, previous)
    }

    fn rule(t: &EdgeTables, net: &str, len: u8) -> EdgeRule {
        let key = EdgeRuleKey {
            service: 0,
            net: net.parse().unwrap(),
            len,
        };
        t.rules[&key]
    }

    const WEB: &str = "  - { name: web, vip: 10.0.0.1, port: 80, filter: { allow: [10.0.0.0/8], deny: [10.1.0.0/16, 10.0.0.0/8] } }\n";

    #[test]
    fn a_prefix_listed_both_ways_is_denied_and_each_rule_has_its_own_counter() {
        let t = tables(WEB, &BTreeMap::new());
        assert_eq!(t.rules.len(), 2);
        assert_eq!(rule(&t, "10.0.0.0", 8).verdict, EDGE_DENY);
        assert_eq!(rule(&t, "10.1.0.0", 16).verdict, EDGE_DENY);
        let counters: BTreeSet<u32> = t.rules.values().map(|r| r.counter).collect();
        assert_eq!(counters, BTreeSet::from([0, 1]));
        assert_eq!(
            t.services[&0].flags,
            EDGE_S_RULES | EDGE_S_ALLOW_LIST,
            "an allow list, even when its only prefix is also denied"
        );
        assert!(t.vips.contains(&Ipv4Addr::new(10, 0, 0, 1)));
    }

    #[test]
    fn a_rule_keeps_its_counter_when_others_come_and_go() {
        let first = tables(
            "  - { name: web, vip: 10.0.0.1, port: 80, filter: { deny: [10.1.0.0/16, 10.2.0.0/16] } }\n",
            &BTreeMap::new(),
        );
        let kept = rule(&first, "10.2.0.0", 16).counter;
        let second = tables(
            "  - { name: web, vip: 10.0.0.1, port: 80, filter: { deny: [10.0.0.0/16, 10.2.0.0/16] } }\n",
            &first.rules,
        );
        assert_eq!(rule(&second, "10.2.0.0", 16).counter, kept);
        assert_eq!(
            rule(&second, "10.0.0.0", 16).counter,
            rule(&first, "10.1.0.0", 16).counter,
            "the removed rule's slot is reused"
        );
        assert_eq!(
            fresh_counters(&first.rules, &second.rules),
            vec![rule(&second, "10.0.0.0", 16).counter]
        );
    }

    #[test]
    fn an_ipv6_services_buckets_are_per_prefix_of_the_configured_length_or_a_64() {
        let t = tables(
            "  - { name: web6, vip: \"2001:db8::100\", port: 80, rate_limit: { syns_per_second: 5, burst: 10 } }\n  - { name: api6, vip: \"2001:db8::101\", port: 80, rate_limit: { syns_per_second: 5, burst: 10, ipv6_prefix_len: 56 } }\n",
            &BTreeMap::new(),
        );
        let lens: Vec<u32> = t.services.values().map(|s| s.prefix6_len).collect();
        assert_eq!(lens, [64, 56]);
        let vips6: Vec<String> = t.vips6.iter().map(|v| v.to_string()).collect();
        assert_eq!(vips6, ["2001:db8::100", "2001:db8::101"]);
        assert!(t.vips.is_empty());
    }

    #[test]
    fn a_rate_limit_alone_protects_a_service_and_unprotected_ones_have_no_settings() {
        let t = tables(
            "  - { name: web, vip: 10.0.0.1, port: 80, rate_limit: { syns_per_second: 5, burst: 10, block: 30s } }\n  - { name: api, vip: 10.0.0.2, port: 80 }\n",
            &BTreeMap::new(),
        );
        assert_eq!(
            t.services,
            BTreeMap::from([(
                0,
                EdgeService {
                    flags: EDGE_S_RATE_LIMIT,
                    rate: 5,
                    burst: 10,
                    block_secs: 30,
                    prefix6_len: 0,
                }
            )])
        );
        assert!(t.rules.is_empty());
        assert_eq!(t.vips.len(), 2);
    }
}
