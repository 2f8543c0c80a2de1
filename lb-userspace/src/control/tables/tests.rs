use lb_common::{flow::FlowKey, net::FAMILY_IPV4, service::ring_slot_base};

use super::*;
use crate::{dataplane::FakeDataplane, dataplane::Write, model::config};

const RING: u32 = 1009;

fn config(backends: &[(&str, u32)]) -> Config {
    let list: Vec<String> = backends
        .iter()
        .map(|(a, w)| format!("{{ address: {a}, port: 8080, zone: az-a, weight: {w} }}"))
        .collect();
    config::parse(&format!(
        "node: {{ zone: az-a }}\ninterfaces: [eth0]\ncluster: {{ ring_size: {RING}, hash_seed: 7 }}\n\
         services:\n  - {{ name: web, vip: 10.0.0.100, port: 80, backends: [{}] }}\n",
        list.join(", ")
    ))
    .unwrap()
}

fn flows() -> impl Iterator<Item = FlowKey> {
    (0..2000u16).map(|p| FlowKey {
        src_addr: u32::from_ne_bytes([10, 10, 0, 2]),
        dst_addr: u32::from_ne_bytes([10, 0, 0, 100]),
        src_port: (20000 + p).to_be(),
        dst_port: 80u16.to_be(),
        proto: 6,
        family: FAMILY_IPV4,
        _pad: [0; 2],
    })
}

fn service_key(c: &Controller<FakeDataplane>) -> lb_common::service::ServiceKey {
    *c.plan().unwrap().services[0].key.v4().unwrap()
}

#[test]
fn first_apply_writes_every_backend_and_the_whole_slot_zero() {
    let mut c = Controller::new(FakeDataplane::new(RING, 7), RING);
    let s = c
        .apply(&config(&[("10.1.0.11", 1), ("10.1.0.12", 1)]))
        .unwrap();
    assert_eq!(s.backends_written, 2);
    assert_eq!(s.services_flipped, 1);
    // Backend id 0 owns about half the slots, and those already read 0 in a fresh array;
    // the idle slot gets the same table, so the first change writes only what changes.
    assert!(
        s.ring_entries_written > 2 * 400 && s.ring_entries_written < 2 * 600,
        "{s:?}"
    );
    let idle = ring_slot_base(0, 1, RING);
    assert_eq!(
        c.dataplane().ring.get(&(idle + 7)),
        c.dataplane().ring.get(&7).filter(|id| **id != 0),
        "slot 1 mirrors slot 0"
    );
    let key = service_key(&c);
    assert_eq!(c.dataplane().services[&key].active_slot, 0);
    let mut seen = std::collections::HashSet::new();
    for f in flows() {
        seen.insert(c.dataplane().select(&key, &f).unwrap().addr);
    }
    assert_eq!(seen.len(), 2, "both backends get flows");
}

#[test]
fn reapplying_the_same_config_writes_nothing() {
    let mut c = Controller::new(FakeDataplane::new(RING, 7), RING);
    let cfg = config(&[("10.1.0.11", 1), ("10.1.0.12", 2)]);
    c.apply(&cfg).unwrap();
    let before = c.dataplane().log.len();
    assert_eq!(c.apply(&cfg).unwrap(), ApplySummary::default());
    assert_eq!(c.dataplane().log.len(), before);
}

