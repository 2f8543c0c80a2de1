//! One node of a three-node tier sees backend b1 fail while the others see it healthy
//! (nftables in that node drop its own probes to b1), under load. The nodes' tables then
//! differ, which every node's `/metrics` shows: the table digests differ for longer
//! than the tier alert's `for:` (the expression of `LbdTableDigestsDiffer` in
//! deploy/prometheus/lbd-tier.rules.yml, `max != min` by service, holds at two samples
//! 4 s apart; with `promtool` installed the shipped rule fires on those samples), and
//! are equal again once the node sees b1 healthy; `lbctl service compare` over the
//! nodes exits 3, then 0. What it costs is printed:
//! new connections through that node avoid b1, long-lived connections on b1 that reach
//! it without a flow entry there (their replies went through another node, or ECMP moved
//! them when a node was lost) break. Which break is checked: only connections on b1 that
//! R1 routes through the node with the other view. Needs `bird`.
use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use lb_tests::{
    running_lb::{VIP, VIP_PORT},
    tier::{
        alert::{check_rule, have_promtool},
        bird::wait_next_hops,
        running::{run_dir, VIP_PREFIX},
        Figures, RunningTier,
    },
};

const LIMIT: Duration = Duration::from_secs(30);
/// The rule's `for: 4s`: the digests must differ at two evaluations this far apart.
const ALERT_FOR: Duration = Duration::from_secs(4);

/// The alert's expression: `max by (service) != min by (service)` over the nodes.
fn digests_differ(digests: &[u64]) -> bool {
    digests.iter().max() != digests.iter().min()
}

/// Long-lived connections (by source port) that `node` would see, per R1's FIB.
fn via_node(tier: &RunningTier, figures: &Figures, node: usize) -> Vec<u16> {
    figures
        .long_lived
        .iter()
        .filter(|l| tier.lab.node_of_flow(VIP, VIP_PORT, l.sport) == Some(node))
        .map(|l| l.sport)
        .collect()
}

