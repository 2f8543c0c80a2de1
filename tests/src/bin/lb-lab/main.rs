//! `cargo xtask lab`: the embedded default. Builds a dual-stack namespace lab (client,
//! LB, switch, three backends in zones az-a/az-b/az-c), starts `lbd` on it with a TCP and
//! a UDP service on an IPv4 and on an IPv6 VIP, sends a bounded burst of real
//! connections through each TCP VIP and datagrams from UDP clients through each UDP VIP,
//! prints where they went, and tears it all down (`--keep` leaves it running until
//! Ctrl-C and prints how to reach it). Any failed connection or unanswered datagram
//! fails the run.
//!
//! `--story` runs the demonstration instead (see `story.rs`): six backends over three
//! zones, background traffic, and an operator story told with `lbctl`.
//!
//! `--nodes N` runs the tier lab instead (see `tier.rs`): N LB nodes behind ECMP routers,
//! with its own story under `--story`.
mod story;
mod tier;
mod traffic;
mod udp_check;

use std::{
    net::SocketAddr,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use lb_tests::{
    burst, udp_echo::UdpEcho, vip, BackendSpec, Family, Lab, LabConfig, LabSpec, RunningLb,
    BACKEND_PORT, VIP_PORT,
};

/// The port of the lab's UDP services (a DNS-like service beside the web one).
const UDP_PORT: u16 = 53;

struct Args {
    keep: bool,
    story: bool,
    nodes: Option<usize>,
    one_nic: bool,
    connections: usize,
    weights: Vec<u32>,
    policy: String,
}

const USAGE: &str = "usage: lb-lab [--keep] [--story] [--nodes N] [--one-nic] [--connections N] [--weights W1,W2,W3] [--policy maglev|round_robin|least_conn|source_hash]";

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        keep: false,
        story: false,
        nodes: None,
        one_nic: false,
        connections: 300,
        weights: vec![1, 1, 1],
        policy: "maglev".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--keep" => args.keep = true,
            "--story" => args.story = true,
            "--one-nic" => args.one_nic = true,
            "--nodes" => {
                let v = it.next().ok_or("--nodes needs a number")?;
                let max = lb_tests::tier::topology::MAX_NODES;
                args.nodes = Some(
                    v.parse()
                        .ok()
                        .filter(|n| (2..=max).contains(n))
                        .ok_or(format!("--nodes {v}: expected 2..={max}"))?,
                );
            }
            "--connections" => {
                let v = it.next().ok_or("--connections needs a number")?;
                args.connections = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=100_000).contains(n))
                    .ok_or(format!("--connections {v}: expected 1..=100000"))?;
            }
            "--weights" => {
                let v = it.next().ok_or("--weights needs W1,W2,W3")?;
                let w: Result<Vec<u32>, _> = v.split(',').map(str::parse).collect();
                args.weights = w
                    .ok()
                    .filter(|w| w.len() == 3 && w.iter().all(|x| (1..=1000).contains(x)))
                    .ok_or(format!("--weights {v}: expected three weights 1..=1000"))?;
            }
            "--policy" => {
                let v = it.next().ok_or("--policy needs a name")?;
                if !["maglev", "round_robin", "least_conn", "source_hash"].contains(&v.as_str()) {
                    return Err(format!("--policy {v}: unknown policy\n{USAGE}"));
                }
                args.policy = v;
            }
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    Ok(args)
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    // Ctrl-C must still tear the lab down, so it only sets a flag.
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    if let Some(nodes) = args.nodes {
        if args.one_nic || args.policy != "maglev" || args.weights != [1, 1, 1] {
            eprintln!("--nodes runs the tier lab: one Maglev service, equal weights, two NICs per node\n{USAGE}");
            std::process::exit(2);
        }
        if let Err(e) = tier::run(nodes, args.story, args.keep, args.connections, &STOP) {
            eprintln!("lab: {e}");
            std::process::exit(1);
        }
        return;
    }
    if args.story {
        if let Err(e) = story::run(args.keep, &STOP) {
            eprintln!("lab: {e}");
            std::process::exit(1);
        }
        return;
    }
    let spec = LabSpec {
        backends: vec![
            BackendSpec::new("b1", "az-a"),
            BackendSpec::new("b2", "az-b"),
            BackendSpec::new("b3", "az-c"),
        ],
        one_nic: args.one_nic,
        ipv6: true,
        tc: false,
    };
    println!("lab: building namespaces (client, lb, switch, 3 backends), IPv4 and IPv6...");
    let lab = Lab::build(&spec);
    let udp_health = "health: { type: udp, send: ping, expect: ping }";
    let config = LabConfig::new(&lab)
        .weights(&args.weights)
        .selection(&args.policy)
        .service("web6", Family::V6, "tcp", VIP_PORT, &[])
        .service("dns", Family::V4, "udp", UDP_PORT, &[udp_health])
        .service("dns6", Family::V6, "udp", UDP_PORT, &[udp_health])
        .yaml();
    // Every backend answers UDP on the backend port too, in both families.
    let echoes: Vec<UdpEcho> = (0..lab.backend_count())
        .flat_map(|i| {
            let lab = &lab;
            Family::ALL.into_iter().map(move |family| {
                let name = &lab.backend_spec(i).name;
                UdpEcho::start(
                    lab.backend_ns(i),
                    lab.backend_ip(i, family),
                    BACKEND_PORT,
                    name,
                )
            })
        })
        .collect();
    println!("lab: starting lbd in {} with:\n{config}", lab.lb_ns());
    let mut lb = RunningLb::start(lab, &config);

    let mut failed = 0;
    for family in Family::ALL {
        failed += tcp_check(&lb, family, &args);
    }
    for family in Family::ALL {
        failed += udp_check::run(&lb, family);
    }

    if args.keep {
        println!(
            "\nlab: kept running (Ctrl-C to tear down). Try:\n  nsenter --net=/run/netns/{} curl -s http://{}/ http://[{}]/\n  ip -n {} link show   # XDP attached on {}\n  lbd log: {}",
            lb.lab.client_ns(),
            vip(Family::V4),
            vip(Family::V6),
            lb.lab.lb_ns(),
            lb.lab.lb_interfaces().join(", "),
            lb.lbd.log_path().display()
        );
        while !STOP.load(Ordering::SeqCst) && lb.lbd.is_running() {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    echoes.iter().for_each(UdpEcho::begin_stop);
    let log = lb.stop_lbd();
    println!("\nlbd's counters at shutdown:");
    for line in log.lines().filter(|l| {
        l.contains("service ") || l.contains("backend ") || l.contains("data path actions")
    }) {
        if let Some((_, msg)) = line.split_once("] ") {
            println!("  {msg}");
        }
    }
    drop(lb);
    drop(echoes);
    println!("lab: torn down");
    if failed > 0 {
        println!("lab: {failed} connections or datagrams failed");
        std::process::exit(1);
    }
}

/// `args.connections` connections from the client to the TCP VIP of `family`, one after
/// another: prints where they went and how many failed, and returns that number.
fn tcp_check(lb: &RunningLb, family: Family, args: &Args) -> usize {
    let to = SocketAddr::new(vip(family), VIP_PORT);
    println!(
        "\nlab: {} {family} TCP connections from {} to {to} ...",
        args.connections,
        lb.lab.client_ip(family)
    );
    let started = Instant::now();
    let result = burst(
        lb.lab.client_ns(),
        to.ip(),
        VIP_PORT,
        args.connections,
        Duration::from_secs(3),
        Duration::from_secs(120),
    );
    let elapsed = started.elapsed();
    let weight_sum: u32 = args.weights.iter().sum();
    println!(
        "\n{:<8} {:<6} {:>7} {:>15} {:>8} {:>7}",
        "BACKEND", "ZONE", "WEIGHT", "ADDRESS", "CONNS", "SHARE"
    );
    for i in 0..lb.lab.backend_count() {
        let name = &lb.lab.backend_spec(i).name;
        let n = result.per_backend.get(name).copied().unwrap_or(0);
        println!(
            "{:<8} {:<6} {:>7} {:>15} {:>8} {:>6.1}%   (weight share {:.1}%)",
            name,
            lb.lab.backend_spec(i).zone,
            args.weights[i],
            lb.lab.backend_ip(i, family),
            n,
            100.0 * n as f64 / result.attempted.max(1) as f64,
            100.0 * args.weights[i] as f64 / weight_sum as f64,
        );
    }
    println!(
        "\n{} ok, {} failed, in {:.2}s ({:.0} connections/s)",
        result.ok,
        result.failed.len(),
        elapsed.as_secs_f64(),
        result.ok as f64 / elapsed.as_secs_f64()
    );
    for f in result.failed.iter().take(5) {
        println!("  failed: {f}");
    }
    if let Some(r) = result.replies.first() {
        println!(
            "client saw its peer as {}; backend {} saw the client as {}",
            r.remote, r.backend, r.peer_seen_by_backend
        );
    }
    args.connections - result.ok
}
