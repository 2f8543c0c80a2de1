//! `lb-lab --nodes N [--story]`: the tier lab (see `lb_tests::tier`): clients -> R1 ->
//! N LB nodes (each `lbd` + BIRD) -> R2 -> one backend per zone, R1 and R2 routing
//! through the nodes by ECMP. Without `--story`: a burst of connections and where they
//! went. With it: under load, a node is lost and comes back, and a node is drained,
//! upgraded and undrained, with the routers' routes and the load's figures at each step.
use std::{
    collections::BTreeMap,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant, SystemTime},
};

use lb_tests::{
    burst,
    lbd_log::millis_between,
    netns,
    running_lb::{VIP, VIP_PORT},
    tier::{
        bird::wait_next_hops, running::VIP_PREFIX, topology::CLIENT_NET, RunningTier, TierLoad,
    },
};

const WAIT: Duration = Duration::from_secs(30);
/// Longest the lab stays up with `--keep` (every loop ends by itself).
const KEEP_LIMIT: Duration = Duration::from_secs(3600);

pub fn run(
    nodes: usize,
    story: bool,
    keep: bool,
    connections: usize,
    stop: &AtomicBool,
) -> Result<(), String> {
    say(&format!(
        "building the tier: client, router R1, {nodes} LB nodes (lbd + BIRD each), router R2, backends b1..b3 in zones az-a..az-c"
    ));
    let mut tier = RunningTier::start(nodes);
    say("BGP and BFD sessions are up; every node announces the VIP");
    routes(&tier);
    if story {
        tell_story(&mut tier, stop)?;
    } else {
        spread(&tier, connections)?;
    }
    if keep {
        say(&format!(
            "kept running (Ctrl-C tears it down). Try:\n  nsenter --net=/run/netns/{} curl -s http://{VIP}/\n  ip -n {} route\n  nsenter --net=/run/netns/{} birdc -s {} show protocols",
            tier.lab.client(),
            tier.lab.r1(),
            tier.lab.r1(),
            lb_tests::tier::running::run_dir(&tier.lab).join("r1.ctl").display()
        ));
        let started = Instant::now();
        while !stop.load(Ordering::SeqCst) && started.elapsed() < KEEP_LIMIT {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    drop(tier);
    say("torn down");
    Ok(())
}

/// A burst of connections; how they spread over nodes (R1's FIB) and backends.
fn spread(tier: &RunningTier, connections: usize) -> Result<(), String> {
    let result = burst(
        &tier.lab.client(),
        VIP,
        VIP_PORT,
        connections,
        Duration::from_secs(3),
        Duration::from_secs(120),
    );
    let mut per: BTreeMap<(String, String), usize> = BTreeMap::new();
    for r in &result.replies {
        let node = tier
            .lab
            .node_of_flow(VIP, VIP_PORT, r.local.port())
            .map(|i| format!("n{}", i + 1))
            .unwrap_or_else(|| "?".into());
        *per.entry((node, r.backend.clone())).or_default() += 1;
    }
    println!("\n{:<6} {:<8} {:>6}", "NODE", "BACKEND", "CONNS");
    for ((node, backend), n) in &per {
        println!("{node:<6} {backend:<8} {n:>6}");
    }
    println!("\n{} ok, {} failed", result.ok, result.failed.len());
    for f in result.failed.iter().take(5) {
        println!("  failed: {f}");
    }
    say(&tier.spread_line());
    if result.failed.is_empty() {
        Ok(())
    } else {
        Err(format!("{} connections failed", result.failed.len()))
    }
}

fn tell_story(tier: &mut RunningTier, stop: &AtomicBool) -> Result<(), String> {
    let nodes = tier.nodes.len();
    say("load: 20 new connections a second, and 30 long-lived ones echoing every 100 ms");
    let load = TierLoad::start(
        &tier.lab.client(),
        VIP,
        VIP_PORT,
        30,
        20,
        Duration::from_secs(600),
    );
    pause(2, stop);
    say(&load.figures().line("so far"));

    let victim = nodes - 1;
    chapter(1, &format!("node n{} dies (its links go down)", victim + 1));
    let at = SystemTime::now();
    tier.lab.set_node_links(victim, false);
    let gone = wait_next_hops(&tier.lab.r1(), VIP_PREFIX, WAIT, |h| h.len() == nodes - 1)
        .ok_or("R1 kept the dead node")?;
    say(&format!(
        "R1 stopped using it after {} ms",
        millis_between(at, gone)
    ));
    routes(tier);
    pause(3, stop);
    say(&load.figures().line("so far"));

    chapter(2, &format!("node n{} comes back", victim + 1));
    let at = SystemTime::now();
    tier.lab.set_node_links(victim, true);
    let back = wait_next_hops(&tier.lab.r1(), VIP_PREFIX, WAIT, |h| h.len() == nodes)
        .ok_or("R1 did not take the node back")?;
    say(&format!(
        "R1 uses it again after {} ms (BGP session re-established); ECMP moves flows to it that it has no state for",
        millis_between(at, back)
    ));
    tier.wait_converged(WAIT);
    pause(3, stop);
    say(&load.figures().line("so far"));

    chapter(
        3,
        "node n1 is drained (lbctl node drain), its lbd upgraded, then undrained",
    );
    let before = tier.new_flows(0);
    let drained = tier.drain(0);
    say(&format!("$ lbctl node drain: {}", drained.line()));
    wait_next_hops(&tier.lab.r1(), VIP_PREFIX, WAIT, |h| h.len() == nodes - 1)
        .ok_or("R1 kept the drained node")?;
    say(&format!(
        "R1 no longer uses n1; n1 recorded {} new flows since the drain request (the drain waited until none came for a second)",
        tier.new_flows(0) - before
    ));
    routes(tier);
    let binary = tier.new_binary("lbd-next");
    say(&format!(
        "upgrade: SIGTERM to n1's lbd, then {} (lbd under another name: the procedure, not a new version) adopts the pinned data path",
        binary.display()
    ));
    let at = SystemTime::now();
    drop(tier.upgrade_lbd(0, &binary));
    let served = SystemTime::now();
    let status = tier.node_status(0);
    say(&format!(
        "the new lbd served {} ms later; still drained after the restart: {} (since {})",
        millis_between(at, served),
        status["drained"],
        status["drained_since"]
    ));
    say(&load.figures().line("so far"));
    let flows = tier.new_flows(0);
    let at = SystemTime::now();
    tier.undrain(0);
    let back = wait_next_hops(&tier.lab.r1(), VIP_PREFIX, WAIT, |h| h.len() == nodes)
        .ok_or("R1 did not take n1 back")?;
    let flowing = tier
        .wait_new_flows(0, flows, WAIT)
        .ok_or("n1 took no new flow after the undrain")?;
    tier.wait_converged(WAIT);
    say(&format!(
        "$ lbctl node undrain: announced again; R1 used n1 after {} ms, its first new flow after {} ms",
        millis_between(at, back),
        millis_between(at, flowing)
    ));

    chapter(4, "the figures");
    pause(2, stop);
    let compared = tier.compare();
    print!("\n$ lbctl service compare NODE...\n{}", compared.stdout);
    let figures = load.stop();
    say(&figures.line("whole story"));
    say(&tier.spread_line());
    for l in figures.broken().iter().take(5) {
        say(&format!("broken: {:?}", l.broken));
    }
    for f in figures.failed.iter().take(5) {
        say(&format!("failed: {f}"));
    }
    if figures.failed.is_empty() && figures.broken().is_empty() {
        Ok(())
    } else {
        Err("connections failed or broke".into())
    }
}

fn routes(tier: &RunningTier) {
    for (name, ns, prefix) in [
        ("R1", tier.lab.r1(), "10.0.0.0/24"),
        ("R2", tier.lab.r2(), CLIENT_NET),
    ] {
        println!("\n{name}$ ip route show root {prefix}");
        print!(
            "{}",
            netns::try_ns_ip(&ns, &["route", "show", "root", prefix]).unwrap_or_else(|e| e)
        );
    }
}

fn say(line: &str) {
    println!("lab: {line}");
}

fn chapter(n: u32, title: &str) {
    println!("\n=== {n}. {title} ===");
}

fn pause(secs: u64, stop: &AtomicBool) {
    for _ in 0..secs * 10 {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
