//! A node of a three-node tier hangs silently (nftables on both routers drop everything
//! to and from it; its links stay up), under load: BFD (100 ms x 3) withdraws it from
//! both routers, no new connection fails and no long-lived one breaks; then it comes
//! back and ECMP moves flows to it that it has no state for, still breaking none. The
//! detection and convergence times are printed from the routers' view (their FIB
//! polled every 2 ms); the only bound asserted is the wait's. Needs `bird`.
use std::time::{Duration, SystemTime};

use lb_tests::{
    lbd_log::millis_between,
    running_lb::{VIP, VIP_PORT},
    tier::{bird::wait_next_hops, running::VIP_PREFIX, topology::CLIENT_NET, RunningTier},
};

const LIMIT: Duration = Duration::from_secs(30);

#[test]
fn a_hung_node_is_withdrawn_by_bfd_and_readded_breaking_no_connection() {
    let tier = RunningTier::start(3);
    let load = tier.start_load(Duration::from_secs(120));

    let victim = 1;
    let through_victim = load
        .figures()
        .long_lived
        .iter()
        .filter(|l| tier.lab.node_of_flow(VIP, VIP_PORT, l.sport) == Some(victim))
        .count();
    let hung = SystemTime::now();
    tier.lab.hang_node(victim);
    let r1_gone = wait_next_hops(&tier.lab.r1(), VIP_PREFIX, LIMIT, |h| h.len() == 2)
        .expect("R1 withdraws the hung node");
    // BFD took the session down, not the 3 s hold timer.
    let why = tier
        .r1
        .birdc(&["show", "protocols", "all", &format!("lb{}", victim + 1)])
        .unwrap_or_else(|e| e);
    let r2_gone = wait_next_hops(&tier.lab.r2(), CLIENT_NET, LIMIT, |h| h.len() == 2)
        .expect("R2 withdraws the hung node");
    println!(
        "node {} hung: R1 withdrew it {} ms later, R2 {} ms later (BFD 100 ms x 3); {through_victim} of 30 long-lived connections ran through it",
        victim + 1,
        millis_between(hung, r1_gone),
        millis_between(hung, r2_gone),
    );
    assert!(
        why.contains("BFD session down"),
        "R1's BIRD does not say BFD took the session down:\n{why}"
    );
    load.wait_attempts(60, LIMIT);
    let during = load.figures();
    println!("{}", during.line("after the hang"));
    during.assert_none_failed("after the hang");
    assert!(
        through_victim > 0,
        "no long-lived connection ran through node {}: the test proves nothing",
        victim + 1
    );

    let resumed = SystemTime::now();
    tier.lab.unhang_node(victim);
    let r1_back = wait_next_hops(&tier.lab.r1(), VIP_PREFIX, LIMIT, |h| h.len() == 3)
        .expect("R1 takes the node back");
    let r2_back = wait_next_hops(&tier.lab.r2(), CLIENT_NET, LIMIT, |h| h.len() == 3)
        .expect("R2 takes the node back");
    println!(
        "node {} answering again: R1 used it {} ms later, R2 {} ms later",
        victim + 1,
        millis_between(resumed, r1_back),
        millis_between(resumed, r2_back),
    );
    load.wait_attempts(60, LIMIT);
    let figures = load.stop();
    println!("{}", figures.line("after the re-add"));
    println!("{}", tier.spread_line());
    figures.assert_none_failed("after the re-add");
}
