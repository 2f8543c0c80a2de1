//! End to end, per policy: real TCP connections through the VIP with `lbd` in the lab.
use std::{
    collections::BTreeMap,
    thread,
    time::{Duration, Instant},
};

use lb_tests::{
    hold_via, lab_config_with_policy, scenario::three_zones, BurstResult, RunningLb, VIP, VIP_PORT,
};

fn short_connections(lb: &RunningLb, count: usize) -> BurstResult {
    let result = lb.burst(count, Duration::from_secs(3), Duration::from_secs(120));
    result.assert_all_answered(count);
    result
}

/// Waits until lbd reports exactly `want` open flows per backend.
fn wait_active_flows(lb: &RunningLb, want: &BTreeMap<String, u64>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = lb.active_flows();
        if &got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "open flows per backend: {got:?}, waiting for {want:?}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// Every backend's `active_flows=N` from lbd's shutdown report.
fn active_flows_at_shutdown(log: &str) -> BTreeMap<String, u64> {
    log.lines()
        .filter_map(|l| {
            let rest = l.split_once("backend web/")?.1;
            let addr = rest.split_whitespace().next()?.to_string();
            let n = rest
                .split("active_flows=")
                .nth(1)?
                .split_whitespace()
                .next()?;
            Some((addr, n.parse().ok()?))
        })
        .collect()
}

#[test]
fn weighted_round_robin_3_1_1_gives_60_20_20_over_500_connections() {
    let lab = three_zones();
    let config = lab_config_with_policy(&lab, &[3, 1, 1], "round_robin");
    let lb = RunningLb::start(lab, &config);
    let result = short_connections(&lb, 500);
    for (name, want) in [("b1", 0.6), ("b2", 0.2), ("b3", 0.2)] {
        let got = result.per_backend.get(name).copied().unwrap_or(0) as f64 / 500.0;
        assert!(
            (got - want).abs() <= 0.05,
            "{name}: {:.1}% of 500, want {:.0}% ({:?})",
            got * 100.0,
            want * 100.0,
            result.per_backend
        );
    }
}

#[test]
fn least_conn_steers_short_connections_away_from_a_backend_holding_long_ones() {
    let lab = three_zones();
    let config = lab_config_with_policy(&lab, &[1, 1, 1], "least_conn");
    let mut lb = RunningLb::start(lab, &config);
    let ns = lb.lab.client_ns().to_string();
    // Long-lived connections spread by least_conn; keep only those that landed on b1.
    let mut held = Vec::new();
    for i in 0..30 {
        let conn = hold_via(&ns, VIP, VIP_PORT, Duration::from_secs(3))
            .unwrap_or_else(|e| panic!("long-lived connection #{i}: {e}"));
        held.push(conn);
    }
    let (mut on_b1, others): (Vec<_>, Vec<_>) = held.into_iter().partition(|c| c.backend == "b1");
    assert!(
        on_b1.len() >= 5,
        "b1 got only {} of 30 long-lived connections",
        on_b1.len()
    );
    for conn in others {
        conn.close();
    }
    // Until the closes (FIN both ways) have reached the data path, only b1 has flows.
    let b1 = format!("{}:8080", lb.lab.backend_addr(0));
    let want: BTreeMap<String, u64> = (0..3)
        .map(|i| format!("{}:8080", lb.lab.backend_addr(i)))
        .map(|b| {
            let n = if b == b1 { on_b1.len() as u64 } else { 0 };
            (b, n)
        })
        .collect();
    wait_active_flows(&lb, &want);

    let result = short_connections(&lb, 90);
    let to_b1 = result.per_backend.get("b1").copied().unwrap_or(0);
    assert!(
        to_b1 <= 3,
        "b1 holds {} long connections yet got {to_b1} of 90 new ones ({:?})",
        on_b1.len(),
        result.per_backend
    );
    for conn in &mut on_b1 {
        assert_eq!(
            conn.echo("still there\n", Duration::from_secs(2)).unwrap(),
            "still there\n"
        );
    }
    for conn in on_b1 {
        conn.close();
    }
    let none: BTreeMap<String, u64> = want.keys().map(|b| (b.clone(), 0)).collect();
    wait_active_flows(&lb, &none);
    let log = lb.stop_lbd();
    let active = active_flows_at_shutdown(&log);
    assert_eq!(active.len(), 3, "{log}");
    assert!(
        active.values().all(|n| *n == 0),
        "active flows after every connection closed: {active:?}\n{log}"
    );
    assert!(
        !log.contains("corrected"),
        "counts needed correcting, so the data path lost closes:\n{log}"
    );
}
