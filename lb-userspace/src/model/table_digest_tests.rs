use std::collections::BTreeMap;

use super::*;
use crate::model::{
    config::{self, Config},
    plan::{self, BackendRef, Ids, Overlay},
};

/// Service `web` with backends `10.1.0.<last>:8080` of the given weights, in this order.
fn config(policy: &str, seed: u32, ring: u32, backends: &[(u8, u32)]) -> Config {
    let list: Vec<String> = backends
        .iter()
        .map(|(last, weight)| {
            format!("{{ address: 10.1.0.{last}, port: 8080, zone: az-a, weight: {weight} }}")
        })
        .collect();
    config::parse(&format!(
        "node: {{ zone: az-a }}\ninterfaces: [eth0]\n\
         cluster: {{ ring_size: {ring}, hash_seed: {seed} }}\n\
         services:\n  - {{ name: web, vip: 10.0.0.100, port: 80, policy: {policy}, \
         backends: [{}] }}\n",
        list.join(", ")
    ))
    .unwrap()
}

fn at(last: u8) -> BackendRef {
    BackendRef {
        service: "web".into(),
        address: std::net::Ipv4Addr::new(10, 1, 0, last).into(),
        port: 8080,
    }
}

/// The planned service, backend `10.1.0.<last>` taking id `ids[last]`.
fn planned(c: &Config, ids: &[(u8, u32)], overlay: &Overlay) -> PlannedService {
    let ids = Ids {
        services: [("web".to_string(), 3)].into(),
        backends: ids.iter().map(|(last, id)| (at(*last), *id)).collect(),
    };
    plan::plan(c, overlay, &ids, None).services.remove(0)
}

fn digest(c: &Config, ids: &[(u8, u32)]) -> u64 {
    table_digest(&planned(c, ids, &Overlay::default()), c.cluster.hash_seed)
}

/// Pins the documented algorithm: the value was computed from the module's description
/// by an independent implementation. A new value means nodes of the old and the new
/// version show different digests for equal tables (every tier alert fires during an
/// upgrade): change the domain line's version when the encoding must change.
#[test]
fn golden_digest_of_a_small_maglev_table() {
    let c = config("maglev", 7, 13, &[(11, 1), (12, 2), (13, 1)]);
    let s = planned(&c, &[(11, 0), (12, 1), (13, 2)], &Overlay::default());
    assert_eq!(s.ring, [2, 1, 1, 1, 0, 1, 1, 0, 1, 2, 0, 2, 1]);
    assert_eq!(table_digest(&s, 7), 0xafda_5161_1c5d);
    assert!(table_digest(&s, 7) < 1 << DIGEST_BITS);
}

#[test]
fn the_digest_names_backends_by_identity_not_by_id_nor_config_order() {
    for policy in ["maglev", "round_robin", "least_conn", "source_hash"] {
        let c = config(policy, 7, 1009, &[(11, 1), (12, 3), (13, 1)]);
        let a = digest(&c, &[(11, 0), (12, 1), (13, 2)]);
        let b = digest(&c, &[(11, 7), (12, 2), (13, 40)]);
        assert_eq!(a, b, "{policy}: ids differ between nodes");
        if policy == "maglev" || policy == "source_hash" {
            // Only round robin's schedule follows the order of backends in the config.
            let reordered = config(policy, 7, 1009, &[(13, 1), (11, 1), (12, 3)]);
            assert_eq!(
                a,
                digest(&reordered, &[(11, 5), (12, 6), (13, 4)]),
                "{policy}"
            );
        }
    }
}

#[test]
fn what_moves_flows_changes_the_digest() {
    let base = config("maglev", 7, 1009, &[(11, 1), (12, 1), (13, 1)]);
    let ids = [(11, 0), (12, 1), (13, 2), (14, 3)];
    let d = digest(&base, &ids);
    let changed = [
        (
            "a weight",
            config("maglev", 7, 1009, &[(11, 1), (12, 2), (13, 1)]),
        ),
        (
            "a backend",
            config("maglev", 7, 1009, &[(11, 1), (12, 1), (14, 1)]),
        ),
        (
            "one backend less",
            config("maglev", 7, 1009, &[(11, 1), (12, 1)]),
        ),
        (
            "the seed",
            config("maglev", 8, 1009, &[(11, 1), (12, 1), (13, 1)]),
        ),
        (
            "the ring size",
            config("maglev", 7, 1013, &[(11, 1), (12, 1), (13, 1)]),
        ),
        (
            "the policy",
            config("source_hash", 7, 1009, &[(11, 1), (12, 1), (13, 1)]),
        ),
    ];
    for (what, c) in changed {
        assert_ne!(d, digest(&c, &ids), "{what} changed");
    }
    // A backend taken out by health (ring weight 0) changes it; one that leaves the ring
    // input at weight 0 and comes back at full weight gives the same digest again.
    let unhealthy = Overlay {
        ring_weights: BTreeMap::from([(at(12), 0)]),
        ..Overlay::default()
    };
    let out = table_digest(&planned(&base, &ids, &unhealthy), 7);
    assert_ne!(d, out);
    let back = Overlay {
        ring_weights: BTreeMap::from([(at(12), 1000)]),
        ..Overlay::default()
    };
    assert_eq!(d, table_digest(&planned(&base, &ids, &back), 7));
}

