//! Under load, a fourth backend is added to the service on every node (`lbctl backend
//! add` on each node's socket, as an operator would), which moves about a quarter of the
//! Maglev ring to it. A long-lived connection whose ring slot moved keeps its backend only
//! while the node R1 sends it through holds a flow entry for it. In a tier a node sees
//! the backend's SYN-ACK of only about one handshake in N, so its service records the
//! flow on the client's ACK without that proof (`stateless_return`, see docs/tier.md);
//! otherwise most connections would hold only their SYN-cache slot, which a later SYN
//! takes. Asserted: every long-lived connection has a flow entry on its node before the
//! change, none breaks, every node ends with the same table, and no new connection
//! fails. Run in a three-node tier under the usual load, in the same after a burst of
//! short connections has taken most SYN-cache slots (a 1,024-entry flow table, so a
//! 1,024-slot SYN cache: what a busy node's cache looks like after a while), and in a
//! one-node tier. Needs `bird`.
use std::time::{Duration, Instant};

use lb_tests::{
    backend_server::BackendServer,
    client::burst,
    running_lb::{BACKEND_PORT, VIP, VIP_PORT},
    tier::{topology::CLIENT_ADDR, RunningTier},
};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(30);
/// The added backend listens on b1's machine, on this port.
const ADDED_PORT: u16 = BACKEND_PORT + 1;
/// The churn variant's flow table, hence SYN cache (the smallest lbd takes).
const SMALL_TABLE: &str = "limits: { flow_table_size: 1024 }\n";
/// Short connections of the churn: about four SYNs per SYN-cache set of two slots.
const CHURN: usize = 2000;

/// A long-lived connection as its node saw it before the change.
struct Before {
    sport: u16,
    /// How its node forwards its next packet: `flow_entry`, `syn_cache` or `table`.
    by: String,
    ring: String,
}

/// `lbctl explain` for the client's tuple from `sport`, on node `i`.
fn explain(tier: &RunningTier, i: usize, sport: u16) -> Value {
    tier.lbctl(i).json(&[
        "explain",
        &format!("{CLIENT_ADDR}:{sport}"),
        &format!("{VIP}:{VIP_PORT}"),
    ])
}

fn ring_backend(v: &Value) -> String {
    v["table"]["ring_backend"]["address"]
        .as_str()
        .unwrap_or_else(|| panic!("no ring backend: {v:#}"))
        .to_string()
}

/// Adds a backend under load to a tier of `nodes` nodes (after `churn` short
/// connections, on a small flow table, if any); prints and checks as the module says.
fn add_a_backend_under_load(nodes: usize, churn: Option<usize>) {
    let mut tier = match churn {
        Some(_) => RunningTier::start_with(nodes, SMALL_TABLE),
        None => RunningTier::start(nodes),
    };
    let added = format!("{}:{ADDED_PORT}", tier.lab.backend_addr(0));
    tier.servers.push(BackendServer::start(
        &tier.lab.backend_ns(0),
        tier.lab.backend_addr(0),
        ADDED_PORT,
        "b4",
    ));
    let load = tier.start_load(Duration::from_secs(150));
    let label = match churn {
        Some(n) => {
            let b = burst(
                &tier.lab.client(),
                VIP,
                VIP_PORT,
                n,
                Duration::from_secs(4),
                Duration::from_secs(120),
            );
            assert!(
                b.failed.is_empty(),
                "the churn's connections failed: {:?}",
                &b.failed[..b.failed.len().min(5)]
            );
            format!("{nodes} nodes, after {n} short connections on a 1,024-slot SYN cache")
        }
        None if nodes == 1 => "one node, usual load".to_string(),
        None => format!("{nodes} nodes, usual load"),
    };
    let sessions = tier.node_sessions();
    let digests = tier.table_digests();
    assert!(
        digests.iter().all(|d| *d == digests[0]),
        "the nodes' tables differ before the change: {digests:x?}"
    );
    let before: Vec<Before> = load
        .figures()
        .long_lived
        .iter()
        .map(|l| {
            let node = tier
                .lab
                .node_of_flow(VIP, VIP_PORT, l.sport)
                .expect("R1 routes the VIP");
            let v = explain(&tier, node, l.sport);
            Before {
                sport: l.sport,
                by: v["existing_connection"]["by"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                ring: ring_backend(&v),
            }
        })
        .collect();

    for i in 0..nodes {
        tier.lbctl(i)
            .ok(&["backend", "add", "web", &added, "--zone", "az-a"]);
    }
    // Every node has the new table once its probes saw the backend healthy.
    let deadline = Instant::now() + LIMIT;
    loop {
        let now = tier.table_digests();
        if now.iter().all(|d| *d == now[0] && *d != digests[0]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the nodes did not all take the new backend: digests {now:x?} (before {:x})",
            digests[0]
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Two seconds of echoes on the new tables.
    load.wait_attempts(40, LIMIT);
    let figures = load.stop();

    let moved: Vec<&Before> = before
        .iter()
        .filter(|b| ring_backend(&explain(&tier, 0, b.sport)) != b.ring)
        .collect();
    let count = |list: &[&Before], by: &str| list.iter().filter(|b| b.by == by).count();
    let all: Vec<&Before> = before.iter().collect();
    let broken: Vec<u16> = figures.broken().iter().map(|l| l.sport).collect();
    println!(
        "{label}: backend {added} added on every node; of {} long-lived connections {} had a flow entry on their node, {} a SYN-cache slot, {} neither; {} had their ring slot moved ({} of them with a flow entry, {} a SYN-cache slot, {} neither); broken: {}",
        all.len(),
        count(&all, "flow_entry"),
        count(&all, "syn_cache"),
        count(&all, "table"),
        moved.len(),
        count(&moved, "flow_entry"),
        count(&moved, "syn_cache"),
        count(&moved, "table"),
        broken.len(),
    );
    println!("{}", figures.line("load"));
    println!("{}", tier.spread_line());
    assert_eq!(
        count(&all, "flow_entry"),
        all.len(),
        "every long-lived connection has a flow entry on its node"
    );
    let sessions_after = tier.node_sessions();
    assert_eq!(
        broken,
        Vec::<u16>::new(),
        "long-lived connections broke; R1's sessions to the nodes before the change {sessions:?}, after {sessions_after:?} (a later time is a session that went down meanwhile and moved flows between nodes)"
    );
    assert!(
        figures.failed.is_empty(),
        "new connections failed: {:?}",
        &figures.failed[..figures.failed.len().min(5)]
    );
}

#[test]
fn a_backend_added_to_a_three_node_tier_breaks_no_connection() {
    add_a_backend_under_load(3, None);
}

#[test]
fn a_backend_added_after_syn_cache_churn_breaks_no_connection() {
    add_a_backend_under_load(3, Some(CHURN));
}

#[test]
fn a_backend_added_to_a_one_node_tier_breaks_no_connection() {
    add_a_backend_under_load(1, None);
}