#[test]
fn a_change_writes_only_the_idle_slot_then_flips() {
    let mut c = Controller::new(FakeDataplane::new(RING, 7), RING);
    c.apply(&config(&[
        ("10.1.0.11", 1),
        ("10.1.0.12", 1),
        ("10.1.0.13", 1),
    ]))
    .unwrap();
    let start = c.dataplane().log.len();
    c.apply(&config(&[("10.1.0.11", 1), ("10.1.0.13", 1)]))
        .unwrap();
    let writes = &c.dataplane().log[start..];
    let live = ring_slot_base(0, 0, RING)..ring_slot_base(0, 1, RING);
    let flip = writes
        .iter()
        .position(|w| matches!(w, Write::Service(_, m) if m.active_slot == 1))
        .expect("service flipped to slot 1");
    for (i, w) in writes.iter().enumerate() {
        if let Write::Ring(index) = w {
            assert!(!live.contains(index), "wrote live slot entry {index}");
            assert!(i < flip, "ring entry written after the flip");
        }
    }
    // The removed backend's slot is freed only after the flip.
    let freed = writes.iter().position(|w| *w == Write::Backend(1)).unwrap();
    assert!(freed > flip);
    let key = service_key(&c);
    for f in flows() {
        let b = c.dataplane().select(&key, &f).unwrap();
        assert_ne!(b.addr.to_ne_bytes(), [10, 1, 0, 12]);
    }
}

#[test]
fn flows_of_remaining_backends_mostly_stay_put() {
    let mut c = Controller::new(FakeDataplane::new(RING, 7), RING);
    c.apply(&config(&[
        ("10.1.0.11", 1),
        ("10.1.0.12", 1),
        ("10.1.0.13", 1),
        ("10.1.0.14", 1),
    ]))
    .unwrap();
    let key = service_key(&c);
    let before: Vec<u32> = flows()
        .map(|f| c.dataplane().select(&key, &f).unwrap().addr)
        .collect();
    c.apply(&config(&[
        ("10.1.0.11", 1),
        ("10.1.0.12", 1),
        ("10.1.0.14", 1),
    ]))
    .unwrap();
    let removed = u32::from_ne_bytes([10, 1, 0, 13]);
    let mut moved = 0;
    for (f, old) in flows().zip(&before) {
        let new = c.dataplane().select(&key, &f).unwrap().addr;
        if *old != removed && new != *old {
            moved += 1;
        }
    }
    // Maglev disruption: with a small ring a few percent of other flows move.
    assert!(
        moved < 2000 / 20,
        "{moved} of 2000 flows of surviving backends moved"
    );
}

#[test]
fn removing_a_service_unpublishes_it_and_frees_its_backends() {
    let mut c = Controller::new(FakeDataplane::new(RING, 7), RING);
    c.apply(&config(&[("10.1.0.11", 1)])).unwrap();
    let key = service_key(&c);
    let mut empty = config(&[]);
    empty.services.clear();
    let s = c.apply(&empty).unwrap();
    assert_eq!(s.services_removed, 1);
    assert!(!c.dataplane().services.contains_key(&key));
    assert_eq!(c.dataplane().backends[&0], Backend::default());
}

#[test]
fn a_ring_size_change_is_refused() {
    let mut c = Controller::new(FakeDataplane::new(RING, 7), 1013);
    let err = c.apply(&config(&[("10.1.0.11", 1)])).unwrap_err();
    assert!(err.to_string().contains("ring_size cannot change"), "{err}");
}

#[test]
fn the_prefilter_admits_before_publishing_and_forgets_after_removing() {
    use lb_common::filter::{filter_slot, FILTER_VIPS};
    let mut c = Controller::new(FakeDataplane::new(RING, 7), RING);
    c.apply(&config(&[("10.1.0.11", 1)])).unwrap();
    let key = service_key(&c);
    let (word, mask) = filter_slot(FILTER_VIPS, key.addr);
    let log = &c.dataplane().log;
    let filter_at = log
        .iter()
        .position(|w| *w == Write::Filter(word))
        .expect("VIP bit written");
    let published = log
        .iter()
        .position(|w| matches!(w, Write::Service(..)))
        .unwrap();
    assert!(
        filter_at < published,
        "the VIP bit must be set before the service is published"
    );
    assert_ne!(c.dataplane().filter[&word] & mask, 0);

    let start = c.dataplane().log.len();
    let mut empty = config(&[]);
    empty.services.clear();
    c.apply(&empty).unwrap();
    let writes = &c.dataplane().log[start..];
    let removed = writes
        .iter()
        .position(|w| matches!(w, Write::RemoveService(_)))
        .unwrap();
    let cleared = writes
        .iter()
        .rposition(|w| *w == Write::Filter(word))
        .unwrap();
    assert!(
        cleared > removed,
        "the VIP bit is cleared only after the service is gone"
    );
    assert_eq!(c.dataplane().filter[&word] & mask, 0);
}

