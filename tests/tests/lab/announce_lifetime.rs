//! A dead lbd stops attracting flows within `announce.lifetime`: lbd gives each VIP /32
//! a kernel lifetime and renews it every second, so after a SIGKILL the kernel removes
//! the address itself; a new lbd started within the lifetime adopts and renews it, and
//! the VIP stays. The time from the kill to the /32 leaving `lo` is printed.
use std::time::{Duration, Instant};

use lb_tests::{netns, scenario::*, Lab, LabConfig, RunningLb, VIP};

const WAIT: Duration = Duration::from_secs(30);
const LIFETIME: Duration = Duration::from_secs(3);
/// The kernel's lifetime worker runs late by up to a fraction of a second, and the
/// test's own polling adds to it.
const SLACK: Duration = Duration::from_secs(1);

/// Whether the VIP's /32 with lbd's label is on `lo` in the LB namespace.
fn vip_on_lo(lab: &Lab) -> bool {
    let out = netns::ns_ip(lab.lb_ns(), &["-j", "-4", "addr", "show", "dev", "lo"]);
    let links: serde_json::Value = serde_json::from_str(&out).expect("ip -j prints JSON");
    links.as_array().into_iter().flatten().any(|link| {
        link["addr_info"].as_array().into_iter().flatten().any(|a| {
            a["local"].as_str() == Some(&VIP.to_string()) && a["label"].as_str() == Some("lo:lbd")
        })
    })
}

#[test]
fn a_killed_lbd_loses_its_vip_within_the_lifetime_and_a_restarted_one_keeps_it() {
    let lab = three_zones();
    let config = format!(
        "{}announce:\n  vip_ranges: [10.0.0.0/24]\n  hold_up: 0s\n  lifetime: {}s\n",
        LabConfig::new(&lab).policy(&[&fast_health()]).yaml(),
        LIFETIME.as_secs()
    );
    let mut lb = RunningLb::start(lab, &config);
    lb.lbd
        .wait_for_log_after(0, "announced VIP 10.0.0.100", WAIT)
        .expect("lbd announces the VIP");

    // Killed and restarted at once: the new lbd adopts the /32 and renews it, so it is
    // still there well past the lifetime.
    lb.lbd.signal(libc::SIGKILL);
    lb.lbd
        .wait_exit(Duration::from_secs(10))
        .expect("lbd exits on SIGKILL");
    lb.restart_lbd();
    lb.wait_healthy(0, &[0], WAIT);
    std::thread::sleep(LIFETIME * 2);
    assert!(
        vip_on_lo(&lb.lab),
        "the restarted lbd lost the VIP:\n{}",
        lb.lbd.log()
    );

    // Killed for good: the kernel removes the /32 when its lifetime lapses.
    lb.lbd.signal(libc::SIGKILL);
    let killed = Instant::now();
    lb.lbd
        .wait_exit(Duration::from_secs(10))
        .expect("lbd exits on SIGKILL");
    assert!(vip_on_lo(&lb.lab), "removed at once, not by its lifetime");
    while vip_on_lo(&lb.lab) {
        assert!(
            killed.elapsed() < LIFETIME + SLACK,
            "the VIP is still on lo {:?} after lbd was killed (lifetime {LIFETIME:?})",
            killed.elapsed()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let gone = killed.elapsed();
    println!(
        "the VIP left lo {} ms after lbd was killed (lifetime {} ms, renewed every second)",
        gone.as_millis(),
        LIFETIME.as_millis()
    );
    // Renewed every second, so at the kill at least the lifetime less a second (and the
    // loop's lateness) was left.
    assert!(
        gone >= LIFETIME - Duration::from_millis(1500),
        "gone after {gone:?}: sooner than the lifetime allows"
    );
}
