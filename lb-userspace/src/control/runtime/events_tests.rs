//! The lifecycle events the runtime notes: health transitions in order, a drain's
//! `backend_drained` exactly once and only when its active flows are down to 0, a
//! removed backend's deregistration, zone drains.
use std::time::{Duration, Instant};

use super::*;
use crate::{
    control::health::machine::Failure,
    dataplane::FakeDataplane,
    model::{
        config,
        events::{Event, EventKind},
    },
};

const RING: u32 = 1009;

/// Service `web` with backends `10.1.0.{last}:8080`, each written as `"11"` or
/// `"12, state: draining"`, and `extra` service keys.
fn cfg(extra: &str, list: &[&str]) -> Config {
    let backends: Vec<String> = list
        .iter()
        .map(|b| {
            let (last, more) = b.split_once(',').unwrap_or((b, ""));
            let more = if more.is_empty() {
                String::new()
            } else {
                format!(",{more}")
            };
            format!("{{ address: 10.1.0.{last}, port: 8080, zone: az-{last}{more} }}")
        })
        .collect();
    config::parse(&format!(
        "node: {{ zone: az-a }}\ninterfaces: [eth0]\ncluster: {{ ring_size: {RING} }}\n\
         services:\n  - name: web\n    vip: 10.0.0.100\n    port: 80\n    deregistration_delay: 10s\n    backends: [{}]\n{extra}",
        backends.join(", ")
    ))
    .unwrap()
}

fn start(config: Config, now: Instant) -> Runtime<FakeDataplane> {
    let controller = Controller::new(FakeDataplane::new(RING, 0x4c42_5844), RING);
    Runtime::start(config, controller, now).unwrap().0
}

fn at(last: u8) -> BackendRef {
    BackendRef {
        service: "web".into(),
        address: std::net::Ipv4Addr::new(10, 1, 0, last).into(),
        port: 8080,
    }
}

fn set_active(rt: &mut Runtime<FakeDataplane>, last: u8, flows: u64) {
    let id = rt.controller().backend_id(&at(last)).unwrap();
    let dp = rt.controller_mut().dataplane_mut();
    dp.counters.active_flows.insert(id, flows);
}

fn probe(rt: &mut Runtime<FakeDataplane>, last: u8, ok: bool, now: Instant) {
    let outcome = if ok { Ok(()) } else { Err(Failure::Refused) };
    rt.on_probe(&at(last), &outcome, Duration::ZERO, now)
        .unwrap();
}

/// The events taken, as (kind, backend or zone).
fn taken(rt: &mut Runtime<FakeDataplane>) -> Vec<(EventKind, String)> {
    rt.take_events()
        .into_iter()
        .map(|e: Event| (e.kind, e.backend.unwrap_or(e.zone)))
        .collect()
}

fn ev(kind: EventKind, what: &str) -> (EventKind, String) {
    (kind, what.to_string())
}

#[test]
fn health_transitions_are_noted_in_order_once_each() {
    let t0 = Instant::now();
    let mut rt = start(cfg("", &["11", "12"]), t0);
    assert_eq!(taken(&mut rt), [], "starting notes nothing");
    probe(&mut rt, 12, false, t0);
    assert_eq!(taken(&mut rt), [], "one failure of two is no transition");
    probe(&mut rt, 12, false, t0);
    probe(&mut rt, 12, false, t0);
    probe(&mut rt, 11, true, t0);
    probe(&mut rt, 11, true, t0);
    probe(&mut rt, 12, true, t0);
    probe(&mut rt, 12, true, t0);
    probe(&mut rt, 12, true, t0);
    assert_eq!(
        taken(&mut rt),
        [
            ev(EventKind::BackendUnhealthy, "10.1.0.12:8080"),
            ev(EventKind::BackendHealthy, "10.1.0.11:8080"),
            ev(EventKind::BackendHealthy, "10.1.0.12:8080"),
        ]
    );
    assert_eq!(taken(&mut rt), [], "taken once");
}

