use std::time::{Duration, Instant};

use lb_common::counters::BackendSignals;

use super::*;
use crate::{control::health::machine::Failure, model::config};

/// A one-service config; `backends` are (last address octet, zone, extra keys).
fn config_with(policy: &str, backends: &[(u8, &str, &str)]) -> Config {
    let list: Vec<String> = backends
        .iter()
        .map(|(last, zone, extra)| {
            format!("{{ address: 10.1.0.{last}, port: 8080, zone: {zone}{extra} }}")
        })
        .collect();
    config::parse(&format!(
        "node: {{ zone: az-a }}\ninterfaces: [eth0]\nservices:\n  - name: web\n    vip: 10.0.0.100\n    port: 80\n    backends: [{}]\n{policy}",
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

fn last_octet(address: std::net::IpAddr) -> u8 {
    match address {
        std::net::IpAddr::V4(v4) => v4.octets()[3],
        std::net::IpAddr::V6(v6) => v6.octets()[15],
    }
}

/// The effective weight of each backend, by last octet.
fn weights(fleet: &mut Fleet, now: Instant) -> Vec<(u8, f64)> {
    fleet.refresh(now);
    fleet.weights(now)["web"]
        .backends
        .iter()
        .map(|(at, w)| (last_octet(at.address), *w))
        .collect()
}

fn mode(fleet: &Fleet, now: Instant) -> Mode {
    fleet.weights(now)["web"].mode
}

fn probe(fleet: &mut Fleet, last: u8, ok: bool, times: usize) {
    for _ in 0..times {
        let outcome = if ok { Ok(()) } else { Err(Failure::Refused) };
        fleet.observe_now(&at(last), &outcome);
    }
}

/// Probe results in tests that do not look at their time or latency.
trait ObserveNow {
    fn observe_now(&mut self, at: &BackendRef, outcome: &Outcome) -> bool;
}

impl ObserveNow for Fleet {
    fn observe_now(&mut self, at: &BackendRef, outcome: &Outcome) -> bool {
        self.observe(at, outcome, Duration::ZERO, Instant::now())
    }
}

const THREE: &[(u8, &str, &str)] = &[(11, "az-a", ""), (12, "az-b", ""), (13, "az-c", "")];

#[test]
fn backends_that_start_with_lbd_serve_before_their_first_verdict() {
    let t0 = Instant::now();
    let mut fleet = Fleet::new(&config_with("", THREE), t0);
    assert_eq!(weights(&mut fleet, t0), [(11, 1.0), (12, 1.0), (13, 1.0)]);
    assert_eq!(fleet.health(&at(11)), Some(Health::Unknown));
    // Becoming healthy changes nothing for new flows; failing the threshold does.
    probe(&mut fleet, 11, true, 2);
    assert_eq!(fleet.health(&at(11)), Some(Health::Healthy));
    probe(&mut fleet, 12, false, 1);
    assert_eq!(weights(&mut fleet, t0)[1], (12, 1.0), "one failure of two");
    probe(&mut fleet, 12, false, 1);
    assert_eq!(weights(&mut fleet, t0), [(11, 1.0), (12, 0.0), (13, 1.0)]);
}

#[test]
fn observe_reports_only_changes_of_eligibility() {
    let t0 = Instant::now();
    let mut fleet = Fleet::new(&config_with("", THREE), t0);
    assert!(!fleet.observe_now(&at(11), &Ok(())));
    assert!(
        !fleet.observe_now(&at(11), &Ok(())),
        "unknown -> healthy: was serving"
    );
    assert!(!fleet.observe_now(&at(11), &Err(Failure::Timeout)));
    assert!(fleet.observe_now(&at(11), &Err(Failure::Timeout)));
    assert!(!fleet.observe_now(&at(99), &Ok(())), "not a member");
}

#[test]
fn a_backend_added_to_a_running_service_waits_for_its_healthy_threshold_then_ramps() {
    let policy = "    slow_start: 10s\n";
    let t0 = Instant::now();
    let mut fleet = Fleet::new(&config_with(policy, &THREE[..2]), t0);
    fleet.reconfigure(&config_with(policy, THREE), t0);
    assert_eq!(weights(&mut fleet, t0), [(11, 1.0), (12, 1.0), (13, 0.0)]);
    probe(&mut fleet, 13, true, 1);
    assert_eq!(weights(&mut fleet, t0)[2], (13, 0.0));
    probe(&mut fleet, 13, true, 1);
    let t1 = t0 + Duration::from_secs(1);
    // Slow start: a tenth at once, one more tenth per second, full after 10 s.
    for (after_ms, want) in [
        (0, 0.1),
        (999, 0.1),
        (1_000, 0.2),
        (4_500, 0.5),
        (10_000, 1.0),
    ] {
        let now = t1 + Duration::from_millis(after_ms);
        assert_eq!(
            weights(&mut fleet, now)[2],
            (13, want),
            "{after_ms} ms into slow start"
        );
    }
}

#[test]
fn a_backend_back_from_unhealthy_ramps_but_not_when_it_is_the_only_one() {
    let policy = "    slow_start: 10s\n";
    let t0 = Instant::now();
    let mut fleet = Fleet::new(&config_with(policy, THREE), t0);
    probe(&mut fleet, 12, false, 2);
    assert_eq!(weights(&mut fleet, t0)[1], (12, 0.0));
    probe(&mut fleet, 12, true, 2);
    let t1 = t0 + Duration::from_secs(3);
    assert_eq!(weights(&mut fleet, t1)[1], (12, 0.1));
    assert_eq!(
        weights(&mut fleet, t1 + Duration::from_secs(5))[1],
        (12, 0.6)
    );

    // All down, then one back: it takes everything at once, there is nothing to ramp.
    for last in [11, 12, 13] {
        probe(&mut fleet, last, false, 2);
    }
    assert_eq!(mode(&fleet, t1), Mode::FailOpen);
    weights(&mut fleet, t1);
    probe(&mut fleet, 11, true, 2);
    assert_eq!(weights(&mut fleet, t1), [(11, 1.0), (12, 0.0), (13, 0.0)]);
}

#[test]
fn all_unhealthy_fails_open_or_closed_as_configured() {
    let t0 = Instant::now();
    for (policy, want_mode, want) in [
        ("", Mode::FailOpen, 1.0),
        ("    on_all_unhealthy: fail_closed\n", Mode::FailClosed, 0.0),
    ] {
        let mut fleet = Fleet::new(&config_with(policy, THREE), t0);
        for last in [11, 12, 13] {
            probe(&mut fleet, last, false, 2);
        }
        assert_eq!(mode(&fleet, t0), want_mode);
        assert_eq!(
            weights(&mut fleet, t0),
            [(11, want), (12, want), (13, want)]
        );
    }
}

#[test]
fn cross_zone_off_keeps_the_local_zone_until_it_is_down_then_spills() {
    let policy = "    cross_zone: false\n";
    let backends = &[
        (11, "az-a", ""),
        (12, "az-a", ""),
        (13, "az-b", ""),
        (14, "az-c", ""),
    ];
    let t0 = Instant::now();
    let mut fleet = Fleet::new(&config_with(policy, backends), t0);
    assert_eq!(mode(&fleet, t0), Mode::LocalZone);
    assert_eq!(
        weights(&mut fleet, t0),
        [(11, 1.0), (12, 1.0), (13, 0.0), (14, 0.0)]
    );
    probe(&mut fleet, 11, false, 2);
    assert_eq!(
        weights(&mut fleet, t0),
        [(11, 0.0), (12, 1.0), (13, 0.0), (14, 0.0)],
        "half the local zone is not under the 0.5 threshold"
    );
    probe(&mut fleet, 12, false, 2);
    assert_eq!(mode(&fleet, t0), Mode::Spill);
    assert_eq!(
        weights(&mut fleet, t0),
        [(11, 0.0), (12, 0.0), (13, 1.0), (14, 1.0)]
    );
    probe(&mut fleet, 11, true, 2);
    probe(&mut fleet, 12, true, 2);
    assert_eq!(mode(&fleet, t0), Mode::LocalZone);
}

#[test]
fn a_draining_backend_leaves_the_ring_and_is_purged_once_after_the_delay() {
    let t0 = Instant::now();
    let policy = "    deregistration_delay: 5s\n";
    let mut fleet = Fleet::new(&config_with(policy, THREE), t0);
    let drained = &[
        (11, "az-a", ""),
        (12, "az-b", ", state: draining"),
        (13, "az-c", ""),
    ];
    let t1 = t0 + Duration::from_secs(1);
    fleet.reconfigure(&config_with(policy, drained), t1);
    assert_eq!(weights(&mut fleet, t1), [(11, 1.0), (12, 0.0), (13, 1.0)]);
    assert!(fleet
        .due_purges(t1 + Duration::from_millis(4_999))
        .is_empty());
    assert_eq!(
        fleet.due_purges(t1 + Duration::from_secs(5)),
        [Purge::Drained(at(12))]
    );
    assert!(
        fleet.due_purges(t1 + Duration::from_secs(60)).is_empty(),
        "once"
    );
    assert!(
        fleet.overlay(&fleet.weights(t1)).retiring.is_empty(),
        "keeps its slot"
    );
    // Active again: new flows again, and a later drain starts a new delay.
    fleet.reconfigure(&config_with(policy, THREE), t1 + Duration::from_secs(10));
    assert_eq!(
        weights(&mut fleet, t1 + Duration::from_secs(10))[1],
        (12, 1.0)
    );
    let t2 = t1 + Duration::from_secs(20);
    fleet.reconfigure(&config_with(policy, drained), t2);
    assert!(fleet.due_purges(t2 + Duration::from_secs(4)).is_empty());
    assert_eq!(fleet.due_purges(t2 + Duration::from_secs(5)).len(), 1);
}

#[test]
fn a_removed_backend_retires_for_the_delay_then_leaves() {
    let t0 = Instant::now();
    let policy = "    deregistration_delay: 5s\n";
    let mut fleet = Fleet::new(&config_with(policy, THREE), t0);
    fleet.reconfigure(&config_with(policy, &THREE[..2]), t0);
    let overlay = fleet.overlay(&fleet.weights(t0));
    assert_eq!(
        overlay.retiring.get(&at(13)).map(String::as_str),
        Some("az-c")
    );
    assert_eq!(overlay.ring_weights[&at(13)], 0);
    assert_eq!(overlay.ring_weights[&at(11)], 1000);
    assert_eq!(
        fleet.probed().len(),
        2,
        "a removed backend is no longer probed"
    );
    assert!(!fleet.observe_now(&at(13), &Err(Failure::Refused)));
    assert!(fleet.due_purges(t0 + Duration::from_secs(4)).is_empty());
    assert_eq!(
        fleet.due_purges(t0 + Duration::from_secs(5)),
        [Purge::Removed(at(13))]
    );
    assert!(fleet.overlay(&fleet.weights(t0)).retiring.is_empty());
    assert_eq!(fleet.health(&at(13)), None);
}

#[test]
fn a_removed_backend_added_back_during_its_delay_serves_again() {
    let t0 = Instant::now();
    let mut fleet = Fleet::new(&config_with("", THREE), t0);
    fleet.reconfigure(&config_with("", &THREE[..2]), t0);
    fleet.reconfigure(&config_with("", THREE), t0 + Duration::from_secs(1));
    assert!(fleet.overlay(&fleet.weights(t0)).retiring.is_empty());
    assert_eq!(weights(&mut fleet, t0)[2], (13, 1.0));
    assert!(fleet.due_purges(t0 + Duration::from_secs(3600)).is_empty());
}

#[test]
fn a_removed_service_drops_its_backends_at_once() {
    let t0 = Instant::now();
    let mut fleet = Fleet::new(&config_with("", THREE), t0);
    let mut empty = config_with("", THREE);
    empty.services.clear();
    fleet.reconfigure(&empty, t0);
    assert!(fleet.weights(t0).is_empty());
    assert!(fleet.probed().is_empty());
    assert!(fleet.overlay(&fleet.weights(t0)).retiring.is_empty());
}

#[test]
fn a_passive_ejection_takes_a_backend_out_until_probes_bring_it_back() {
    let t0 = Instant::now();
    let policy = "    health: { passive_failure_ratio: 0.5, passive_min_attempts: 10 }\n";
    let mut fleet = Fleet::new(&config_with(policy, THREE), t0);
    let signals = |syns, syn_acks| BackendSignals {
        syns,
        syn_acks,
        resets: syns - syn_acks,
        ..BackendSignals::default()
    };
    let mut sample = |s| fleet.sample_service("web", &[(at(12), s)], t0);
    assert!(!sample(signals(0, 0)));
    assert!(!sample(signals(10, 9)));
    assert!(sample(signals(30, 12)));
    assert_eq!(fleet.health(&at(12)), Some(Health::Unhealthy));
    assert_eq!(weights(&mut fleet, t0)[1], (12, 0.0));
    probe(&mut fleet, 12, true, 2);
    assert_eq!(weights(&mut fleet, t0)[1], (12, 1.0));
}

#[test]
fn a_udp_services_backend_is_ejected_on_its_port_unreachables_not_on_missing_syn_acks() {
    let t0 = Instant::now();
    let udp = |datagram_flows, unreachables| BackendSignals {
        datagram_flows,
        unreachables,
        ..BackendSignals::default()
    };
    for (protocol, ejects) in [("udp", true), ("tcp", false)] {
        let policy = format!(
            "    protocol: {protocol}\n    health: {{ passive_failure_ratio: 0.5, passive_min_attempts: 10 }}\n"
        );
        let mut fleet = Fleet::new(&config_with(&policy, THREE), t0);
        let ejected = [udp(0, 0), udp(20, 3), udp(22, 25)]
            .map(|s| fleet.sample_service("web", &[(at(12), s)], t0));
        assert_eq!(ejected, [false, false, ejects], "{protocol}");
    }
}

#[test]
fn a_stateless_return_service_ejects_nothing_on_passive_signals_by_default() {
    // Each node of a tier sees the answers to only some of its SYNs: signals that eject a
    // backend of a service one node serves must not eject one of a tier's service.
    let t0 = Instant::now();
    let failing = [(0, 0), (30, 10)].map(|(syns, syn_acks)| BackendSignals {
        syns,
        syn_acks,
        resets: 0,
        ..BackendSignals::default()
    });
    for (stateless, ejects) in [(false, true), (true, false)] {
        let policy = format!(
            "    stateless_return: {stateless}\n    health: {{ passive_min_attempts: 10 }}\n"
        );
        let mut fleet = Fleet::new(&config_with(&policy, THREE), t0);
        let ejected = failing.map(|s| fleet.sample_service("web", &[(at(12), s)], t0));
        assert_eq!(ejected, [false, ejects], "stateless_return: {stateless}");
        let weight = if ejects { 0.0 } else { 1.0 };
        assert_eq!(weights(&mut fleet, t0)[1], (12, weight));
    }
}

#[test]
fn reloaded_thresholds_apply_to_running_backends() {
    let t0 = Instant::now();
    let mut fleet = Fleet::new(&config_with("", THREE), t0);
    fleet.reconfigure(
        &config_with("    health: { unhealthy_threshold: 1 }\n", THREE),
        t0,
    );
    probe(&mut fleet, 11, false, 1);
    assert_eq!(fleet.health(&at(11)), Some(Health::Unhealthy));
}

#[test]
fn services_keep_their_own_members_apart() {
    let t0 = Instant::now();
    let mut c = config_with("", THREE);
    let mut other = c.services[0].clone();
    other.name = "web-2".into();
    other.port = 81;
    other.backends.truncate(1);
    let mut before = other.clone();
    before.name = "a-first".into();
    before.port = 82;
    c.services.push(other);
    c.services.push(before);
    let fleet = Fleet::new(&c, t0);
    let w = fleet.weights(t0);
    assert_eq!(w["web"].backends.len(), 3);
    assert_eq!(w["web-2"].backends.len(), 1);
    assert_eq!(w["a-first"].backends.len(), 1);
    assert!(w["web"].backends.iter().all(|(at, _)| at.service == "web"));
}

#[test]
fn the_ejection_cap_rounds_down_but_allows_one() {
    // (backends, percent, how many passive signals may hold out)
    let cases = [
        (3, 10, 1),
        (10, 10, 1),
        (20, 10, 2),
        (29, 10, 2),
        (4, 50, 2),
        (2, 100, 2),
        (1, 10, 1),
        (100, 0, 0),
    ];
    for (total, percent, want) in cases {
        assert_eq!(
            ejection_cap(total, percent),
            want,
            "{total} backends at {percent}%"
        );
    }
}
