//! The controller's write of the reverse maps (IPv4 and IPv6), after each apply (see
//! `crate::model::reverse_map`).
use anyhow::Context as _;

use super::Controller;
use crate::{
    dataplane::Dataplane,
    model::{
        config::Config,
        reverse_map::{reverse_entries, reverse_entries6},
    },
};

impl<D: Dataplane> Controller<D> {
    /// Makes the reverse map match the applied plan. Written after the tables: a reply
    /// the map does not translate yet is passed, as before `stateless_return` was on.
    pub(super) fn write_reverse_map(&mut self, config: &Config) -> anyhow::Result<()> {
        let Some(plan) = self.plan.as_ref() else {
            return Ok(());
        };
        let entries = reverse_entries(config, plan);
        self.dataplane
            .set_reverse_map(&entries)
            .with_context(|| format!("writing the reverse map ({} entries)", entries.len()))?;
        let entries = reverse_entries6(config, plan);
        self.dataplane
            .set_reverse_map6(&entries)
            .with_context(|| format!("writing the IPv6 reverse map ({} entries)", entries.len()))
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use lb_common::reverse::ReverseKey;

    use crate::{
        control::tables::Controller,
        dataplane::{FakeDataplane, Write},
        model::{config, plan::Overlay},
    };

    const RING: u32 = 1009;

    fn config_with(backends: &[&str]) -> config::Config {
        let list: String = backends
            .iter()
            .map(|a| format!("      - {{ address: {a}, port: 8080, zone: az-a }}\n"))
            .collect();
        config::parse(&format!(
            "node: {{ zone: az-a }}\ninterfaces: [eth0]\ncluster: {{ ring_size: {RING} }}\n\
             services:\n  - name: web\n    vip: 10.0.0.100\n    port: 80\n    \
             stateless_return: true\n    backends:\n{list}"
        ))
        .unwrap()
    }

    fn addresses(c: &Controller<FakeDataplane>) -> Vec<Ipv4Addr> {
        let key = |k: &ReverseKey| Ipv4Addr::from(k.addr.to_ne_bytes());
        c.dataplane().reverse.keys().map(key).collect()
    }

    #[test]
    fn a_reverse_map_beyond_max_backends_is_a_full_table_and_nothing_is_written() {
        use lb_common::reverse::ReverseTarget;

        use crate::dataplane::{Capacity, Dataplane as _, DataplaneError};

        let mut dp = FakeDataplane::new(RING, 7);
        dp.capacity = Some(Capacity {
            services: 4,
            backends: 1,
        });
        let entry = |n: u32| {
            let key = ReverseKey {
                addr: n,
                port: 8080,
                proto: 6,
                family: 4,
            };
            let target = ReverseTarget {
                vip: 100,
                vport: 80,
                _pad: 0,
                service: 0,
                backend: n,
            };
            (key, target)
        };
        let entries = [entry(1), entry(2)].into_iter().collect();
        match dp.set_reverse_map(&entries) {
            Err(DataplaneError::TableFull {
                map: "REVERSE",
                capacity: 1,
                limit: "max_backends",
            }) => {}
            other => panic!("expected a full REVERSE table, got {other:?}"),
        }
        assert!(dp.reverse.is_empty());
        assert!(dp.log.is_empty());
    }

    #[test]
    fn a_whole_apply_and_an_incremental_one_both_keep_the_reverse_map_current() {
        let mut c = Controller::new(FakeDataplane::new(RING, 7), RING);
        c.apply(&config_with(&["10.1.0.11", "10.1.0.12"])).unwrap();
        assert_eq!(
            addresses(&c),
            [Ipv4Addr::new(10, 1, 0, 11), Ipv4Addr::new(10, 1, 0, 12)]
        );
        // One backend replaced through the incremental path: one entry deleted, one
        // written, nothing else.
        c.dataplane_mut().log.clear();
        let changed = config_with(&["10.1.0.11", "10.1.0.13"]);
        c.apply_services(&changed, &Overlay::default(), &["web".to_string()])
            .unwrap();
        assert_eq!(
            addresses(&c),
            [Ipv4Addr::new(10, 1, 0, 11), Ipv4Addr::new(10, 1, 0, 13)]
        );
        let reverse_writes: Vec<(Ipv4Addr, bool)> = c
            .dataplane()
            .log
            .iter()
            .filter_map(|w| match w {
                Write::Reverse(k, t) => Some((Ipv4Addr::from(k.addr.to_ne_bytes()), t.is_some())),
                _ => None,
            })
            .collect();
        assert_eq!(
            reverse_writes,
            [
                (Ipv4Addr::new(10, 1, 0, 12), false),
                (Ipv4Addr::new(10, 1, 0, 13), true)
            ]
        );
        // Unchanged: nothing written.
        c.dataplane_mut().log.clear();
        c.apply(&changed).unwrap();
        assert!(!c
            .dataplane()
            .log
            .iter()
            .any(|w| matches!(w, Write::Reverse(..))));
    }

    #[test]
    fn a_backend_changed_in_place_is_in_the_reverse_map_at_once() {
        let mut c = Controller::new(FakeDataplane::new(RING, 7), RING);
        let at = |a: &str| crate::model::plan::BackendRef {
            service: "web".into(),
            address: a.parse().unwrap(),
            port: 8080,
        };
        // 10.1.0.13 waits for its probes (no ring share): its add takes the in-place
        // path, which must still write its reverse entry.
        let overlay = Overlay {
            ring_weights: [(at("10.1.0.13"), 0)].into_iter().collect(),
            ..Overlay::default()
        };
        c.apply(&config_with(&["10.1.0.11", "10.1.0.12"])).unwrap();
        let added = config_with(&["10.1.0.11", "10.1.0.12", "10.1.0.13"]);
        let in_place = c.backends_applied_in_place();
        c.apply_backend(&added, &overlay, &at("10.1.0.13")).unwrap();
        assert_eq!(
            c.backends_applied_in_place(),
            in_place + 1,
            "took the in-place path"
        );
        assert_eq!(
            addresses(&c),
            [
                Ipv4Addr::new(10, 1, 0, 11),
                Ipv4Addr::new(10, 1, 0, 12),
                Ipv4Addr::new(10, 1, 0, 13)
            ]
        );
    }
}
