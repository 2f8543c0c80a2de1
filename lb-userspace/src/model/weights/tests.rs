//! The weight rules as tables, with the expected numbers written out.
use std::time::Duration;

use super::*;
use crate::model::maglev::{self, MaglevBackend};

/// Health and lifecycle of a member, one letter: `H` healthy, `X` unhealthy, `D`
/// draining (healthy), `d` draining (unhealthy).
fn member(zone: &str, weight: u32, state: char, ramp: f64) -> Member<'_> {
    let (healthy, draining) = match state {
        'H' => (true, false),
        'X' => (false, false),
        'D' => (true, true),
        'd' => (false, true),
        _ => panic!("unknown state {state}"),
    };
    Member {
        zone,
        weight,
        draining,
        healthy,
        ramp,
    }
}

struct Case {
    name: &'static str,
    cross_zone: bool,
    threshold: f64,
    zone_weights: &'static [(&'static str, f64)],
    drained: &'static [&'static str],
    fail_closed: bool,
    /// (zone, configured weight, state letter, slow-start ramp)
    members: &'static [(&'static str, u32, char, f64)],
    mode: Mode,
    weights: &'static [f64],
}

const BASE: Case = Case {
    name: "",
    cross_zone: true,
    threshold: 0.5,
    zone_weights: &[],
    drained: &[],
    fail_closed: false,
    members: &[],
    mode: Mode::NoBackend,
    weights: &[],
};

fn check(case: &Case) {
    let zone_weights: ZoneWeights = case
        .zone_weights
        .iter()
        .map(|(z, w)| (z.to_string(), *w))
        .collect();
    let policy = ZonePolicy {
        local_zone: "a",
        cross_zone: case.cross_zone,
        zone_weights: &zone_weights,
        failover_threshold: case.threshold,
        drained_zones: case.drained.iter().copied().collect(),
        on_all_unhealthy: if case.fail_closed {
            OnAllUnhealthy::FailClosed
        } else {
            OnAllUnhealthy::FailOpen
        },
    };
    let members: Vec<Member> = case
        .members
        .iter()
        .map(|(z, w, s, r)| member(z, *w, *s, *r))
        .collect();
    let got = effective(&policy, &members);
    assert_eq!(got.mode, case.mode, "{}: mode", case.name);
    assert_eq!(got.weights.len(), case.weights.len(), "{}", case.name);
    for (i, (have, want)) in got.weights.iter().zip(case.weights).enumerate() {
        assert!(
            (have - want).abs() < 1e-9,
            "{}: member {i} got {have}, want {want} (all: {:?})",
            case.name,
            got.weights
        );
    }
}

#[test]
fn cross_zone_on_shares_by_weight_times_zone_weight() {
    for case in [
        Case {
            name: "healthy backends by weight x zone weight",
            zone_weights: &[("c", 0.5)],
            members: &[("a", 1, 'H', 1.0), ("b", 2, 'H', 1.0), ("c", 2, 'H', 1.0)],
            mode: Mode::CrossZone,
            weights: &[1.0, 2.0, 1.0],
            ..BASE
        },
        Case {
            name: "unhealthy and draining backends get nothing",
            members: &[("a", 1, 'H', 1.0), ("a", 1, 'X', 1.0), ("b", 3, 'D', 1.0)],
            mode: Mode::CrossZone,
            weights: &[1.0, 0.0, 0.0],
            ..BASE
        },
        Case {
            name: "a drained zone gets nothing",
            drained: &["b"],
            members: &[("a", 1, 'H', 1.0), ("b", 1, 'H', 1.0), ("c", 1, 'H', 1.0)],
            mode: Mode::CrossZone,
            weights: &[1.0, 0.0, 1.0],
            ..BASE
        },
        Case {
            name: "zone weight 0 works like a drain",
            zone_weights: &[("b", 0.0)],
            members: &[("a", 1, 'H', 1.0), ("b", 1, 'H', 1.0), ("c", 1, 'H', 1.0)],
            mode: Mode::CrossZone,
            weights: &[1.0, 0.0, 1.0],
            ..BASE
        },
        Case {
            name: "slow start scales the weight",
            zone_weights: &[("b", 0.5)],
            members: &[("a", 2, 'H', 0.3), ("b", 1, 'H', 1.0), ("b", 4, 'H', 0.5)],
            mode: Mode::CrossZone,
            weights: &[0.6, 0.5, 1.0],
            ..BASE
        },
    ] {
        check(&case);
    }
}

