//! Scripted probe results against a fake clock and [`FakeVips`]: the exact changes made
//! to `lo`.
use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use super::*;
use crate::{control::health::machine::Failure, dataplane::FakeVips, model::config};

const VIP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 100));

fn config_with(announce: &str, vip: &str) -> Config {
    config::parse(&format!(
        "node: {{ zone: az-a }}\ninterfaces: [eth0]\nannounce: {announce}\nservices:\n  - name: web\n    vip: {vip}\n    port: 80\n    backends: [{{ address: 10.1.0.11, port: 8080, zone: az-a }}, {{ address: 10.1.0.12, port: 8080, zone: az-a }}]\n"
    ))
    .unwrap()
}

fn at(last: u8) -> BackendRef {
    BackendRef {
        service: "web".into(),
        address: Ipv4Addr::new(10, 1, 0, last).into(),
        port: 8080,
    }
}

fn probe(fleet: &mut Fleet, last: u8, ok: bool, now: Instant) {
    // Two results: the default thresholds.
    for _ in 0..2 {
        let outcome = if ok { Ok(()) } else { Err(Failure::Refused) };
        fleet.observe(&at(last), &outcome, Duration::ZERO, now);
    }
}

const RANGE: &str = "{ vip_ranges: [10.0.0.0/24], hold_up: 2s }";

#[test]
fn the_vip_follows_its_backends_health_with_the_hold_up() {
    let config = config_with(RANGE, "10.0.0.100");
    let t0 = Instant::now();
    let s = |secs: u64| t0 + Duration::from_secs(secs);
    let mut fleet = Fleet::new(&config, t0);
    let (mut a, adopted) = Announcements::start(FakeVips::default(), &config.announce).unwrap();
    assert!(adopted.is_empty());
    assert!(
        a.step(&config, &fleet, true, s(0)).is_empty(),
        "no verdict yet"
    );
    probe(&mut fleet, 11, true, s(1));
    assert!(a.step(&config, &fleet, true, s(1)).is_empty(), "holding up");
    assert!(a.step(&config, &fleet, true, s(2)).is_empty(), "holding up");
    let events = a.step(&config, &fleet, true, s(3));
    assert!(
        matches!(&events[..], [Event::Announced { vip: VIP, services, serving_for }]
            if services == &["web"] && *serving_for == Duration::from_secs(2)),
        "{events:?}"
    );
    probe(&mut fleet, 12, false, s(4));
    assert!(
        a.step(&config, &fleet, true, s(4)).is_empty(),
        "one of two still serves"
    );
    probe(&mut fleet, 11, false, s(5));
    let events = a.step(&config, &fleet, true, s(5));
    assert!(
        matches!(&events[..], [Event::Withdrawn { vip: VIP, why, .. }]
            if why == "web: 0 of 2 active backends healthy, 1 needed"),
        "{events:?}"
    );
    probe(&mut fleet, 12, true, s(6));
    // The hold-up counts from the first step that saw it serve again.
    assert!(a.step(&config, &fleet, true, s(7)).is_empty());
    assert!(a.step(&config, &fleet, true, s(8)).is_empty());
    assert_eq!(a.step(&config, &fleet, true, s(9)).len(), 1);
    assert_eq!(
        a.addresses().changes,
        vec![(true, VIP), (false, VIP), (true, VIP)]
    );
}

#[test]
fn a_detached_data_path_or_a_drained_node_withdraws_at_once() {
    let config = config_with("{ vip_ranges: [10.0.0.0/24], hold_up: 0s }", "10.0.0.100");
    let t0 = Instant::now();
    let mut fleet = Fleet::new(&config, t0);
    probe(&mut fleet, 11, true, t0);
    let (mut a, _) = Announcements::start(FakeVips::default(), &config.announce).unwrap();
    assert_eq!(a.step(&config, &fleet, true, t0).len(), 1);
    let events = a.step(&config, &fleet, false, t0);
    assert!(
        matches!(&events[..], [Event::Withdrawn { why, .. }]
            if why == "the data path is not attached to every configured NIC"),
        "{events:?}"
    );
    assert_eq!(a.step(&config, &fleet, true, t0).len(), 1);
    let drained = config_with(
        "{ vip_ranges: [10.0.0.0/24], hold_up: 0s, drained: true }",
        "10.0.0.100",
    );
    let events = a.step(&drained, &fleet, true, t0);
    assert!(
        matches!(&events[..], [Event::Withdrawn { why, .. }]
            if why == "the node is drained (announce.drained)"),
        "{events:?}"
    );
    assert!(a.step(&drained, &fleet, true, t0).is_empty());
    assert!(a.addresses().held.is_empty());
}

#[test]
fn vips_outside_the_ranges_are_never_touched() {
    let config = config_with("{ vip_ranges: [10.0.1.0/24], hold_up: 0s }", "10.0.0.100");
    let t0 = Instant::now();
    let mut fleet = Fleet::new(&config, t0);
    probe(&mut fleet, 11, true, t0);
    let mut vips = FakeVips::default();
    // Held with lbd's label, but out of range (the range was narrowed): left alone.
    vips.held.insert(VIP);
    let (mut a, adopted) = Announcements::start(vips, &config.announce).unwrap();
    assert!(adopted.is_empty());
    assert!(a.step(&config, &fleet, true, t0).is_empty());
    assert!(a.addresses().changes.is_empty());
    assert!(a.addresses().held.contains(&VIP));
}

