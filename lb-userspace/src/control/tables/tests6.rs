//! IPv6 services through the controller, against the fake: the order of the writes that
//! keeps every packet's view consistent.
use lb_common::ipv6::{Addr6, ServiceKey6};

use super::*;
use crate::{dataplane::FakeDataplane, dataplane::Write, model::config};

const RING: u32 = 1009;

fn config(backends: &[&str]) -> Config {
    let list: Vec<String> = backends
        .iter()
        .map(|a| format!("{{ address: \"{a}\", port: 8080, zone: az-a }}"))
        .collect();
    config::parse(&format!(
        "node: {{ zone: az-a }}\ninterfaces: [eth0]\ncluster: {{ ring_size: {RING} }}\n\
         services:\n  - {{ name: web6, vip: \"2001:db8::100\", port: 80, backends: [{}] }}\n",
        list.join(", ")
    ))
    .unwrap()
}

fn addr(text: &str) -> Addr6 {
    family::addr6(text.parse().unwrap())
}

fn key(c: &Controller<FakeDataplane>) -> ServiceKey6 {
    match c.plan().unwrap().services[0].key {
        ServiceMapKey::V6(key) => key,
        other => panic!("an IPv6 service has an IPv6 key: {other:?}"),
    }
}

/// Where `write` is in the fake's log.
fn position(c: &Controller<FakeDataplane>, write: &Write) -> usize {
    let log = &c.dataplane().log;
    log.iter()
        .position(|w| w == write)
        .unwrap_or_else(|| panic!("{write:?} is not in {log:?}"))
}

#[test]
fn an_ipv6_backends_address_is_written_before_its_slot_and_cleared_after_it() {
    let mut c = Controller::new(FakeDataplane::new(RING, 7), RING);
    c.apply(&config(&["2001:db8:1::11", "2001:db8:1::12"]))
        .unwrap();
    let key = key(&c);
    let meta = c.dataplane().services6[&key];
    assert_eq!((meta.id, meta.active_slot), (0, 0));
    assert!(
        c.dataplane().services.is_empty(),
        "nothing in the IPv4 index"
    );
    for (id, a) in [(0, "2001:db8:1::11"), (1, "2001:db8:1::12")] {
        assert_eq!(c.dataplane().backend_addrs6[&id], addr(a));
        assert!(
            position(&c, &Write::BackendAddr6(id, addr(a))) < position(&c, &Write::Backend(id)),
            "backend {id}"
        );
    }
    assert!(position(&c, &Write::Backend(1)) < position(&c, &Write::Service6(key, meta)));

    c.dataplane_mut().log.clear();
    c.apply(&config(&["2001:db8:1::11"])).unwrap();
    let flipped = c.dataplane().services6[&key];
    assert_eq!((flipped.id, flipped.active_slot), (0, 1));
    // The departed backend: out of the flipped ring, its flows purged, its slot freed,
    // then its address cleared.
    let flip = position(&c, &Write::Service6(key, flipped));
    let purge = position(&c, &Write::PurgeFlows(1));
    let freed = position(&c, &Write::Backend(1));
    let cleared = position(&c, &Write::BackendAddr6(1, Addr6::default()));
    assert!(
        flip < purge && purge < freed && freed < cleared,
        "{:?}",
        c.dataplane().log
    );
    assert_eq!(c.dataplane().backend_addrs6[&1], Addr6::default());

    c.dataplane_mut().log.clear();
    let empty =
        config::parse("node: { zone: az-a }\ninterfaces: [eth0]\ncluster: { ring_size: 1009 }\n")
            .unwrap();
    c.apply(&empty).unwrap();
    assert!(c.dataplane().services6.is_empty());
    assert!(c.dataplane().log.contains(&Write::RemoveService6(key)));
    assert_eq!(c.dataplane().backend_addrs6[&0], Addr6::default());
}
