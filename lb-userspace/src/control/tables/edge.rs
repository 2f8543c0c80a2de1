//! The controller's write of the edge protection tables, after each apply (see
//! `crate::model::edge`).
use anyhow::Context as _;

use super::Controller;
use crate::{
    dataplane::Dataplane,
    model::{
        config::Config,
        edge::{edge_tables, fresh_counters, EdgeTables},
    },
};

impl<D: Dataplane> Controller<D> {
    /// Makes the edge maps match the applied plan; nothing is written when they already
    /// do. A service's rules take effect with this write, a moment after its tables.
    pub(super) fn write_edge(&mut self, config: &Config) -> anyhow::Result<()> {
        let Some(plan) = self.plan.as_ref() else {
            return Ok(());
        };
        let tables = edge_tables(config, plan, &self.edge.rules);
        if tables == self.edge {
            return Ok(());
        }
        let fresh = fresh_counters(&self.edge.rules, &tables.rules);
        self.dataplane
            .set_edge_tables(&tables, &fresh)
            .with_context(|| format!("writing the edge tables ({} rules)", tables.rules.len()))?;
        self.edge = tables;
        Ok(())
    }

    /// The edge tables as last written (rules with their hit counters, for metrics).
    pub fn edge_tables(&self) -> &EdgeTables {
        &self.edge
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use lb_common::edge::{EDGE_DENY, EDGE_S_RULES};

    use crate::{
        control::tables::Controller,
        dataplane::{FakeDataplane, Write},
        model::{config, edge::EdgeRuleKey},
    };

    const RING: u32 = 1009;

    fn config_with(filter: &str) -> config::Config {
        config::parse(&format!(
            "node: {{ zone: az-a }}\ninterfaces: [eth0]\ncluster: {{ ring_size: {RING} }}\n\
             services:\n  - {{ name: web, vip: 10.0.0.100, port: 80{filter}, \
             backends: [{{ address: 10.1.0.11, port: 8080, zone: az-a }}] }}\n"
        ))
        .unwrap()
    }

    fn edge_writes(c: &Controller<FakeDataplane>) -> Vec<Vec<u32>> {
        let log = &c.dataplane().log;
        log.iter()
            .filter_map(|w| match w {
                Write::Edge { fresh } => Some(fresh.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn rules_are_written_once_per_change_and_a_new_rule_starts_its_count_at_zero() {
        let mut c = Controller::new(FakeDataplane::new(RING, 7), RING);
        c.apply(&config_with("")).unwrap();
        // Unprotected: only the VIP address is written.
        assert_eq!(edge_writes(&c), vec![Vec::<u32>::new()]);
        assert!(c.dataplane().edge.services.is_empty());

        let denied = config_with(", filter: { deny: [192.0.2.0/24] }");
        c.apply(&denied).unwrap();
        c.apply(&denied).unwrap();
        let key = EdgeRuleKey {
            service: 0,
            net: Ipv4Addr::new(192, 0, 2, 0).into(),
            len: 24,
        };
        let rule = c.dataplane().edge.rules[&key];
        assert_eq!(rule.verdict, EDGE_DENY);
        assert_eq!(c.dataplane().edge.services[&0].flags, EDGE_S_RULES);
        assert_eq!(
            edge_writes(&c),
            vec![vec![], vec![rule.counter]],
            "the same config again writes nothing"
        );

        // Its counter counts on; removing the rule empties the tables.
        c.dataplane_mut()
            .counters
            .edge_rule_hits
            .insert(rule.counter, 5);
        c.apply(&config_with(
            ", filter: { deny: [192.0.2.0/24, 198.51.100.0/24] }",
        ))
        .unwrap();
        assert_eq!(c.dataplane().counters.edge_rule_hits[&rule.counter], 5);
        c.apply(&config_with("")).unwrap();
        assert!(c.dataplane().edge.rules.is_empty());
        assert!(c.dataplane().edge.services.is_empty());
    }

    #[test]
    fn a_service_id_taken_again_starts_without_the_old_services_counters_and_buckets() {
        use lb_common::edge::{EdgeCounters, TokenBucket};

        use crate::dataplane::{Counters, Dataplane, LimitedSource};

        let mut c = Controller::new(FakeDataplane::new(RING, 7), RING);
        c.apply(&config_with(
            ", rate_limit: { syns_per_second: 1, burst: 2 }",
        ))
        .unwrap();
        let id = c.plan().unwrap().services[0].id;
        let fake = c.dataplane_mut();
        fake.counters.edge.insert(
            id,
            EdgeCounters {
                not_allowed: 5,
                rate_limited: 7,
            },
        );
        fake.buckets.push(LimitedSource {
            service: id,
            source: Ipv4Addr::new(198, 51, 100, 1).into(),
            bucket: TokenBucket {
                dropped: 7,
                ..TokenBucket::default()
            },
        });

        // `web` removed, then `api` added: it takes the freed id.
        let none = config::parse(&format!(
            "node: {{ zone: az-a }}\ninterfaces: [eth0]\ncluster: {{ ring_size: {RING} }}\n\
             services: []\n"
        ))
        .unwrap();
        c.apply(&none).unwrap();
        let api = config::parse(&format!(
            "node: {{ zone: az-a }}\ninterfaces: [eth0]\ncluster: {{ ring_size: {RING} }}\n\
             services:\n  - {{ name: api, vip: 10.0.0.101, port: 80, \
             rate_limit: {{ syns_per_second: 1, burst: 2 }}, \
             backends: [{{ address: 10.1.0.11, port: 8080, zone: az-a }}] }}\n"
        ))
        .unwrap();
        c.apply(&api).unwrap();
        assert_eq!(
            c.plan().unwrap().services[0].id,
            id,
            "the id is taken again"
        );
        let dp = c.dataplane();
        assert_eq!(dp.edge_counters(id).unwrap(), EdgeCounters::default());
        assert!(dp.limited_sources(10).unwrap().is_empty());
    }
}
