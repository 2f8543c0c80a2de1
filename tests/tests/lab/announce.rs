//! VIP announcement on a namespace lab: lbd holds the VIP's /32 on `lo` in its namespace
//! (labelled `lo:lbd`) while a backend serves, withdraws it within the documented bound
//! when none does, announces it again after the hold-up, keeps it when it is killed or
//! restarted, adds it again when something else removed it, and removes it on `lbd
//! --detach`; an operator's own /32 on `lo` in the same range is never touched. The
//! addresses are read with `ip -j addr`; every bound is measured between lbd's own log
//! stamps, with [`SLACK`]; figures are printed.
use std::time::{Duration, SystemTime};

use lb_tests::{
    lbd_log::{first_time, lines_with, millis_between},
    lbd_path, netns,
    scenario::*,
    Lab, LabConfig, RunningLb, VIP,
};

/// Bounds every wait for a log line (it ends as soon as the line comes).
const WAIT: Duration = Duration::from_secs(30);
const HOLD_UP: Duration = Duration::from_secs(1);
/// lbd's loop tick: a withdraw is made at the first tick after the last verdict.
const TICK: Duration = Duration::from_millis(50);
/// The operator's own address on `lo`, inside the VIP range.
const OPERATOR_ADDR: &str = "10.0.0.200";

/// The IPv4 addresses on `lo` in the LB namespace, as (address/len, label, scope).
fn lo_addresses(lab: &Lab) -> Vec<(String, String, String)> {
    let out = netns::ns_ip(lab.lb_ns(), &["-j", "-4", "addr", "show", "dev", "lo"]);
    let links: serde_json::Value = serde_json::from_str(&out).expect("ip -j prints JSON");
    let mut found = Vec::new();
    for link in links.as_array().expect("a list of links") {
        for a in link["addr_info"].as_array().into_iter().flatten() {
            let s = |k: &str| a[k].as_str().unwrap_or_default().to_string();
            found.push((
                format!("{}/{}", s("local"), a["prefixlen"]),
                s("label"),
                s("scope"),
            ));
        }
    }
    found
}

fn vip_on_lo(lab: &Lab) -> bool {
    let ours = (
        format!("{VIP}/32"),
        "lo:lbd".to_string(),
        "global".to_string(),
    );
    lo_addresses(lab).contains(&ours)
}

fn operator_addr_on_lo(lab: &Lab) -> bool {
    lo_addresses(lab)
        .iter()
        .any(|(a, label, _)| *a == format!("{OPERATOR_ADDR}/32") && label == "lo")
}

/// Waits for `needle` in lbd's log after byte `mark`; its stamp.
fn wait_line(lb: &mut RunningLb, mark: usize, needle: &str) -> SystemTime {
    lb.lbd
        .wait_for_log_after(mark, needle, WAIT)
        .unwrap_or_else(|e| panic!("waiting for {needle:?}: {e}"));
    first_time(&lb.lbd.log()[mark..], needle).expect("the line is stamped")
}

fn ms(d: Duration) -> i64 {
    d.as_millis() as i64
}

