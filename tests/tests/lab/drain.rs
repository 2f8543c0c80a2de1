//! Draining at run time through the admin API, real TCP through `lbd` on a namespace
//! lab: `lbctl backend drain` and `lbctl zone drain` take effect before `lbctl` returns
//! (the change is applied under the API's lock before the answer), so every new
//! connection made afterwards goes to the others, while a connection already on the
//! drained backend keeps going; undraining brings the backend back.
use std::time::Duration;

use lb_tests::{
    hold_via, scenario::*, vip, BurstResult, Family, HeldConn, Lab, LabConfig, LabSpec, RunningLb,
    VIP_PORT,
};

const PER_CONN: Duration = Duration::from_secs(5);
const WAIT: Duration = Duration::from_secs(30);
const BURST: usize = 90;

/// The service's VIP and backends are of `family`.
fn start(family: Family) -> RunningLb {
    let lab = Lab::build(&LabSpec::three_zones().family(family));
    let health = fast_health();
    // Longer than the test: the held connection is never purged while it runs.
    let config = LabConfig::new(&lab)
        .family(family)
        .policy(&[&health, "deregistration_delay: 300s"])
        .yaml();
    let mut lb = RunningLb::start(lab, &config);
    lb.wait_healthy_in(family, 0, &[0, 1, 2], WAIT);
    lb
}

/// A long-lived connection through the VIP of `family` that landed on `backend` (others
/// are closed), within 100 tries.
fn hold_on(lb: &RunningLb, family: Family, backend: &str) -> HeldConn {
    for _ in 0..100 {
        let conn = hold_via(lb.lab.client_ns(), vip(family), VIP_PORT, PER_CONN).unwrap();
        if conn.backend == backend {
            return conn;
        }
        conn.close();
    }
    panic!("no connection landed on {backend} in 100 tries");
}

fn new_connections(lb: &RunningLb, family: Family) -> BurstResult {
    let r = lb.burst_in(family, BURST, PER_CONN, WAIT * 2);
    r.assert_all_answered(BURST);
    r
}

/// Every one of the burst's connections went to `only`, and each of those got some (one
/// of two or three equal backends going without in 90 connections happens less than
/// once in 10^15 runs).
fn assert_only(r: &BurstResult, only: &[&str]) {
    let seen: Vec<&str> = r.per_backend.keys().map(String::as_str).collect();
    assert_eq!(seen, only, "{:?}", r.per_backend);
    assert_eq!(r.per_backend.values().sum::<usize>(), BURST);
}

fn assert_echoes(held: &mut HeldConn, msg: &str) {
    assert_eq!(
        held.echo(msg, PER_CONN).unwrap(),
        msg,
        "on {}",
        held.backend
    );
}

#[test]
fn an_api_backend_drain_sends_new_connections_elsewhere_and_keeps_existing_ones() {
    an_api_backend_drain_sends_new_connections_elsewhere_and_keeps_existing_ones_in(Family::V4);
}

#[test]
fn over_ipv6_an_api_backend_drain_sends_new_connections_elsewhere_and_keeps_existing_ones() {
    an_api_backend_drain_sends_new_connections_elsewhere_and_keeps_existing_ones_in(Family::V6);
}

fn an_api_backend_drain_sends_new_connections_elsewhere_and_keeps_existing_ones_in(family: Family) {
    let lb = start(family);
    let ctl = lb.lbctl();
    let mut held = hold_on(&lb, family, "b2");
    let b2 = lb.backend_socket(1, family).to_string();

    let out = ctl.ok(&["backend", "drain", "web", &b2]);
    assert!(out.contains("state: active -> draining"), "{out}");
    let drained = new_connections(&lb, family);
    assert_only(&drained, &["b1", "b3"]);
    assert_echoes(&mut held, "still on b2\n");

    ctl.ok(&["backend", "undrain", "web", &b2]);
    let back = new_connections(&lb, family);
    assert_only(&back, &["b1", "b2", "b3"]);
    assert_echoes(&mut held, "still on b2 after the undrain\n");
    println!(
        "backend drain ({family}): {:?} of {BURST} new connections while b2 drained, {:?} after the \
         undrain; the held connection on b2 echoed throughout",
        drained.per_backend, back.per_backend
    );
}

#[test]
fn an_api_zone_drain_sends_new_connections_elsewhere_and_keeps_existing_ones() {
    let lb = start(Family::V4);
    let ctl = lb.lbctl();
    let mut held = hold_on(&lb, Family::V4, "b3");

    let out = ctl.ok(&["zone", "drain", "az-c", "--service", "web"]);
    assert!(out.contains("drained_zones"), "{out}");
    let drained = new_connections(&lb, Family::V4);
    assert_only(&drained, &["b1", "b2"]);
    assert_echoes(&mut held, "still on b3\n");

    ctl.ok(&["zone", "undrain", "az-c"]);
    let back = new_connections(&lb, Family::V4);
    assert_only(&back, &["b1", "b2", "b3"]);
    assert_echoes(&mut held, "still on b3 after the undrain\n");
    println!(
        "zone drain: {:?} of {BURST} new connections while az-c drained, {:?} after the \
         undrain; the held connection on b3 echoed throughout",
        drained.per_backend, back.per_backend
    );
}