#[test]
fn an_adopted_vip_stays_until_the_probes_decide() {
    let config = config_with(RANGE, "10.0.0.100");
    let t0 = Instant::now();
    let mut fleet = Fleet::new(&config, t0);
    let mut vips = FakeVips::default();
    vips.held.insert(VIP);
    let (mut a, adopted) = Announcements::start(vips, &config.announce).unwrap();
    assert_eq!(adopted, vec![VIP]);
    assert!(a.step(&config, &fleet, true, t0).is_empty());
    probe(&mut fleet, 11, true, t0);
    assert!(
        a.step(&config, &fleet, true, t0).is_empty(),
        "no re-announce"
    );
    probe(&mut fleet, 11, false, t0);
    probe(&mut fleet, 12, false, t0);
    assert_eq!(a.step(&config, &fleet, true, t0).len(), 1);
    assert_eq!(a.addresses().changes, vec![(false, VIP)]);
}

#[test]
fn a_failed_change_is_reported_once_and_retried() {
    let config = config_with("{ vip_ranges: [10.0.0.0/24], hold_up: 0s }", "10.0.0.100");
    let t0 = Instant::now();
    let mut fleet = Fleet::new(&config, t0);
    probe(&mut fleet, 11, true, t0);
    let vips = FakeVips {
        failing: true,
        ..FakeVips::default()
    };
    let (mut a, _) = Announcements::start(vips, &config.announce).unwrap();
    let firsts: Vec<bool> = (0..3)
        .flat_map(|_| a.step(&config, &fleet, true, t0))
        .map(|e| match e {
            Event::Failed {
                announce, first, ..
            } => {
                assert!(announce);
                first
            }
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(firsts, [true, false, false]);
    a.addresses.failing = false;
    assert!(matches!(
        &a.step(&config, &fleet, true, t0)[..],
        [Event::Announced { .. }]
    ));
    assert!(a.is_announced(VIP));
}

#[test]
fn resync_restores_a_removed_vip_and_removes_a_stray_labelled_one() {
    let config = config_with("{ vip_ranges: [10.0.0.0/24], hold_up: 0s }", "10.0.0.100");
    let t0 = Instant::now();
    let mut fleet = Fleet::new(&config, t0);
    probe(&mut fleet, 11, true, t0);
    let (mut a, _) = Announcements::start(FakeVips::default(), &config.announce).unwrap();
    assert_eq!(a.step(&config, &fleet, true, t0).len(), 1);
    assert!(a.resync(&config.announce).is_empty(), "in line");

    let stray = IpAddr::from([10, 0, 0, 7]);
    let outside = IpAddr::from([10, 9, 0, 7]);
    a.addresses.held.remove(&VIP);
    a.addresses.held.insert(stray);
    a.addresses.held.insert(outside);
    let events = a.resync(&config.announce);
    assert!(
        matches!(&events[..], [Event::Announced { vip: VIP, .. }, Event::Withdrawn { vip, .. }]
            if *vip == stray),
        "{events:?}"
    );
    assert_eq!(
        a.addresses().held,
        BTreeSet::from([VIP, outside]),
        "the stray one in range removed, the one outside left alone"
    );
    assert!(a.resync(&config.announce).is_empty());
}

#[test]
fn resync_renews_the_lifetime_of_every_announced_vip_on_lo_and_reports_a_failure_once() {
    let config = config_with(
        "{ vip_ranges: [10.0.0.0/24], hold_up: 0s, lifetime: 7s }",
        "10.0.0.100",
    );
    let t0 = Instant::now();
    let mut fleet = Fleet::new(&config, t0);
    probe(&mut fleet, 11, true, t0);
    let (mut a, _) = Announcements::start(FakeVips::default(), &config.announce).unwrap();
    a.step(&config, &fleet, true, t0);
    assert_eq!(a.addresses().lifetime, Duration::from_secs(7));
    // A stray labelled /32 lbd does not announce is removed, not renewed.
    a.addresses.held.insert(IpAddr::from([10, 0, 0, 7]));
    a.resync(&config.announce);
    a.resync(&config.announce);
    assert_eq!(a.addresses().renewed, [VIP, VIP]);

    a.addresses.failing = true;
    let first = a.resync(&config.announce);
    let again = a.resync(&config.announce);
    assert!(
        matches!(
            &first[..],
            [Event::RenewFailed {
                vip: VIP,
                first: true,
                ..
            }]
        ),
        "{first:?}"
    );
    assert!(
        matches!(
            &again[..],
            [Event::RenewFailed {
                vip: VIP,
                first: false,
                ..
            }]
        ),
        "{again:?}"
    );
    a.addresses.failing = false;
    assert!(a.resync(&config.announce).is_empty());
    assert_eq!(a.addresses().renewed, [VIP, VIP, VIP]);
}