#[test]
fn the_vip_is_on_lo_while_a_backend_serves_and_outlives_a_killed_lbd() {
    let lab = three_zones();
    netns::ns_ip(
        lab.lb_ns(),
        &["addr", "add", &format!("{OPERATOR_ADDR}/32"), "dev", "lo"],
    );
    let config = format!(
        "{}announce:\n  vip_ranges: [10.0.0.0/24]\n  hold_up: {}ms\n",
        LabConfig::new(&lab).policy(&[&fast_health()]).yaml(),
        HOLD_UP.as_millis()
    );
    let mut lb = RunningLb::start(lab, &config);

    // Healthy backends: announced, no sooner than the hold-up after the first verdict.
    let announced = wait_line(&mut lb, 0, "announced VIP 10.0.0.100");
    let log = lb.lbd.log();
    let healthy = first_time(&log, "-> healthy").expect("a backend became healthy");
    let held = millis_between(healthy, announced);
    println!("announced {held} ms after the first backend became healthy (hold_up {HOLD_UP:?})");
    assert!(
        held >= ms(HOLD_UP) - 1,
        "announced before the hold-up: {held} ms"
    );
    assert!(vip_on_lo(&lb.lab), "{:?}", lo_addresses(&lb.lab));

    // Removed behind lbd's back: added again by the once-a-second check.
    let mark = lb.lbd.log_len();
    netns::ns_ip(
        lb.lab.lb_ns(),
        &[
            "addr",
            "del",
            &format!("{VIP}/32"),
            "dev",
            "lo",
            "label",
            "lo:lbd",
        ],
    );
    wait_line(&mut lb, mark, "announced VIP 10.0.0.100 on lo again");
    assert!(vip_on_lo(&lb.lab), "{:?}", lo_addresses(&lb.lab));

    // Every backend gone: withdrawn at the first tick after the last verdict.
    let mark = lb.lbd.log_len();
    let killed = SystemTime::now();
    for i in 0..3 {
        lb.kill_server(i);
    }
    let withdrawn = wait_line(&mut lb, mark, "withdrew VIP 10.0.0.100");
    let tail = lb.lbd.log()[mark..].to_string();
    let verdicts = lines_with(&tail, "healthy -> unhealthy");
    assert_eq!(verdicts.len(), 3, "{tail}");
    let last_verdict = verdicts.iter().map(|(t, _)| *t).max().unwrap();
    let after_verdict = millis_between(last_verdict, withdrawn);
    let after_kill = millis_between(killed, withdrawn);
    println!(
        "withdrawn {after_verdict} ms after the last backend's verdict, {after_kill} ms after \
         the kill (bound: {} ms + {} ms tick, slack {} ms)",
        ms(detection_bound()),
        ms(TICK),
        ms(SLACK)
    );
    assert!(
        (0..=ms(TICK + SLACK)).contains(&after_verdict),
        "withdrawn {after_verdict} ms after the verdict:\n{tail}"
    );
    assert!(
        after_kill <= ms(detection_bound() + TICK + SLACK),
        "withdrawn {after_kill} ms after the kill:\n{tail}"
    );
    assert!(
        tail.contains("web: 0 of 3 active backends healthy, 1 needed"),
        "{tail}"
    );
    assert!(!vip_on_lo(&lb.lab), "{:?}", lo_addresses(&lb.lab));

    // One backend back: announced again once it has served for the hold-up.
    let mark = lb.lbd.log_len();
    lb.restart_server(1);
    let announced = wait_line(&mut lb, mark, "announced VIP 10.0.0.100");
    let tail = lb.lbd.log()[mark..].to_string();
    let healthy = first_time(&tail, "-> healthy").expect("the backend became healthy");
    let held = millis_between(healthy, announced);
    println!("announced again {held} ms after the backend became healthy");
    assert!(
        (ms(HOLD_UP) - 1..=ms(HOLD_UP + TICK + SLACK)).contains(&held),
        "announced {held} ms after the verdict:\n{tail}"
    );
    assert!(vip_on_lo(&lb.lab), "{:?}", lo_addresses(&lb.lab));

    // lbd killed: the data path keeps forwarding, so the VIP stays announced.
    lb.lbd.signal(libc::SIGKILL);
    lb.lbd
        .wait_exit(Duration::from_secs(10))
        .expect("lbd exits on SIGKILL");
    assert!(vip_on_lo(&lb.lab), "{:?}", lo_addresses(&lb.lab));

    // A new lbd adopts it and keeps it while its probes decide (the backend serves).
    lb.restart_lbd();
    lb.wait_healthy(0, &[1], WAIT);
    let log = lb.lbd.log();
    assert!(
        log.contains("keeping the VIPs the previous lbd announced"),
        "{log}"
    );
    assert!(!log.contains("withdrew VIP"), "{log}");
    assert!(vip_on_lo(&lb.lab), "{:?}", lo_addresses(&lb.lab));

    // Stopped (SIGTERM): still announced. `lbd --detach`: withdrawn first.
    lb.lbd.stop();
    assert!(vip_on_lo(&lb.lab), "{:?}", lo_addresses(&lb.lab));
    let lbd = lbd_path();
    let path = lb.config_path().to_str().unwrap().to_string();
    let mut detach = lb.lab.spawn_daemon(
        lb.lab.lb_ns(),
        &lbd,
        &["--detach", "--config", path.as_str()],
    );
    let status = detach
        .wait_exit(WAIT)
        .unwrap_or_else(|| panic!("lbd --detach did not exit: {}", detach.log()));
    let out = detach.log();
    assert!(status.success(), "{out}");
    assert!(out.contains("withdrew VIPs 10.0.0.100 from lo"), "{out}");
    assert!(!vip_on_lo(&lb.lab), "{:?}", lo_addresses(&lb.lab));
    assert!(operator_addr_on_lo(&lb.lab), "{:?}", lo_addresses(&lb.lab));
}

#[test]
fn a_drained_node_announces_nothing_and_a_reload_undrains_it() {
    let lab = three_zones();
    let base = LabConfig::new(&lab).policy(&[&fast_health()]).yaml();
    let with = |drained: bool| {
        format!(
            "{base}announce:\n  vip_ranges: [10.0.0.0/24]\n  hold_up: 0s\n  drained: {drained}\n"
        )
    };
    let mut lb = RunningLb::start(lab, &with(true));
    lb.wait_healthy(0, &[0, 1, 2], WAIT);
    // Two probe intervals after every backend is healthy: still nothing announced.
    std::thread::sleep(INTERVAL * 2);
    assert!(!lb.lbd.log().contains("announced VIP"), "{}", lb.lbd.log());
    assert!(!vip_on_lo(&lb.lab), "{:?}", lo_addresses(&lb.lab));

    let mark = lb.lbd.log_len();
    lb.reload(&with(false)).expect("the reload is accepted");
    wait_line(&mut lb, mark, "announced VIP 10.0.0.100");
    assert!(vip_on_lo(&lb.lab), "{:?}", lo_addresses(&lb.lab));

    let mark = lb.lbd.log_len();
    lb.reload(&with(true)).expect("the reload is accepted");
    wait_line(&mut lb, mark, "the node is drained (announce.drained)");
    assert!(!vip_on_lo(&lb.lab), "{:?}", lo_addresses(&lb.lab));
}
