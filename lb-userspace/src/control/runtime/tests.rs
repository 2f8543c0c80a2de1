use std::time::{Duration, Instant};

use lb_common::{
    counters::BackendSignals,
    flow::FlowKey,
    net::FAMILY_IPV4,
    service::{ring_slot_base, ServiceKey},
};

use super::*;
use crate::{
    control::health::machine::Failure,
    dataplane::{FailWrites, FakeDataplane, Write},
    model::config,
};

const RING: u32 = 1009;

fn config_with(policy: &str, backends: &[&str]) -> Config {
    let list: Vec<String> = backends
        .iter()
        .map(|b| format!("{{ address: 10.1.0.{b} }}"))
        .collect();
    config::parse(&format!(
        "node: {{ zone: az-a }}\ninterfaces: [eth0]\ncluster: {{ ring_size: {RING}, hash_seed: 7 }}\n\
         services:\n  - name: web\n    vip: 10.0.0.100\n    port: 80\n    backends: [{}]\n{policy}",
        list.join(", ")
    ))
    .unwrap()
}

/// `"11"` -> `10.1.0.11, port: 8080, zone: az-a`, `"12, state: draining"` likewise.
fn backends(list: &[&'static str]) -> Vec<String> {
    list.iter()
        .map(|b| {
            let (last, extra) = b.split_once(',').unwrap_or((b, ""));
            format!(
                "{last}, port: 8080, zone: az-a{}",
                if extra.is_empty() {
                    String::new()
                } else {
                    format!(",{extra}")
                }
            )
        })
        .collect()
}

fn cfg(policy: &str, list: &[&'static str]) -> Config {
    let owned = backends(list);
    let refs: Vec<&str> = owned.iter().map(String::as_str).collect();
    config_with(policy, &refs)
}

fn start(config: Config, now: Instant) -> Runtime<FakeDataplane> {
    let controller = Controller::new(FakeDataplane::new(RING, 7), RING);
    Runtime::start(config, controller, now).unwrap().0
}

fn at(last: u8) -> BackendRef {
    BackendRef {
        service: "web".into(),
        address: std::net::Ipv4Addr::new(10, 1, 0, last).into(),
        port: 8080,
    }
}

fn key(rt: &Runtime<FakeDataplane>) -> ServiceKey {
    *rt.controller().plan().unwrap().services[0]
        .key
        .v4()
        .unwrap()
}

fn flow(port: u16) -> FlowKey {
    FlowKey {
        src_addr: u32::from_ne_bytes([10, 10, 0, 2]),
        dst_addr: u32::from_ne_bytes([10, 0, 0, 100]),
        src_port: port.to_be(),
        dst_port: 80u16.to_be(),
        proto: 6,
        family: FAMILY_IPV4,
        _pad: [0; 2],
    }
}

/// Sends a packet of each flow from ports `ports` through the fake data path, a SYN
/// (new connections) or not (established ones); returns the backend id each landed on.
fn packets_of(rt: &mut Runtime<FakeDataplane>, ports: std::ops::Range<u16>, syn: bool) -> Vec<u32> {
    let key = key(rt);
    ports
        .map(|p| {
            rt.controller_mut()
                .dataplane_mut()
                .packet(&key, &flow(p), syn)
                .expect("a backend")
        })
        .collect()
}

/// New connections from `ports`.
fn packets(rt: &mut Runtime<FakeDataplane>, ports: std::ops::Range<u16>) -> Vec<u32> {
    packets_of(rt, ports, true)
}

/// Later packets of connections from `ports`.
fn established(rt: &mut Runtime<FakeDataplane>, ports: std::ops::Range<u16>) -> Vec<u32> {
    packets_of(rt, ports, false)
}

fn id(rt: &Runtime<FakeDataplane>, last: u8) -> u32 {
    rt.controller().backend_id(&at(last)).unwrap()
}

fn fail(rt: &mut Runtime<FakeDataplane>, last: u8, times: usize, now: Instant) {
    for _ in 0..times {
        rt.on_probe(&at(last), &Err(Failure::Refused), Duration::ZERO, now)
            .unwrap();
    }
}

#[test]
fn an_unhealthy_backend_leaves_the_ring_but_keeps_its_flows() {
    let t0 = Instant::now();
    let mut rt = start(cfg("", &["11", "12", "13"]), t0);
    let before = packets(&mut rt, 1000..1600);
    let dead = id(&rt, 12);
    assert!(before.contains(&dead));
    let log_start = rt.controller().dataplane().log.len();
    fail(&mut rt, 12, 1, t0);
    assert_eq!(
        rt.controller().dataplane().log.len(),
        log_start,
        "one failure changes nothing"
    );
    fail(&mut rt, 12, 1, t0);

    // The swap wrote only the idle slot, then flipped.
    let writes = &rt.controller().dataplane().log[log_start..];
    let live = ring_slot_base(0, 0, RING)..ring_slot_base(0, 1, RING);
    let flip = writes
        .iter()
        .position(|w| matches!(w, Write::Service(_, m) if m.active_slot == 1))
        .expect("flipped to slot 1");
    assert!(writes.iter().enumerate().all(|(i, w)| match w {
        Write::Ring(index) => !live.contains(index) && i < flip,
        _ => true,
    }));
    assert!(
        !writes.iter().any(|w| matches!(w, Write::PurgeFlows(_))),
        "flows of an unhealthy backend are not purged"
    );
    // Existing flows stay where they were; new flows avoid the dead backend, also on
    // a reused source port.
    assert_eq!(established(&mut rt, 1000..1600), before);
    assert!(!packets(&mut rt, 2000..2600).contains(&dead));
    assert!(!packets(&mut rt, 1000..1600).contains(&dead));
}

#[test]
fn a_quiet_tick_writes_nothing() {
    let t0 = Instant::now();
    let mut rt = start(cfg("", &["11", "12"]), t0);
    let before = rt.controller().dataplane().log.len();
    for ms in [100, 200, 60_000] {
        assert_eq!(
            rt.tick(t0 + Duration::from_millis(ms)).unwrap(),
            ApplySummary::default()
        );
    }
    assert_eq!(rt.controller().dataplane().log.len(), before);
}

#[test]
fn a_draining_backend_keeps_its_flows_until_the_delay_then_they_are_purged() {
    let policy = "    deregistration_delay: 2s\n";
    let t0 = Instant::now();
    let mut rt = start(cfg(policy, &["11", "12", "13"]), t0);
    let before = packets(&mut rt, 1000..1600);
    let drained = id(&rt, 12);
    let on_drained = before.iter().filter(|b| **b == drained).count();
    assert!(on_drained > 0);

    rt.reload(cfg(policy, &["11", "12, state: draining", "13"]), t0)
        .unwrap();
    assert_eq!(
        established(&mut rt, 1000..1600),
        before,
        "existing flows continue"
    );
    assert!(
        !packets(&mut rt, 2000..2600).contains(&drained),
        "no new flows"
    );
    rt.tick(t0 + Duration::from_millis(1900)).unwrap();
    let dp = rt.controller().dataplane();
    assert_eq!(
        dp.flows.values().filter(|t| t.backend == drained).count(),
        on_drained
    );

    rt.tick(t0 + Duration::from_secs(2)).unwrap();
    let dp = rt.controller().dataplane();
    assert_eq!(
        dp.flows.values().filter(|t| t.backend == drained).count(),
        0
    );
    assert_eq!(
        dp.return_flows
            .values()
            .filter(|n| n.backend == drained)
            .count(),
        0
    );
    assert_ne!(
        dp.backends[&drained],
        Default::default(),
        "its slot stays configured"
    );
    // Its old flows now land elsewhere.
    assert!(!established(&mut rt, 1000..1600).contains(&drained));
}

#[test]
fn a_removed_backend_drains_then_its_flows_and_slot_go_and_its_id_waits() {
    let policy = "    deregistration_delay: 2s\n";
    let t0 = Instant::now();
    let mut rt = start(cfg(policy, &["11", "12", "13"]), t0);
    let before = packets(&mut rt, 1000..1600);
    let removed = id(&rt, 13);
    assert!(before.contains(&removed));

    rt.reload(cfg(policy, &["11", "12"]), t0).unwrap();
    assert_eq!(
        established(&mut rt, 1000..1600),
        before,
        "existing flows continue"
    );
    assert!(!packets(&mut rt, 2000..2600).contains(&removed));
    // A backend added meanwhile must not get the retiring one's id.
    rt.reload(
        cfg(policy, &["11", "12", "14"]),
        t0 + Duration::from_secs(1),
    )
    .unwrap();
    assert_ne!(id(&rt, 14), removed);
    assert_ne!(
        rt.controller().dataplane().backends[&removed],
        Default::default()
    );

    let log_start = rt.controller().dataplane().log.len();
    rt.tick(t0 + Duration::from_secs(2)).unwrap();
    let dp = rt.controller().dataplane();
    let writes = &dp.log[log_start..];
    let purge = writes.iter().position(|w| *w == Write::PurgeFlows(removed));
    let free = writes.iter().position(|w| *w == Write::Backend(removed));
    assert!(
        purge.is_some() && purge < free,
        "purged, then freed: {writes:?}"
    );
    assert_eq!(dp.backends[&removed], Default::default());
    assert!(!dp.flows.values().any(|t| t.backend == removed));
    assert_eq!(rt.controller().backend_id(&at(13)), None);
}

#[test]
fn a_slow_start_rewrites_the_ring_in_steps() {
    let policy = "    slow_start: 10s\n";
    let t0 = Instant::now();
    let mut rt = start(cfg(policy, &["11", "12", "13"]), t0);
    fail(&mut rt, 13, 2, t0);
    let back = id(&rt, 13);
    for _ in 0..2 {
        rt.on_probe(&at(13), &Ok(()), Duration::ZERO, t0).unwrap();
    }
    let share = |rt: &Runtime<FakeDataplane>| {
        let ring = &rt.controller().plan().unwrap().services[0].ring;
        ring.iter().filter(|id| **id == back).count() as f64 / RING as f64
    };
    // Weight 0.1 among two of weight 1: 0.1 / 2.1 of the ring.
    assert!((share(&rt) - 0.1 / 2.1).abs() < 0.01, "{}", share(&rt));
    rt.tick(t0 + Duration::from_secs(5)).unwrap();
    assert!((share(&rt) - 0.6 / 2.6).abs() < 0.01, "{}", share(&rt));
    rt.tick(t0 + Duration::from_secs(10)).unwrap();
    assert!((share(&rt) - 1.0 / 3.0).abs() < 0.01, "{}", share(&rt));
}

#[test]
fn passive_signals_eject_a_backend_at_the_next_sample() {
    let policy = "    health: { interval: 1s, timeout: 500ms, passive_min_attempts: 10 }\n";
    let t0 = Instant::now();
    let mut rt = start(cfg(policy, &["11", "12", "13"]), t0);
    let bad = id(&rt, 12);
    rt.tick(t0).unwrap();
    rt.controller_mut().dataplane_mut().signals.insert(
        bad,
        BackendSignals {
            syns: 20,
            syn_acks: 2,
            resets: 18,
            ..BackendSignals::default()
        },
    );
    rt.tick(t0 + Duration::from_millis(500)).unwrap();
    assert_eq!(
        rt.fleet().health(&at(12)),
        Some(crate::control::health::machine::Health::Unknown),
        "sampled once per interval"
    );
    rt.tick(t0 + Duration::from_secs(1)).unwrap();
    assert_eq!(
        rt.fleet().health(&at(12)),
        Some(crate::control::health::machine::Health::Unhealthy)
    );
    assert!(!packets(&mut rt, 1000..1600).contains(&bad));
}

#[test]
fn a_reload_the_data_path_cannot_take_changes_nothing() {
    let t0 = Instant::now();
    let mut rt = start(cfg("", &["11", "12"]), t0);
    let before = rt.controller().dataplane().log.len();
    let mut other = cfg("", &["11"]);
    other.cluster.ring_size = 1013;
    let err = rt.reload(other, t0).unwrap_err();
    assert!(
        err.to_string().contains("cluster.ring_size: cannot change"),
        "{err}"
    );
    assert_eq!(rt.controller().dataplane().log.len(), before);
    assert_eq!(rt.config().services[0].backends.len(), 2);
    assert!(rt.fleet().health(&at(12)).is_some());
}

/// The cost of one effective-weight change for 1,000 backends: weights, Maglev build of
/// the default 65,537-slot ring, diff against the idle slot and the (fake) writes, then
/// the flip. Printed, not asserted: timing on a shared machine is not a test.
#[test]
fn rebuild_and_swap_cost_for_a_thousand_backends() {
    let list: Vec<String> = (0..1000)
        .map(|i| {
            format!(
                "{{ address: 10.1.{}.{}, port: 8080, zone: az-a }}",
                i / 200,
                i % 200 + 10
            )
        })
        .collect();
    let config = config::parse(&format!(
        "node: {{ zone: az-a }}\ninterfaces: [eth0]\nservices:\n  - {{ name: web, vip: 10.0.0.100, port: 80, backends: [{}] }}\n",
        list.join(", ")
    ))
    .unwrap();
    let ring = config.cluster.ring_size;
    let t0 = Instant::now();
    let started = Instant::now();
    let controller = Controller::new(FakeDataplane::new(ring, 7), ring);
    let (mut rt, first) = Runtime::start(config, controller, t0).unwrap();
    let initial = started.elapsed();
    let victim = BackendRef {
        service: "web".into(),
        address: std::net::Ipv4Addr::new(10, 1, 0, 10).into(),
        port: 8080,
    };
    rt.on_probe(&victim, &Err(Failure::Refused), Duration::ZERO, t0)
        .unwrap();
    let started = Instant::now();
    let change = rt
        .on_probe(&victim, &Err(Failure::Refused), Duration::ZERO, t0)
        .unwrap();
    let one = started.elapsed();
    assert_eq!(change.services_flipped, 1);
    assert_eq!(first.backends_written, 1000);
    eprintln!(
        "1,000 backends, ring {ring}: first fill {:.1} ms ({} entries); one backend unhealthy: rebuild + swap {:.1} ms ({} entries written)",
        initial.as_secs_f64() * 1e3,
        first.ring_entries_written,
        one.as_secs_f64() * 1e3,
        change.ring_entries_written
    );
}

#[test]
fn a_failed_swap_is_retried_on_the_next_tick() {
    let t0 = Instant::now();
    let flaky = FakeDataplane::new(RING, 7);
    let (mut rt, _) = Runtime::start(
        cfg("", &["11", "12", "13"]),
        Controller::new(flaky, RING),
        t0,
    )
    .unwrap();
    rt.controller_mut().dataplane_mut().fail_writes = FailWrites::Tables;
    rt.on_probe(&at(12), &Err(Failure::Refused), Duration::ZERO, t0)
        .unwrap();
    assert!(rt
        .on_probe(&at(12), &Err(Failure::Refused), Duration::ZERO, t0)
        .is_err());
    assert!(rt.tick(t0).is_err(), "retried while failing");
    rt.controller_mut().dataplane_mut().fail_writes = FailWrites::None;
    assert_eq!(rt.tick(t0).unwrap().services_flipped, 1);
    let gone = rt.controller().backend_id(&at(12)).unwrap();
    let ring = &rt.controller().plan().unwrap().services[0].ring;
    assert!(!ring.contains(&gone));
    assert_eq!(rt.tick(t0).unwrap(), ApplySummary::default(), "then quiet");
}

/// Every backend flooded with SYNs it never answers (spoofed sources, no SYN cookies)
/// in the same sample: passive signals may hold out only the service's cap
/// (`passive_max_ejection_percent`, at least one) and never its last healthy backend.
#[test]
fn a_syn_flood_against_every_backend_ejects_no_more_than_the_cap() {
    use crate::control::health::machine::Health;
    // (backends, extra health keys, backends out after the flood, refusals per sample)
    let cases: [(&[&'static str], &str, &[u8], u64); 4] = [
        // 10% of 3 rounds down to 0: at least one may go.
        (&["11", "12", "13"], "", &[11], 2),
        // 50% of 4 is 2.
        (
            &["11", "12", "13", "14"],
            ", passive_max_ejection_percent: 50",
            &[11, 12],
            2,
        ),
        // 100% still keeps the last healthy one.
        (
            &["11", "12"],
            ", passive_max_ejection_percent: 100",
            &[11],
            1,
        ),
        // 0 turns passive ejection off.
        (&["11", "12"], ", passive_max_ejection_percent: 0", &[], 2),
    ];
    for (list, extra, want_out, refusals) in cases {
        let policy = format!(
            "    health: {{ interval: 1s, timeout: 500ms, passive_min_attempts: 10{extra} }}\n"
        );
        let t0 = Instant::now();
        let mut rt = start(cfg(&policy, list), t0);
        let lasts: Vec<u8> = list.iter().map(|l| l.parse().unwrap()).collect();
        rt.tick(t0).unwrap();
        for round in 1..=2u64 {
            for last in &lasts {
                let i = id(&rt, *last);
                rt.controller_mut().dataplane_mut().signals.insert(
                    i,
                    BackendSignals {
                        syns: 1000 * round,
                        syn_acks: 10 * round,
                        resets: 0,
                        ..BackendSignals::default()
                    },
                );
            }
            rt.tick(t0 + Duration::from_secs(round)).unwrap();
            let out: Vec<u8> = lasts
                .iter()
                .copied()
                .filter(|l| rt.fleet().health(&at(*l)) == Some(Health::Unhealthy))
                .collect();
            assert_eq!(out, want_out, "{list:?}{extra}, sample {round}");
            let counts = rt.fleet().passive_counts()["web"];
            assert_eq!(
                (counts.ejected, counts.refused),
                (want_out.len() as u64, refusals * round),
                "{list:?}{extra}, sample {round}"
            );
        }
        let landed = packets(&mut rt, 1000..1600);
        for last in &lasts {
            assert_eq!(
                landed.contains(&id(&rt, *last)),
                !want_out.contains(last),
                "{list:?}{extra}: new flows of backend {last}"
            );
        }
    }
}

/// A backend up 1 s, down 1 s, probed every second with thresholds 2/2: its results
/// mostly alternate, so its consecutive counts rarely reach a threshold. Flap damping
/// holds it out once its results flip often enough, and lets it back only after a clean
/// window of passing probes.
#[test]
fn a_flapping_backend_is_held_out_until_a_clean_window() {
    use crate::control::health::machine::Health;
    let policy = "    health: { interval: 1s, timeout: 500ms, passive_failure_ratio: 0 }\n";
    let t0 = Instant::now();
    let mut rt = start(cfg(policy, &["11", "12", "13"]), t0);
    // The phase of the 0.9-1 s probe waits drifts against the 2 s cycle: mostly
    // alternating, now and then two alike.
    let flapping = "+-+-++-+-+-+--+-+-+-++-+-+-";
    let mut held_at = None;
    for (i, step) in flapping.chars().enumerate() {
        let now = t0 + Duration::from_secs(i as u64);
        let outcome = if step == '+' {
            Ok(())
        } else {
            Err(Failure::Timeout)
        };
        rt.on_probe(&at(12), &outcome, Duration::ZERO, now).unwrap();
        if held_at.is_none() && rt.fleet().health(&at(12)) == Some(Health::Unhealthy) {
            held_at = Some(i);
        }
        if let Some(at_step) = held_at {
            assert_eq!(
                rt.fleet().health(&at(12)),
                Some(Health::Unhealthy),
                "back in at result {i} (held at {at_step}) while still flapping"
            );
        }
    }
    let held_at = held_at.expect("the flapping backend was never held out");
    // "+-+-++-+-": the ninth result is the seventh flip (the "--" at 12-13 would have
    // made it unhealthy by threshold later, and "++" at 20-21 healthy again).
    assert_eq!(held_at, 8, "held once 7 flips were seen");
    assert!(rt.fleet().flapping(&at(12)));
    assert!(!packets(&mut rt, 1000..1600).contains(&id(&rt, 12)));
    // Stable again: 9 passes are not enough, the 10th releases it.
    let base = flapping.len() as u64;
    for i in 0..10u64 {
        assert_eq!(
            rt.fleet().health(&at(12)),
            Some(Health::Unhealthy),
            "pass {i}"
        );
        let now = t0 + Duration::from_secs(base + i);
        rt.on_probe(&at(12), &Ok(()), Duration::ZERO, now).unwrap();
    }
    assert_eq!(rt.fleet().health(&at(12)), Some(Health::Healthy));
    assert!(!rt.fleet().flapping(&at(12)));
    assert!(packets(&mut rt, 2000..2600).contains(&id(&rt, 12)));
}

/// A health endpoint flapping on every backend: damping holds backends out one by one
/// but never the last one serving, which keeps the service up; each refused hold is
/// counted.
#[test]
fn flap_damping_never_holds_out_a_services_last_serving_backend() {
    let policy = "    health: { interval: 1s, timeout: 500ms, passive_failure_ratio: 0 }\n";
    let t0 = Instant::now();
    let mut rt = start(cfg(policy, &["11", "12", "13"]), t0);
    // Strictly alternating: no threshold is ever reached, only damping can act.
    let alternating = "+-".repeat(8);
    for (n, backend) in [11, 12, 13].into_iter().enumerate() {
        for (i, step) in alternating.chars().enumerate() {
            let now = t0 + Duration::from_secs((n * 100 + i) as u64);
            let outcome = if step == '+' {
                Ok(())
            } else {
                Err(Failure::Timeout)
            };
            rt.on_probe(&at(backend), &outcome, Duration::ZERO, now)
                .unwrap();
        }
    }
    assert!(rt.fleet().flapping(&at(11)));
    assert!(rt.fleet().flapping(&at(12)));
    assert!(
        !rt.fleet().flapping(&at(13)),
        "the last serving backend was held"
    );
    // 13 had 7 flips at its 8th result and 8 or 9 at each of the 8 after it.
    assert_eq!(rt.fleet().passive_counts()["web"].flap_refused, 9);
    let landed = packets(&mut rt, 1000..1600);
    assert!(!landed.is_empty());
    assert!(landed.iter().all(|b| *b == id(&rt, 13)), "{landed:?}");
}

#[test]
fn a_udp_backend_that_turns_unhealthy_loses_its_flows_and_a_tcp_one_keeps_them() {
    let t0 = Instant::now();
    for (protocol, purged) in [("udp", true), ("tcp", false)] {
        let mut c = cfg("", &["11", "12", "13"]);
        c.services[0].protocol = if protocol == "udp" {
            config::Protocol::Udp
        } else {
            config::Protocol::Tcp
        };
        let mut rt = start(c, t0);
        let before = packets(&mut rt, 1000..1300);
        let dead = id(&rt, 12);
        let on_dead = before.iter().filter(|b| **b == dead).count();
        assert!(on_dead > 0);
        let flows = rt.controller().dataplane().flows.len();
        fail(&mut rt, 12, 2, t0);
        let writes = &rt.controller().dataplane().log;
        assert_eq!(
            writes.contains(&Write::PurgeFlows(dead)),
            purged,
            "{protocol}: {writes:?}"
        );
        let left = rt.controller().dataplane().flows.len();
        let want = if purged { flows - on_dead } else { flows };
        assert_eq!(left, want, "{protocol}");
        // A healthy backend's probes purge nothing.
        let log = rt.controller().dataplane().log.len();
        rt.on_probe(&at(11), &Ok(()), Duration::ZERO, t0).unwrap();
        assert!(!rt.controller().dataplane().log[log..]
            .iter()
            .any(|w| matches!(w, Write::PurgeFlows(_))));
    }
}