#[test]
fn round_robin_schedules_count_beyond_the_ring() {
    // Same ring (Maglev ignores order), different schedule: round robin's digest differs.
    let a = config("round_robin", 7, 1009, &[(11, 1), (12, 2), (13, 1)]);
    let b = config("round_robin", 7, 1009, &[(13, 1), (11, 1), (12, 2)]);
    let ids = [(11, 0), (12, 1), (13, 2)];
    let (pa, pb) = (
        planned(&a, &ids, &Overlay::default()),
        planned(&b, &ids, &Overlay::default()),
    );
    assert_eq!(pa.ring, pb.ring);
    assert_ne!(pa.table, pb.table);
    assert_ne!(table_digest(&pa, 7), table_digest(&pb, 7));
}

#[test]
fn an_empty_service_has_a_digest_too() {
    let c = config("maglev", 7, 13, &[]);
    let s = planned(&c, &[], &Overlay::default());
    assert!(s.ring.iter().all(|slot| *slot == NO_BACKEND));
    let with_one = config("maglev", 7, 13, &[(11, 1)]);
    assert_ne!(table_digest(&s, 7), digest(&with_one, &[(11, 0)]));
}

#[test]
fn the_cache_answers_what_a_fresh_computation_would() {
    let mut cache = DigestCache::default();
    let ids = [(11, 0), (12, 1), (13, 2)];
    let c = config("round_robin", 7, 1009, &[(11, 1), (12, 1), (13, 1)]);
    let mut steps = vec![
        planned(&c, &ids, &Overlay::default()),
        planned(
            &c,
            &ids,
            &Overlay {
                ring_weights: BTreeMap::from([(at(13), 0)]),
                ..Overlay::default()
            },
        ),
        planned(
            &config("round_robin", 7, 1009, &[(11, 2), (12, 1), (13, 1)]),
            &ids,
            &Overlay::default(),
        ),
        planned(&c, &ids, &Overlay::default()),
    ];
    let mut other = planned(
        &config("maglev", 7, 1009, &[(11, 1)]),
        &ids,
        &Overlay::default(),
    );
    other.name = "api".into();
    let mut seen = Vec::new();
    for s in steps.drain(..) {
        let got = cache.digests([&s, &other], 7);
        assert_eq!(
            got,
            [
                ("web".to_string(), table_digest(&s, 7)),
                ("api".to_string(), table_digest(&other, 7)),
            ]
        );
        seen.push(got[0].1);
        // The seed is part of the key too.
        assert_eq!(cache.digests([&s], 8)[0].1, table_digest(&s, 8));
    }
    assert_ne!(seen[0], seen[1]);
    assert_ne!(seen[1], seen[2]);
    assert_eq!(seen[0], seen[3]);
    assert!(
        !cache.services.contains_key("api"),
        "a service not asked about is forgotten"
    );
}

#[test]
fn config_digests_follow_the_service_entry() {
    let a = config("maglev", 7, 1009, &[(11, 1), (12, 1)]);
    let same = config("maglev", 8, 13, &[(11, 1), (12, 1)]);
    let weight = config("maglev", 7, 1009, &[(11, 1), (12, 2)]);
    let order = config("maglev", 7, 1009, &[(12, 1), (11, 1)]);
    let d = config_digest(&a.services[0]);
    assert!(d < 1 << DIGEST_BITS);
    assert_eq!(
        d,
        config_digest(&same.services[0]),
        "cluster keys are not the service's"
    );
    assert_ne!(d, config_digest(&weight.services[0]));
    assert_ne!(d, config_digest(&order.services[0]));
}

/// What a digest of a default-sized ring costs (printed, not asserted: the machine is
/// shared), and what the cache saves on the next scrape.
#[test]
fn a_full_ring_digest_and_a_cached_one() {
    let backends: Vec<(u8, u32)> = (10..110).map(|n| (n, 1)).collect();
    let ids: Vec<(u8, u32)> = (10..110).map(|n| (n, n as u32)).collect();
    let s = planned(
        &config("maglev", 7, 65537, &backends),
        &ids,
        &Overlay::default(),
    );
    let mut cache = DigestCache::default();
    let started = std::time::Instant::now();
    let cold = cache.digests([&s], 7);
    let cold_time = started.elapsed();
    let started = std::time::Instant::now();
    let warm = cache.digests([&s], 7);
    let warm_time = started.elapsed();
    assert_eq!(cold, warm);
    eprintln!(
        "digest of a 65537-slot ring of 100 backends: {:.2} ms, from the cache {:.3} ms",
        cold_time.as_secs_f64() * 1e3,
        warm_time.as_secs_f64() * 1e3
    );
}