#[test]
fn a_backend_unhealthy_on_one_node_only_makes_the_digests_differ() {
    let tier = RunningTier::start(3);
    assert!(
        !digests_differ(&tier.table_digests()),
        "the nodes' tables differ before the test: {:?}",
        tier.table_digests()
    );
    let load = tier.start_load(Duration::from_secs(150));
    let (odd, b1) = (0, 0);

    let mark = tier.nodes[odd].lbd.log_len();
    tier.lab.cut_probes(odd, b1);
    tier.wait_backend_state(odd, mark, b1, "unhealthy", LIMIT);
    // The table digest changes with the table: from here on the node places flows
    // without b1.
    let deadline = Instant::now() + LIMIT;
    while !digests_differ(&tier.table_digests()) {
        assert!(
            Instant::now() < deadline,
            "the digests stayed equal: {:?}",
            tier.table_digests()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let first = tier.table_digests();
    let split_from = load.figures().answered.len();
    let before = load.figures();
    std::thread::sleep(ALERT_FOR);
    let second = tier.table_digests();
    println!("table digests per node: {first:x?}, {ALERT_FOR:?} later {second:x?}");
    for d in [&first, &second] {
        assert!(digests_differ(d), "the alert's expression is false: {d:?}");
        assert_eq!(d[1], d[2], "the nodes that agree have equal digests");
        assert_ne!(d[odd], d[1], "the odd node's digest differs");
    }
    let compared = tier.compare();
    print!("$ lbctl service compare n1 n2 n3\n{}", compared.stdout);
    assert_eq!(
        compared.code,
        Some(3),
        "lbctl service compare: {compared:?}"
    );
    let promtool = have_promtool();
    if promtool {
        check_rule(&run_dir(&tier.lab), &[first.clone(), second.clone()], true)
            .unwrap_or_else(|e| panic!("the alert does not fire on these digests: {e}"));
        println!("promtool: LbdTableDigestsDiffer fires on these digests at the second evaluation");
    } else {
        println!("promtool is not installed: checked the alert's expression only");
    }

    // New connections since the split, by the node R1 sent them through.
    load.wait_attempts(40, LIMIT);
    let split = load.figures();
    let mut per: BTreeMap<(usize, String), usize> = BTreeMap::new();
    for c in &split.answered[split_from..] {
        let node = tier
            .lab
            .node_of_flow(VIP, VIP_PORT, c.sport)
            .expect("R1 routes the VIP");
        *per.entry((node + 1, c.backend.clone())).or_default() += 1;
    }
    println!("new connections during the split, (node, backend) -> count: {per:?}");
    let on_b1_via_odd = per.get(&(odd + 1, "b1".to_string())).copied().unwrap_or(0);
    assert_eq!(
        on_b1_via_odd,
        0,
        "node {} sent new connections to b1 after its table dropped it",
        odd + 1
    );
    let at_risk = |f: &Figures| -> Vec<u16> {
        let via = via_node(&tier, f, odd);
        f.long_lived
            .iter()
            .filter(|l| l.backend == "b1" && via.contains(&l.sport))
            .map(|l| l.sport)
            .collect()
    };
    let mut exposed = at_risk(&before);
    let broken_split: Vec<u16> = split.broken().iter().map(|l| l.sport).collect();
    println!(
        "during the split: {} long-lived connections on b1 routed through node {}, {} broke; {}",
        exposed.len(),
        odd + 1,
        broken_split.len(),
        split.line("load")
    );

    // A node is lost: ECMP moves flows, some onto the odd node.
    let lost = 2;
    let paths_before: Vec<Option<usize>> = split
        .long_lived
        .iter()
        .map(|l| tier.lab.node_of_flow(VIP, VIP_PORT, l.sport))
        .collect();
    tier.lab.set_node_links(lost, false);
    wait_next_hops(&tier.lab.r1(), VIP_PREFIX, LIMIT, |h| h.len() == 2)
        .expect("R1 drops the lost node");
    load.wait_attempts(40, LIMIT);
    let figures = load.stop();
    let moved = figures
        .long_lived
        .iter()
        .zip(&paths_before)
        .filter(|(l, was)| **was != tier.lab.node_of_flow(VIP, VIP_PORT, l.sport))
        .count();
    exposed.extend(at_risk(&figures));
    let broken: Vec<u16> = figures.broken().iter().map(|l| l.sport).collect();
    println!(
        "node {} lost during the split: {moved} long-lived connections moved to another node; {} broke in all; {}",
        lost + 1,
        broken.len(),
        figures.line("load")
    );
    for sport in &broken {
        assert!(
            exposed.contains(sport),
            "the connection from port {sport} broke, but it was not on b1 through node {}: {:?}",
            odd + 1,
            figures.long_lived.iter().find(|l| l.sport == *sport)
        );
    }
    assert!(
        figures.failed.is_empty(),
        "new connections failed: {:?}",
        &figures.failed[..figures.failed.len().min(5)]
    );

    // The node sees b1 healthy again: the digests agree again.
    let mark = tier.nodes[odd].lbd.log_len();
    tier.lab.restore_probes(odd);
    tier.wait_backend_state(odd, mark, b1, "healthy", LIMIT);
    let deadline = Instant::now() + LIMIT;
    while digests_differ(&tier.table_digests()) {
        assert!(
            Instant::now() < deadline,
            "the digests still differ after b1 recovered: {:?}",
            tier.table_digests()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let compared = tier.compare();
    assert_eq!(
        compared.code,
        Some(0),
        "lbctl service compare: {compared:?}"
    );
    if promtool {
        let agreed = tier.table_digests();
        check_rule(&run_dir(&tier.lab), &[agreed.clone(), agreed], false)
            .unwrap_or_else(|e| panic!("the alert fires on equal digests: {e}"));
    }
}
