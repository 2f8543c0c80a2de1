//! `lbctl node drain|status|undrain` with the shipped BIRD configs in namespaces (BIRD
//! in the LB namespace, `announce.bird_socket` pointing at it, and BIRD in the client
//! namespace as the router): `node status` shows the VIP in BIRD's table and the BGP and
//! BFD sessions up; `node drain` withdraws the VIP, sees it gone from `lo` and from
//! BIRD, measures new flows at 0/s and exits 0, and the router loses the route; the
//! drain survives an lbd restart (kept in the state file: no announce however healthy);
//! `node undrain` announces again after `hold_up`, and the router learns the route
//! again. Needs `bird` (Debian `bird2`).
use std::time::{Duration, Instant};

use lb_tests::{
    lbd_log::{first_time, millis_between},
    lbd_metrics, lbd_path,
    running_lb::lab_run_dir,
    scenario::*,
    topology::Family,
    LabConfig, RunningLb, VIP,
};
use serde_json::{json, Value};

use crate::bird_announce::{bird_socket, router_route, start_bird, wait_route, WAIT};

const HOLD_UP: Duration = Duration::from_secs(1);

/// `lbctl node status` until `ok` holds of it (bounded); the last status.
fn wait_status(lb: &RunningLb, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let status = lb.lbctl().json(&["node", "status"]);
        if ok(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "{what} not within {WAIT:?}: {status:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn vip(announced: bool, in_bird: bool, why: &str) -> Value {
    json!([{
        "vip": VIP.to_string(),
        "services": ["web"],
        "announced": announced,
        "on_lo": announced,
        "in_bird": in_bird,
        "why": why,
    }])
}

#[test]
fn node_drain_withdraws_from_bird_persists_across_a_restart_and_undrain_announces_again() {
    let lab = three_zones();
    let bird_socket = bird_socket(&lab, "lb-node.conf");
    let config = format!(
        "{}announce:\n  vip_ranges: [10.0.0.0/24]\n  hold_up: {}ms\n  bird_socket: {}\n",
        LabConfig::new(&lab).policy(&[&fast_health()]).yaml(),
        HOLD_UP.as_millis(),
        bird_socket.display()
    );
    let mut lb = RunningLb::start(lab, &config);
    lb.lbd
        .wait_for_log_after(0, "announced VIP 10.0.0.100", WAIT)
        .expect("lbd announces the VIP");
    let _node = start_bird(&lb.lab, lb.lab.lb_ns(), "lb-node.conf");
    let _router = start_bird(&lb.lab, lb.lab.client_ns(), "upstream-router.conf");
    let gateway = lb.lab.client_gateway().to_string();
    wait_route(&lb.lab, Family::V4, Some(&gateway));

    // Status: the VIP in BIRD, the BGP session established, BFD up with the router.
    let router = "10.10.0.2";
    let status = wait_status(&lb, "BGP established and BFD up", |s| {
        let bgp_up = s["bird"]["protocols"].as_array().is_some_and(|ps| {
            ps.iter().any(|p| {
                p["name"] == "upstream" && p["proto"] == "BGP" && p["info"] == "Established"
            })
        });
        let bfd_up = s["bird"]["bfd_sessions"].as_array().is_some_and(|ss| {
            ss.iter()
                .any(|b| b["address"] == router && b["state"] == "Up")
        });
        bgp_up && bfd_up
    });
    assert_eq!(status["vips"], vip(true, true, "serving"), "{status:#}");
    assert_eq!(status["drained"], false);
    assert_eq!(status["bird"]["reachable"], true);
    assert_eq!(status["bird"]["error"], Value::Null);
    let table = lb.lbctl().ok(&["node", "status"]);
    assert!(
        table.contains("upstream") && table.contains("Established"),
        "{table}"
    );

    // Drain: withdrawn from lo and BIRD, no new flows, exit 0; the router loses it.
    let mark = lb.lbd.log_len();
    let report = lb
        .lbctl()
        .json(&["node", "drain", "--flows-timeout", "10s"]);
    println!("node drain reported: {report:#}");
    assert_eq!(report["changed"], true);
    assert_eq!(report["quiet"], true);
    assert_eq!(report["new_flows_per_sec"], 0.0);
    assert_eq!(report["active_flows"], 0);
    let why = "the node is drained (lbctl node drain)";
    assert_eq!(report["node"]["vips"], vip(false, false, why), "{report:#}");
    let since = report["node"]["drained_since"]
        .as_u64()
        .expect("drained since");
    let tail = lb.lbd.log()[mark..].to_string();
    assert!(tail.contains("withdrew VIP 10.0.0.100"), "{tail}");
    assert!(tail.contains(why), "{tail}");
    // Polled only once lbctl returned (it measures new flows over a second first).
    wait_route(&lb.lab, Family::V4, None);
    println!(
        "withdrawal seen by lbctl (lo and BIRD) {} ms after it asked for the drain",
        report["withdrawn_after_ms"]
    );
    let again = lb.lbctl().json(&["node", "drain", "--no-wait"]);
    assert_eq!(again["changed"], false);
    let text = lbd_metrics::get(&lb.lab, "/metrics").body;
    assert_eq!(lbd_metrics::sample(&text, "lb_node_drained"), Some(1.0));

    // Restarted: still drained, from the state file; healthy backends announce nothing.
    lb.restart_lbd_after_sigterm();
    lb.wait_healthy(0, &[0, 1, 2], WAIT);
    std::thread::sleep(HOLD_UP * 2);
    let log = lb.lbd.log();
    assert!(!log.contains("announced VIP"), "{log}");
    let status = lb.lbctl().json(&["node", "status"]);
    assert_eq!(status["drained_since"].as_u64(), Some(since), "{status:#}");
    assert_eq!(status["vips"], vip(false, false, why), "{status:#}");
    assert_eq!(router_route(&lb.lab, Family::V4), None);

    // Undrain: announced again once it has served for hold_up; the router learns it.
    let mark = lb.lbd.log_len();
    let undrained = lb.lbctl().json(&["node", "undrain"]);
    assert_eq!(undrained["changed"], true);
    assert_eq!(undrained["node"]["drained"], false);
    lb.lbd
        .wait_for_log_after(mark, "announced VIP 10.0.0.100", WAIT)
        .expect("announced after the undrain");
    let tail = lb.lbd.log()[mark..].to_string();
    let undrain_at = first_time(&tail, "node undrained through the API").expect("logged");
    let announced = first_time(&tail, "announced VIP 10.0.0.100").expect("logged");
    let held = millis_between(undrain_at, announced);
    println!(
        "announced {held} ms after the undrain (hold_up {} ms)",
        HOLD_UP.as_millis()
    );
    // The loop stamps a tick before it takes the lock the undrain holds while it logs,
    // so the count may start up to one tick (50 ms) before the undrain's log line.
    assert!(held >= HOLD_UP.as_millis() as i64 - 50, "{tail}");
    wait_route(&lb.lab, Family::V4, Some(&gateway));
    wait_status(&lb, "the VIP back in BIRD", |s| {
        s["vips"] == vip(true, true, "serving")
    });

    // `lbd --detach` withdraws and waits until BIRD no longer has the route.
    lb.lbd.stop();
    let path = lb.config_path().to_str().unwrap().to_string();
    let mut detach = lb.lab.spawn_daemon(
        lb.lab.lb_ns(),
        &lbd_path(),
        &["--detach", "--config", path.as_str()],
    );
    let status = detach
        .wait_exit(WAIT)
        .unwrap_or_else(|| panic!("lbd --detach did not exit: {}", detach.log()));
    let out = detach.log();
    assert!(status.success(), "{out}");
    assert!(out.contains("withdrew VIPs 10.0.0.100 from lo"), "{out}");
    assert!(out.contains("withdrawal seen (lo and BIRD) after"), "{out}");
}

/// Without BIRD answering, the withdrawal cannot be confirmed (exit 4); with clients
/// still connecting straight to the node (no router in front to move them), new flows
/// do not stop (exit 5). Both drain all the same.
#[test]
fn node_drain_exits_4_when_bird_does_not_confirm_and_5_while_flows_keep_coming() {
    let lab = three_zones();
    let missing = lab_run_dir(&lab).join("no-bird.ctl");
    let base = LabConfig::new(&lab).policy(&[&fast_health()]).yaml();
    let with_socket = format!(
        "{base}announce:\n  vip_ranges: [10.0.0.0/24]\n  hold_up: 0s\n  bird_socket: {}\n",
        missing.display()
    );
    let mut lb = RunningLb::start(lab, &with_socket);
    lb.lbd
        .wait_for_log_after(0, "announced VIP 10.0.0.100", WAIT)
        .expect("lbd announces the VIP");
    let out = lb
        .lbctl()
        .run(&["node", "drain", "--withdraw-timeout", "500ms"]);
    assert_eq!(out.code, Some(4), "{out:?}");
    assert!(
        out.stderr
            .contains("drained, but the withdrawal was not seen within 500ms")
            && out.stderr.contains("not confirmed gone from BIRD")
            && out.stderr.contains("connecting to BIRD at"),
        "{out:?}"
    );
    let status = lb.lbctl().json(&["node", "status"]);
    assert_eq!(status["drained"], true);
    assert_eq!(status["bird"]["reachable"], false);
    assert_eq!(status["vips"][0]["on_lo"], false, "{status:#}");
    assert_eq!(status["vips"][0]["in_bird"], Value::Null, "{status:#}");
    lb.lbctl().ok(&["node", "undrain"]);

    // No BIRD socket: lo alone confirms; clients keep coming, so flows never stop.
    let without = format!("{base}announce:\n  vip_ranges: [10.0.0.0/24]\n  hold_up: 0s\n");
    lb.reload(&without).expect("the reload is accepted");
    let client = lb_tests::client_loop::ClientLoop::start(
        lb.lab.client_ns(),
        VIP,
        lb_tests::VIP_PORT,
        Duration::from_secs(2),
        WAIT,
    );
    let out = lb
        .lbctl()
        .run(&["-o", "json", "node", "drain", "--flows-timeout", "2s"]);
    let attempts = client.stop();
    assert_eq!(out.code, Some(5), "{out:?}");
    let report: Value = serde_json::from_str(&out.stdout).expect("the report is JSON");
    assert_eq!(report["quiet"], false);
    assert!(
        report["new_flows_per_sec"].as_f64().unwrap() > 0.0,
        "{report:#}"
    );
    assert_eq!(report["node"]["bird"], Value::Null);
    assert_eq!(report["node"]["vips"][0]["on_lo"], false);
    assert!(
        out.stderr
            .contains("drained and withdrawn, but new flows still arrive after 2s"),
        "{out:?}"
    );
    println!(
        "{} connections during the drain; the last rate {} new flows/s",
        attempts.len(),
        report["new_flows_per_sec"]
    );
}
