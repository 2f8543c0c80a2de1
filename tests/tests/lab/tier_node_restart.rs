//! One node of a three-node tier has its `lbd` SIGKILLed and restarted (the pinned
//! data path keeps forwarding, the VIP stays on `lo`, so the routers notice nothing),
//! then its BIRD restarted (the routers drop the node when its sessions close and take
//! it back when they are up again, ECMP moving flows away and back), under load: no new
//! connection fails and no long-lived one breaks. Needs `bird`.
use std::time::{Duration, SystemTime};

use lb_tests::{
    lbd_log::millis_between,
    netns,
    running_lb::VIP,
    tier::{
        bird::{next_hops, wait_next_hops},
        running::VIP_PREFIX,
        RunningTier,
    },
};

const LIMIT: Duration = Duration::from_secs(30);

#[test]
fn lbd_killed_and_bird_restarted_on_a_node_fail_no_connection() {
    let mut tier = RunningTier::start(3);
    let load = tier.start_load(Duration::from_secs(150));
    let node = 0;

    let killed = SystemTime::now();
    let old = tier.kill_and_restart_lbd(node);
    drop(old);
    let serving = SystemTime::now();
    let hops = next_hops(&tier.lab.r1(), VIP_PREFIX);
    println!(
        "node {}: lbd SIGKILLed, a new one served {} ms later; R1's next hops meanwhile: {hops:?}",
        node + 1,
        millis_between(killed, serving)
    );
    // The announcement outlived lbd: the VIP stayed on lo and the new lbd kept it.
    let lo = netns::ns_ip(
        &tier.lab.node_ns(node),
        &["-4", "addr", "show", "dev", "lo"],
    );
    assert!(
        lo.contains(&format!("{VIP}/32")),
        "the VIP left lo while lbd restarted:\n{lo}"
    );
    let log = tier.nodes[node].lbd.log();
    assert!(
        !log.contains("withdrew VIP"),
        "the new lbd withdrew the VIP:\n{log}"
    );
    load.wait_attempts(40, LIMIT);
    let after_lbd = load.figures();
    println!("{}", after_lbd.line("after the lbd restart"));
    after_lbd.assert_none_failed("after the lbd restart");

    let stopping = tier.nodes[node].bird.restart();
    let gone = wait_next_hops(&tier.lab.r1(), VIP_PREFIX, LIMIT, |h| h.len() == 2)
        .expect("R1 drops the node while its BIRD is down");
    let back = wait_next_hops(&tier.lab.r1(), VIP_PREFIX, LIMIT, |h| h.len() == 3)
        .expect("R1 takes the node back");
    tier.wait_converged(LIMIT);
    println!(
        "node {}: BIRD restarted; R1 dropped the node {} ms after the stop began (its sessions closed) and used it again {} ms after",
        node + 1,
        millis_between(stopping, gone),
        millis_between(stopping, back)
    );
    load.wait_attempts(60, LIMIT);
    let figures = load.stop();
    println!("{}", figures.line("after the BIRD restart"));
    println!("{}", tier.spread_line());
    figures.assert_none_failed("after the BIRD restart");
}
