//! Where new flows go when backends or a whole zone fail, real TCP through `lbd` on a
//! namespace lab: a zone outage with cross_zone off moves traffic to the other zones and
//! back; with every backend unhealthy the service fails open or closed as configured,
//! and existing flows keep going either way.
//!
//! Which backend a connection may reach is judged by whether it started after lbd logged
//! the change (exact at any load); the bounds are measured to lbd's log stamps with
//! [`SLACK`]; the tests wait for numbers of connections, never for a while.
use std::time::{Duration, SystemTime};

use lb_tests::{
    client_loop::started_between,
    hold_via, http_get_via,
    lbd_log::{first_time, live_after, millis_between},
    scenario::*,
    BackendServer, BackendSpec, ClientLoop, FailureKind, Lab, LabConfig, LabSpec, RunningLb, VIP,
    VIP_PORT,
};

/// Bounds each connection that must succeed.
const PER_CONN: Duration = Duration::from_secs(3);
/// Bounds every wait for a log line or for connections (they end as soon as it comes).
const WAIT: Duration = Duration::from_secs(30);

#[test]
fn a_local_zone_outage_with_cross_zone_off_moves_traffic_away_and_back() {
    let lab = Lab::build(&LabSpec {
        backends: vec![
            BackendSpec::new("b1", "az-a"),
            BackendSpec::new("b2", "az-a"),
            BackendSpec::new("b3", "az-b"),
            BackendSpec::new("b4", "az-c"),
        ],
        one_nic: false,
        ipv6: false,
        tc: false,
    });
    let health = fast_health();
    let config = LabConfig::new(&lab)
        .policy(&[&health, "cross_zone: false"])
        .yaml();
    let mut lb = RunningLb::start(lab, &config);
    lb.wait_healthy(0, &[0, 1, 2, 3], WAIT);
    let local = lb.burst(60, PER_CONN, WAIT);
    local.assert_all_answered(60);
    assert!(
        local.per_backend.keys().all(|b| b == "b1" || b == "b2"),
        "{:?}",
        local.per_backend
    );

    let client = ClientLoop::start(lb.lab.client_ns(), VIP, VIP_PORT, PER_CONN, WAIT * 3);
    wait_attempts(&client, 20, WAIT);
    let mark = lb.lbd.log_len();
    let down = SystemTime::now();
    lb.lab.set_backend_link(0, false);
    lb.lab.set_backend_link(1, false);
    let log = lb
        .lbd
        .wait_for_log_after(mark, "new flows spill to other zones", WAIT)
        .unwrap();
    // Logged once the spilling table is live.
    let spilled = live_after(first_time(&log, "new flows spill").unwrap());
    wait_attempts_after(&client, spilled, 20, WAIT);

    let mark = lb.lbd.log_len();
    let up = SystemTime::now();
    lb.lab.set_backend_link(0, true);
    lb.lab.set_backend_link(1, true);
    let log = lb
        .lbd
        .wait_for_log_after(mark, "service web: local zone only", WAIT)
        .unwrap();
    let returned = live_after(first_time(&log, "service web: local zone only").unwrap());
    wait_attempts_after(&client, returned, 20, WAIT);
    let attempts = client.stop();

    let outage = started_between(&attempts, spilled, up);
    let after = started_between(&attempts, returned, SystemTime::now());
    let lost: Vec<_> = attempts.iter().filter(|a| a.failure().is_some()).collect();
    println!(
        "zone outage: spilled {} ms after the unplug (bound {} ms), back {} ms after the \
         replug (bound {} ms); {} connections lost (timeouts to the unplugged zone before \
         the spill), 0 reset, of {}",
        millis_between(down, spilled),
        ms(detection_bound()),
        millis_between(up, returned),
        ms(recovery_bound()),
        lost.len(),
        attempts.len()
    );
    // Only connections caught by the unplug, or sent to the dead zone before the spill,
    // may fail, and only by timing out (nothing resets them).
    assert!(
        lost.iter()
            .all(|a| a.failure() == Some(FailureKind::Timeout)
                && a.end >= down
                && a.start < spilled),
        "{lost:?}"
    );
    assert!(outage.len() >= 20, "too few connections during the outage");
    assert!(
        outage
            .iter()
            .all(|a| matches!(a.backend(), Some("b3" | "b4"))),
        "during the outage: {outage:?}"
    );
    assert!(after.len() >= 20, "too few connections after the return");
    assert!(
        after
            .iter()
            .all(|a| matches!(a.backend(), Some("b1" | "b2"))),
        "after the return: {after:?}"
    );
    assert!(millis_between(down, spilled) <= ms(detection_bound() + SLACK));
    assert!(millis_between(up, returned) <= ms(recovery_bound() + SLACK));
}

