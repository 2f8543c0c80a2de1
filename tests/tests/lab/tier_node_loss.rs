//! A tier of three LB nodes behind ECMP (see `lb_tests::tier`) loses a node, whose
//! links go down, and gets it back, under load: no new connection fails and no
//! long-lived one breaks, also those that ran through the lost node (ECMP moves them to
//! a node without state for them, whose Maglev table places them on the same backend)
//! and those that ECMP moves back to the returning node. Run with the service in NAT and
//! in each DSR mode (`ipip`, `gue` across the zone subnets, `dsr_l2` on one segment).
//! Needs `bird` (Debian `bird2`).
use std::time::Duration;

use lb_tests::{
    lbd_log::millis_between,
    running_lb::{VIP, VIP_PORT},
    tier::{bird::wait_next_hops, running::VIP_PREFIX, RunningTier, TierMode},
};

const LIMIT: Duration = Duration::from_secs(30);

#[test]
fn a_node_lost_and_readded_under_load_breaks_no_connection() {
    lose_and_readd_a_node(TierMode::Nat);
}

#[test]
fn a_node_lost_and_readded_under_load_breaks_no_connection_by_ipip() {
    lose_and_readd_a_node(TierMode::Ipip);
}

#[test]
fn a_node_lost_and_readded_under_load_breaks_no_connection_by_gue() {
    lose_and_readd_a_node(TierMode::Gue);
}

#[test]
fn a_node_lost_and_readded_under_load_breaks_no_connection_by_dsr_l2() {
    lose_and_readd_a_node(TierMode::DsrL2);
}

fn lose_and_readd_a_node(mode: TierMode) {
    let tier = RunningTier::start_mode(3, mode);
    let digests = tier.table_digests();
    assert!(
        digests.windows(2).all(|w| w[0] == w[1]),
        "the nodes' tables differ before the test: {digests:?}"
    );
    let load = tier.start_load(Duration::from_secs(120));

    // Node 3 (the last next hop: hash-threshold ECMP also moves some of the other
    // nodes' flows when it goes).
    let victim = 2;
    let through_victim = load
        .figures()
        .long_lived
        .iter()
        .filter(|l| tier.lab.node_of_flow(VIP, VIP_PORT, l.sport) == Some(victim))
        .count();
    let killed = std::time::SystemTime::now();
    tier.lab.set_node_links(victim, false);
    let gone = wait_next_hops(&tier.lab.r1(), VIP_PREFIX, LIMIT, |h| h.len() == 2)
        .expect("R1 drops the lost node");
    load.wait_attempts(60, LIMIT);
    let during = load.figures();
    println!(
        "node {} lost: R1 stopped using it {} ms after its links went down; {through_victim} of {} long-lived connections ran through it",
        victim + 1,
        millis_between(killed, gone),
        during.long_lived.len()
    );
    println!("{}", during.line("after the loss"));
    during.assert_none_failed("after the loss");
    assert!(
        through_victim > 0,
        "no long-lived connection ran through node {}: the test proves nothing",
        victim + 1
    );

    let readded = std::time::SystemTime::now();
    tier.lab.set_node_links(victim, true);
    let back = wait_next_hops(&tier.lab.r1(), VIP_PREFIX, LIMIT, |h| h.len() == 3)
        .expect("R1 uses the node again");
    tier.wait_converged(LIMIT);
    load.wait_attempts(60, LIMIT);
    let figures = load.stop();
    println!(
        "node {} re-added: R1 used it again {} ms after its links came up",
        victim + 1,
        millis_between(readded, back)
    );
    println!("{}", figures.line("after the re-add"));
    figures.assert_none_failed("after the re-add");
    println!("{}", tier.spread_line());
    tier.assert_return_path(&figures);
}