#[test]
fn cross_zone_off_keeps_flows_local_until_the_local_zone_is_short() {
    let off = Case {
        cross_zone: false,
        ..BASE
    };
    for case in [
        Case {
            name: "local zone only",
            members: &[
                ("a", 1, 'H', 1.0),
                ("a", 2, 'H', 1.0),
                ("b", 1, 'H', 1.0),
                ("c", 1, 'H', 1.0),
            ],
            mode: Mode::LocalZone,
            weights: &[1.0, 2.0, 0.0, 0.0],
            ..off
        },
        Case {
            name: "half the local zone healthy is not under a 0.5 threshold",
            members: &[("a", 1, 'H', 1.0), ("a", 1, 'X', 1.0), ("b", 1, 'H', 1.0)],
            mode: Mode::LocalZone,
            weights: &[1.0, 0.0, 0.0],
            ..off
        },
        Case {
            name: "a third of the local zone healthy spills to every zone by weight",
            zone_weights: &[("c", 0.5)],
            members: &[
                ("a", 1, 'H', 1.0),
                ("a", 1, 'X', 1.0),
                ("a", 1, 'X', 1.0),
                ("b", 2, 'H', 1.0),
                ("c", 2, 'H', 1.0),
            ],
            mode: Mode::Spill,
            weights: &[1.0, 0.0, 0.0, 2.0, 1.0],
            ..off
        },
        Case {
            name: "local zone down: other zones take everything",
            members: &[
                ("a", 1, 'X', 1.0),
                ("a", 1, 'X', 1.0),
                ("b", 1, 'H', 1.0),
                ("c", 3, 'H', 1.0),
            ],
            mode: Mode::Spill,
            weights: &[0.0, 0.0, 1.0, 3.0],
            ..off
        },
        Case {
            name: "the share counts configured weight, not backends (3 of 4 healthy)",
            members: &[("a", 3, 'H', 1.0), ("a", 1, 'X', 1.0), ("b", 1, 'H', 1.0)],
            mode: Mode::LocalZone,
            weights: &[3.0, 0.0, 0.0],
            ..off
        },
        Case {
            name: "the share counts configured weight, not backends (1 of 4 healthy)",
            members: &[("a", 1, 'H', 1.0), ("a", 3, 'X', 1.0), ("b", 1, 'H', 1.0)],
            mode: Mode::Spill,
            weights: &[1.0, 0.0, 1.0],
            ..off
        },
        Case {
            name: "threshold 0 spills only when no local backend is healthy",
            threshold: 0.0,
            members: &[
                ("a", 1, 'H', 1.0),
                ("a", 1, 'X', 1.0),
                ("a", 1, 'X', 1.0),
                ("a", 1, 'X', 1.0),
                ("b", 1, 'H', 1.0),
            ],
            mode: Mode::LocalZone,
            weights: &[1.0, 0.0, 0.0, 0.0, 0.0],
            ..off
        },
        Case {
            name: "threshold 1 spills as soon as one local backend is down",
            threshold: 1.0,
            members: &[("a", 1, 'H', 1.0), ("a", 1, 'X', 1.0), ("b", 1, 'H', 1.0)],
            mode: Mode::Spill,
            weights: &[1.0, 0.0, 1.0],
            ..off
        },
        Case {
            name: "draining local backends do not count against the local share",
            members: &[("a", 1, 'H', 1.0), ("a", 1, 'D', 1.0), ("b", 1, 'H', 1.0)],
            mode: Mode::LocalZone,
            weights: &[1.0, 0.0, 0.0],
            ..off
        },
        Case {
            name: "a drained local zone (zonal shift) spills",
            drained: &["a"],
            members: &[("a", 1, 'H', 1.0), ("b", 1, 'H', 1.0), ("c", 1, 'H', 1.0)],
            mode: Mode::Spill,
            weights: &[0.0, 1.0, 1.0],
            ..off
        },
        Case {
            name: "no backend in the local zone spills",
            members: &[("b", 1, 'H', 1.0), ("c", 2, 'H', 1.0)],
            mode: Mode::Spill,
            weights: &[1.0, 2.0],
            ..off
        },
        Case {
            name: "slow start applies within the local zone",
            members: &[("a", 1, 'H', 1.0), ("a", 1, 'H', 0.2), ("b", 1, 'H', 1.0)],
            mode: Mode::LocalZone,
            weights: &[1.0, 0.2, 0.0],
            ..off
        },
    ] {
        check(&case);
    }
}

