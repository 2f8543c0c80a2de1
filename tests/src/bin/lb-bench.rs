//! `cargo xtask bench` (per-packet part): the cost of each data-path case measured with
//! BPF_PROG_TEST_RUN, beside the pass-everything program timed the same way in the same
//! run. Each figure is the kernel's own timing of one single-run call (a rewriting path
//! cannot use `repeat`: later repeats would see the already rewritten frame), so each
//! call carries the same fixed overhead as the floor, which the net column removes.
//! The measuring thread is pinned to one CPU (per-CPU maps, stable caches).
use lb_tests::{
    frame::{dst_ip, Frame},
    packet_rig::*,
    peer_xdp,
};

const USAGE: &str = "usage: lb-bench [--calls N] [--rounds R]";

struct Args {
    calls: usize,
    rounds: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        calls: 20_000,
        rounds: 5,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut number = |name: &str, max: usize| -> Result<usize, String> {
            let v = it.next().ok_or(format!("{name} needs a number"))?;
            v.parse()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or(format!("{name} {v}: expected 1..={max}"))
        };
        match a.as_str() {
            "--calls" => args.calls = number("--calls", 10_000_000)?,
            "--rounds" => args.rounds = number("--rounds", 1000)?,
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    Ok(args)
}

fn median(v: &mut [u64]) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

/// Min and median over rounds of each round's median per-call time.
#[derive(Clone, Copy)]
struct Stat {
    min: u64,
    median: u64,
}

fn measure(rounds: usize, calls: usize, mut one: impl FnMut(usize) -> u64) -> Stat {
    let mut per_round: Vec<u64> = (0..rounds)
        .map(|r| {
            let mut times: Vec<u64> = (0..calls).map(|i| one(r * calls + i)).collect();
            median(&mut times)
        })
        .collect();
    let min = *per_round.iter().min().unwrap();
    Stat {
        min,
        median: median(&mut per_round),
    }
}

fn main() {
    let args = parse_args().unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2)
    });
    let rig = Rig::build();
    let config = CONFIG.replace("flow_table_size: 4096", "flow_table_size: 1048576");
    let (c0, b0) = (rig.c0, rig.b0);
    let rows = rig.with_dataplane(&config, |c| {
        pin_to_cpu(0);
        let mut floor_obj = peer_xdp::load_pass_program();
        let floor = peer_xdp::pass_program(&mut floor_obj);
        let lb = c.dataplane().program();
        let (rounds, calls) = (args.rounds, args.calls);

        let syn = client_syn(40000).bytes();
        let floor_stat = measure(rounds, calls, |_| {
            let r = run_once(floor, c0, &syn);
            assert_eq!(r.action, XDP_PASS);
            r.nanos
        });

        let other = Frame {
            dst: "10.10.0.50".parse().unwrap(),
            ..client_syn(40000)
        }
        .bytes();
        let pass = measure(rounds, calls, |_| {
            let r = run_once(lb, c0, &other);
            assert_eq!(r.action, XDP_PASS);
            r.nanos
        });

        // Every call a new client port, and a new client address every 50,000, so every
        // SYN misses the flow table and takes the Maglev path.
        let new_flow = measure(rounds, calls, |i| {
            let src = std::net::Ipv4Addr::from(u32::from(CLIENT) + (i / 50_000) as u32 * 256);
            let f = Frame {
                src,
                ..client_syn(1024 + (i % 50_000) as u16)
            }
            .bytes();
            let r = run_once(lb, c0, &f);
            assert_eq!(r.action, XDP_REDIRECT, "new flow #{i}");
            r.nanos
        });

        let first = run_once(lb, c0, &client_syn(33333).bytes());
        let backend = dst_ip(&first.output);
        let ack = Frame {
            flags: 0x10,
            ..client_syn(33333)
        }
        .bytes();
        let established = measure(rounds, calls, |_| {
            let r = run_once(lb, c0, &ack);
            assert_eq!((r.action, dst_ip(&r.output)), (XDP_REDIRECT, backend));
            r.nanos
        });

        let reply = Frame {
            src: backend,
            dst: CLIENT,
            sport: 8080,
            dport: 33333,
            flags: 0x10,
            ..Frame::default()
        }
        .bytes();
        let ret = measure(rounds, calls, |_| {
            let r = run_once(lb, b0, &reply);
            assert_eq!(r.action, XDP_REDIRECT);
            r.nanos
        });
        [
            ("empty XDP_PASS program (floor)", floor_stat),
            ("non-VIP pass-through", pass),
            ("SYN to VIP, new flow (Maglev)", new_flow),
            ("established flow, to backend", established),
            ("return path, to client", ret),
        ]
        .map(|(name, s)| {
            let net_min = s.min.saturating_sub(floor_stat.min);
            let net_median = s.median.saturating_sub(floor_stat.median);
            (name, s.min, s.median, net_min, net_median)
        })
    });
    println!(
        "per-packet cost, BPF_PROG_TEST_RUN, {} rounds x {} single-run calls, pinned to CPU 0",
        args.rounds, args.calls
    );
    println!(
        "{:<34} {:>8} {:>8} {:>8} {:>8}",
        "path", "min ns", "med ns", "net min", "net med"
    );
    for (name, min, med, net_min, net_med) in rows {
        println!("{name:<34} {min:>8} {med:>8} {net_min:>8} {net_med:>8}");
    }
}