#[test]
fn only_a_protected_services_vip_sets_its_bit_in_the_protected_bitmap() {
    use lb_common::filter::{filter_slot, FILTER_PROTECTED};
    let mut c = Controller::new(FakeDataplane::new(RING, 7), RING);
    let plain = config(&[("10.1.0.11", 1)]);
    c.apply(&plain).unwrap();
    let (word, mask) = filter_slot(FILTER_PROTECTED, service_key(&c).addr);
    let bit = |c: &Controller<FakeDataplane>| {
        c.dataplane().filter.get(&word).copied().unwrap_or(0) & mask
    };
    assert_eq!(bit(&c), 0, "no edge protection");
    // A deny rule protects the service (the whole apply, as after a reload)...
    let mut protected = plain.clone();
    protected.services[0].filter.deny = vec!["192.0.2.0/24".parse().unwrap()];
    c.apply(&protected).unwrap();
    assert_ne!(bit(&c), 0, "protected");
    // ...and taking it off clears the bit again.
    c.apply(&plain).unwrap();
    assert_eq!(bit(&c), 0, "protection taken off");
}

#[test]
fn the_shadow_tells_an_entry_never_written_from_one_written_as_no_backend() {
    use lb_common::service::NO_BACKEND;
    // A ring with no backend of positive weight: every entry NO_BACKEND, written once.
    let mut shadow = None;
    let none = [NO_BACKEND; 4];
    assert_eq!(
        changes(&none, &mut shadow, 4, 100),
        [
            (100, NO_BACKEND),
            (101, NO_BACKEND),
            (102, NO_BACKEND),
            (103, NO_BACKEND)
        ]
    );
    assert_eq!(changes(&none, &mut shadow, 4, 100), []);
    // Entries past a shorter table stay unknown, and are written when wanted, as
    // NO_BACKEND too.
    let mut shadow = None;
    assert_eq!(changes(&[7, 8], &mut shadow, 4, 0), [(0, 7), (1, 8)]);
    assert_eq!(
        changes(&[7, 8, NO_BACKEND, NO_BACKEND], &mut shadow, 4, 0),
        [(2, NO_BACKEND), (3, NO_BACKEND)]
    );
}

#[test]
fn bits_difference_is_the_multiset_difference_both_ways() {
    // A small generator so the cases repeat exactly.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut next = |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % n) as u32
    };
    for _ in 0..200 {
        let mut pick = |len: u64| -> Vec<(u32, u32)> {
            let n = next(len);
            (0..n).map(|_| (next(4), 1 << next(3))).collect()
        };
        let (new, old) = (pick(12), pick(12));
        let count = |v: &[(u32, u32)]| {
            let mut m = std::collections::BTreeMap::new();
            for b in v {
                *m.entry(*b).or_insert(0i64) += 1;
            }
            m
        };
        let (added, removed) = bits_difference(new.clone(), old.clone());
        // Oracle: per bit, count(new) - count(old) = count(added) - count(removed), and
        // no bit is both added and removed.
        let (n, o, a, r) = (count(&new), count(&old), count(&added), count(&removed));
        let bits: std::collections::BTreeSet<_> = n.keys().chain(o.keys()).collect();
        for bit in bits {
            let get =
                |m: &std::collections::BTreeMap<(u32, u32), i64>| m.get(bit).copied().unwrap_or(0);
            assert_eq!(get(&n) - get(&o), get(&a) - get(&r), "{new:?} {old:?}");
            assert!(get(&a) == 0 || get(&r) == 0, "{new:?} {old:?}");
        }
    }
}