#[test]
fn with_no_healthy_backend_the_service_fails_open_or_closed() {
    for case in [
        Case {
            name: "fail open: every active backend by weight x zone weight",
            zone_weights: &[("b", 0.5)],
            members: &[("a", 1, 'X', 1.0), ("b", 2, 'X', 1.0), ("c", 1, 'd', 1.0)],
            mode: Mode::FailOpen,
            weights: &[1.0, 1.0, 0.0],
            ..BASE
        },
        Case {
            name: "fail open ignores the slow-start ramp",
            members: &[("a", 2, 'X', 0.1)],
            mode: Mode::FailOpen,
            weights: &[2.0],
            ..BASE
        },
        Case {
            name: "fail open with cross_zone off still uses every zone",
            cross_zone: false,
            members: &[("a", 1, 'X', 1.0), ("b", 1, 'X', 1.0)],
            mode: Mode::FailOpen,
            weights: &[1.0, 1.0],
            ..BASE
        },
        Case {
            name: "fail open keeps drained zones drained while others are left",
            drained: &["b"],
            members: &[("a", 1, 'X', 1.0), ("b", 1, 'H', 1.0)],
            mode: Mode::FailOpen,
            weights: &[1.0, 0.0],
            ..BASE
        },
        Case {
            name: "fail open uses drained zones when nothing else is left",
            drained: &["a"],
            members: &[("a", 1, 'H', 1.0), ("a", 2, 'X', 1.0)],
            mode: Mode::FailOpen,
            weights: &[1.0, 2.0],
            ..BASE
        },
        Case {
            name: "fail closed drops",
            fail_closed: true,
            members: &[("a", 1, 'X', 1.0), ("b", 1, 'X', 1.0)],
            mode: Mode::FailClosed,
            weights: &[0.0, 0.0],
            ..BASE
        },
        Case {
            name: "fail closed waits for the last healthy backend",
            fail_closed: true,
            members: &[("a", 1, 'X', 1.0), ("b", 1, 'H', 1.0)],
            mode: Mode::CrossZone,
            weights: &[0.0, 1.0],
            ..BASE
        },
        Case {
            name: "only draining backends: nothing takes new flows",
            members: &[("a", 1, 'D', 1.0), ("b", 1, 'd', 1.0)],
            mode: Mode::NoBackend,
            weights: &[0.0, 0.0],
            ..BASE
        },
        Case {
            name: "no backends at all",
            members: &[],
            mode: Mode::NoBackend,
            weights: &[],
            ..BASE
        },
    ] {
        check(&case);
    }
}

#[test]
fn ring_weights_keep_three_decimals_and_never_round_a_live_backend_away() {
    for (weight, want) in [
        (0.0, 0),
        (-1.0, 0),
        (f64::NAN, 0),
        (1.0, 1000),
        (0.5, 500),
        (2.3456, 2346),
        (0.0004, 1),
        (1000.0 * 100.0, 100_000_000),
    ] {
        assert_eq!(ring_weight(weight), want, "{weight}");
    }
}

#[test]
fn slow_start_ramps_in_ten_steps() {
    let window = Duration::from_secs(10);
    for (elapsed_ms, want) in [
        (0, 0.1),
        (999, 0.1),
        (1_000, 0.2),
        (5_500, 0.6),
        (9_999, 1.0),
        (10_000, 1.0),
        (60_000, 1.0),
    ] {
        let got = ramp(Duration::from_millis(elapsed_ms), window);
        assert!(
            (got - want).abs() < 1e-9,
            "{elapsed_ms}ms: {got}, want {want}"
        );
    }
    assert_eq!(ramp(Duration::ZERO, Duration::ZERO), 1.0, "0s is off");
}

/// Effective weights go through `ring_weight` into the Maglev builder: the scaling must
/// not change the table, and fractional weights must still get their shares.
#[test]
fn scaled_fractional_weights_keep_their_maglev_shares() {
    let backends = |weights: &[u32]| -> Vec<MaglevBackend> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| MaglevBackend {
                identity: format!("10.1.0.{}:8080", 11 + i),
                weight: *w,
                id: i as u32,
            })
            .collect()
    };
    assert_eq!(
        maglev::build(&backends(&[1, 2, 3]), 65537),
        maglev::build(
            &backends(&[ring_weight(1.0), ring_weight(2.0), ring_weight(3.0)]),
            65537
        )
    );
    let effective = [0.5, 1.0, 0.25, 2.0];
    let weights: Vec<u32> = effective.iter().map(|w| ring_weight(*w)).collect();
    let table = maglev::build(&backends(&weights), 65537);
    let total: f64 = effective.iter().sum();
    for (i, w) in effective.iter().enumerate() {
        let share = table.iter().filter(|id| **id == i as u32).count() as f64 / 65537.0;
        assert!(
            (share - w / total).abs() <= 0.01,
            "backend {i}: {share:.4} of slots, wants {:.4}",
            w / total
        );
    }
}
