//! An upgrade of a three-node tier under load, one node at a time, as an operator does
//! it: `lbctl node drain` (the VIP withdrawn from `lo` and from the node's BIRD, then
//! no new flows), `lbd` stopped with SIGTERM and started from another binary (a copy of
//! the built `lbd` at another path: the procedure, not a version change; the pinned data
//! path forwards meanwhile and the new lbd swaps its program onto the pinned links),
//! the drain still in force after the restart (`lbctl node status`), then `lbctl node
//! undrain`. First one node, with its figures printed; then all three in turn. No new
//! connection fails and no long-lived one breaks. Run with the service in NAT and in
//! each DSR mode (`ipip`, `gue`, `dsr_l2`; see `lb_tests::tier::mode`). Needs `bird`.
use std::{path::Path, time::Duration};

use lb_tests::{
    lbd_log::millis_between,
    tier::{bird::wait_next_hops, running::VIP_PREFIX, RunningTier, TierMode},
};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(30);
/// Packets the data path passed to the kernel because its egress devmap had no entry
/// for their NIC: already rewritten for the next hop, so the kernel drops them.
const EGRESS_MISSING: &str =
    "lb_datapath_packets_total{action=\"pass\",reason=\"pass_egress_not_attached\"}";

/// Node `i`'s count of [`EGRESS_MISSING`] (pinned: it survives restarts).
fn egress_missing(tier: &RunningTier, i: usize) -> u64 {
    tier.per_node(EGRESS_MISSING)[i]
}

/// Drains node `i`, upgrades its lbd to `binary` and undrains it; prints what each step
/// took.
fn drain_upgrade_undrain(tier: &mut RunningTier, i: usize, binary: &Path) {
    let hop = tier.lab.node_up_addr(i).to_string();
    let drained = tier.drain(i);
    println!("node {}: lbctl node drain: {}", i + 1, drained.line());
    // lbctl saw the withdrawal in the node's BIRD, then a second without new flows: by
    // then R1 no longer routes the VIP through the node.
    assert!(
        !tier.vip_nodes().contains(&i),
        "R1 still routes the VIP through drained node {}: {:?}",
        i + 1,
        tier.vip_nodes()
    );
    let since = drained.report["node"]["drained_since"].clone();
    assert!(since.is_u64(), "{:#}", drained.report);

    let missing = egress_missing(tier, i);
    drop(tier.upgrade_lbd(i, binary));
    let lost = egress_missing(tier, i) - missing;
    // The new lbd's reply path takes over only once its egress map is filled.
    assert_eq!(lost, 0, "node {}: packets lost in the restart", i + 1);
    // The drain is in the state file: the new lbd keeps the node out.
    let status = tier.node_status(i);
    assert_eq!(status["drained"], true, "{status:#}");
    assert_eq!(status["drained_since"], since, "{status:#}");
    let vip = &status["vips"][0];
    assert_eq!(
        (&vip["announced"], &vip["on_lo"], &vip["in_bird"]),
        (
            &Value::Bool(false),
            &Value::Bool(false),
            &Value::Bool(false)
        ),
        "{status:#}"
    );
    assert!(!tier.vip_nodes().contains(&i), "R1 uses node {}", i + 1);

    let flows = tier.new_flows(i);
    let undrained = std::time::SystemTime::now();
    tier.undrain(i);
    let routed = wait_next_hops(&tier.lab.r1(), VIP_PREFIX, LIMIT, |h| h.contains(&hop))
        .unwrap_or_else(|| panic!("R1 did not take node {} back", i + 1));
    let flowing = tier
        .wait_new_flows(i, flows, LIMIT)
        .unwrap_or_else(|| panic!("node {} took no new flow after the undrain", i + 1));
    tier.wait_converged(LIMIT);
    println!(
        "node {}: upgraded to {} (packets lost to an empty egress map meanwhile: {lost}), still drained after the restart (since {since}); undrained: R1 used it again after {} ms, its first new flow after {} ms",
        i + 1,
        binary.display(),
        millis_between(undrained, routed),
        millis_between(undrained, flowing),
    );
}

#[test]
fn drain_upgrade_undrain_one_node_then_every_node_in_turn_fails_no_connection() {
    drain_upgrade_undrain_every_node(TierMode::Nat);
}

#[test]
fn drain_upgrade_undrain_one_node_then_every_node_in_turn_fails_no_connection_by_ipip() {
    drain_upgrade_undrain_every_node(TierMode::Ipip);
}

#[test]
fn drain_upgrade_undrain_one_node_then_every_node_in_turn_fails_no_connection_by_gue() {
    drain_upgrade_undrain_every_node(TierMode::Gue);
}

#[test]
fn drain_upgrade_undrain_one_node_then_every_node_in_turn_fails_no_connection_by_dsr_l2() {
    drain_upgrade_undrain_every_node(TierMode::DsrL2);
}

fn drain_upgrade_undrain_every_node(mode: TierMode) {
    let mut tier = RunningTier::start_mode(3, mode);
    let load = tier.start_load(Duration::from_secs(150));

    let next = tier.new_binary("lbd-next");
    drain_upgrade_undrain(&mut tier, 0, &next);
    load.wait_attempts(20, LIMIT);
    let one = load.figures();
    println!("{}", one.line("one node drained, upgraded, undrained"));
    one.assert_none_failed("one node drained, upgraded, undrained");

    let after = tier.new_binary("lbd-after");
    for i in 0..tier.nodes.len() {
        drain_upgrade_undrain(&mut tier, i, &after);
        println!(
            "{}",
            load.figures()
                .line(&format!("rolling upgrade, up to node {}", i + 1))
        );
    }
    load.wait_attempts(20, LIMIT);
    let figures = load.stop();
    println!("{}", figures.line("whole test, with the rolling upgrade"));
    println!("{}", tier.spread_line());
    figures.assert_none_failed("rolling upgrade");
    tier.assert_return_path(&figures);
}