/// Health checks on a separate port, served by their own servers, so a test can make
/// every backend unhealthy while the service itself still answers.
fn with_health_servers(policy: &str) -> (RunningLb, Vec<BackendServer>) {
    let lab = three_zones();
    let health: Vec<BackendServer> = (0..3)
        .map(|i| BackendServer::start(lab.backend_ns(i), lab.backend_addr(i), 9090, "health"))
        .collect();
    let probe = format!(
        "health: {{ type: http, port: 9090, path: /healthz, interval: {}ms, timeout: {}ms, passive_failure_ratio: 0 }}",
        INTERVAL.as_millis(),
        TIMEOUT.as_millis()
    );
    let config = LabConfig::new(&lab).policy(&[&probe, policy]).yaml();
    let mut lb = RunningLb::start(lab, &config);
    lb.wait_healthy(0, &[0, 1, 2], WAIT);
    (lb, health)
}

#[test]
fn with_every_backend_unhealthy_a_fail_open_service_sends_to_all() {
    let (mut lb, health) = with_health_servers("on_all_unhealthy: fail_open");
    let mark = lb.lbd.log_len();
    drop(health);
    lb.lbd
        .wait_for_log_after(mark, "service web: fail open", WAIT)
        .unwrap();
    let r = lb.burst(90, PER_CONN, WAIT);
    println!(
        "fail open: {} of 90 connections answered, by {:?}",
        r.ok, r.per_backend
    );
    r.assert_all_answered(90);
    assert_eq!(r.backends_seen(), 3, "{:?}", r.per_backend);
}

#[test]
fn with_every_backend_unhealthy_a_fail_closed_service_drops_new_flows_only() {
    let (mut lb, health) = with_health_servers("on_all_unhealthy: fail_closed");
    let mut held = hold_via(lb.lab.client_ns(), VIP, VIP_PORT, PER_CONN).unwrap();
    let mark = lb.lbd.log_len();
    drop(health);
    lb.lbd
        .wait_for_log_after(mark, "service web: fail closed", WAIT)
        .unwrap();
    for _ in 0..3 {
        let e = http_get_via(
            lb.lab.client_ns(),
            VIP,
            VIP_PORT,
            Duration::from_millis(500),
        )
        .expect_err("a new connection must be dropped");
        assert!(e.contains("timed out") || e.contains("no EOF"), "{e}");
    }
    assert_eq!(
        held.echo("still here\n", PER_CONN).unwrap(),
        "still here\n",
        "an existing flow keeps going"
    );
    // One backend healthy again: new flows go to it alone.
    let i = lb
        .lab
        .spec()
        .backends
        .iter()
        .position(|b| b.name != held.backend)
        .unwrap();
    let mark = lb.lbd.log_len();
    let _health =
        BackendServer::start(lb.lab.backend_ns(i), lb.lab.backend_addr(i), 9090, "health");
    lb.wait_healthy(mark, &[i], WAIT);
    let r = lb.burst(30, PER_CONN, WAIT);
    r.assert_all_answered(30);
    assert_eq!(
        r.per_backend.keys().collect::<Vec<_>>(),
        [&lb.lab.backend_spec(i).name]
    );
    let log = lb.stop_lbd();
    let drops = log
        .split_whitespace()
        .find_map(|w| w.strip_prefix("drop_no_backend="))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    println!("fail closed: 3 of 3 new connections dropped ({drops} SYNs counted as drop_no_backend), the held connection kept echoing");
    assert!(drops >= 3, "{log}");
}