#[test]
fn a_drain_is_complete_once_when_its_last_flow_ended() {
    let t0 = Instant::now();
    let mut rt = start(cfg("", &["11", "12"]), t0);
    set_active(&mut rt, 12, 2);
    rt.reload(cfg("", &["11", "12, state: draining"]), t0)
        .unwrap();
    assert_eq!(
        taken(&mut rt),
        [ev(EventKind::BackendDraining, "10.1.0.12:8080")]
    );
    let ms = |n| t0 + Duration::from_millis(n);
    rt.tick(ms(50)).unwrap();
    set_active(&mut rt, 12, 1);
    rt.tick(ms(100)).unwrap();
    assert_eq!(taken(&mut rt), [], "flows are left");
    set_active(&mut rt, 12, 0);
    rt.tick(ms(150)).unwrap();
    rt.tick(ms(200)).unwrap();
    let events = rt.take_events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].kind, EventKind::BackendDrained);
    assert_eq!(events[0].detail, "no flows left");
    assert_eq!(events[0].zone, "az-12");
    // Past the delay: the purge finds nothing, nothing more is noted.
    rt.tick(t0 + Duration::from_secs(11)).unwrap();
    assert_eq!(taken(&mut rt), []);

    // Undrained and drained again: a new drain, noted again once.
    rt.reload(cfg("", &["11", "12"]), ms(300)).unwrap();
    rt.reload(cfg("", &["11", "12, state: draining"]), ms(400))
        .unwrap();
    rt.tick(ms(450)).unwrap();
    rt.tick(ms(500)).unwrap();
    assert_eq!(
        taken(&mut rt),
        [
            ev(EventKind::BackendDraining, "10.1.0.12:8080"),
            ev(EventKind::BackendDrained, "10.1.0.12:8080"),
        ]
    );
}

#[test]
fn a_removed_backend_drains_then_is_deregistered_after_its_delay() {
    let t0 = Instant::now();
    let mut rt = start(cfg("", &["11", "12"]), t0);
    set_active(&mut rt, 12, 1);
    rt.reload(cfg("", &["11"]), t0).unwrap();
    rt.tick(t0 + Duration::from_secs(1)).unwrap();
    set_active(&mut rt, 12, 0);
    rt.tick(t0 + Duration::from_secs(2)).unwrap();
    rt.tick(t0 + Duration::from_secs(10)).unwrap();
    rt.tick(t0 + Duration::from_secs(11)).unwrap();
    let events = rt.take_events();
    let kinds: Vec<EventKind> = events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            EventKind::BackendDraining,
            EventKind::BackendDrained,
            EventKind::BackendDeregistered
        ]
    );
    assert_eq!(
        events[2].detail,
        "deregistration delay of 10s passed; its slot is freed"
    );
}

#[test]
fn a_delay_that_passes_with_flows_open_deregisters_without_a_drained_event() {
    let t0 = Instant::now();
    let mut rt = start(cfg("", &["11", "12"]), t0);
    set_active(&mut rt, 12, 3);
    rt.reload(cfg("", &["11"]), t0).unwrap();
    rt.tick(t0 + Duration::from_secs(10)).unwrap();
    let events = rt.take_events();
    let kinds: Vec<EventKind> = events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [EventKind::BackendDraining, EventKind::BackendDeregistered]
    );
    assert!(
        events[1].detail.ends_with("; flows still open are purged"),
        "{}",
        events[1].detail
    );
}

#[test]
fn zone_drains_are_noted_per_service() {
    let t0 = Instant::now();
    let mut rt = start(cfg("", &["11", "12"]), t0);
    rt.reload(cfg("    drained_zones: [az-12]\n", &["11", "12"]), t0)
        .unwrap();
    rt.reload(cfg("", &["11", "12"]), t0).unwrap();
    assert_eq!(
        taken(&mut rt),
        [
            ev(EventKind::ZoneDrained, "az-12"),
            ev(EventKind::ZoneUndrained, "az-12"),
        ]
    );
}
