//! `cargo xtask bench`: runs the parts of the benchmark (see `lb_tests::bench`), prints
//! their tables, evaluates the targets and writes every figure as JSON (`--json PATH`).
//! Needs root (BPF, namespaces). Every part is bounded in time.
use std::path::PathBuf;

use lb_tests::bench::{
    api_change, control, dsr, dsr6, e2e, edge, edge6, flow_fill, ipv6, machine, packet, probes,
    probes_lbd, syn_proxy, targets, tc_hook, udp,
};
use serde_json::Value;

const USAGE: &str = "usage: lb-bench [--quick] [--only packet,tc,edge,edge6,synproxy,dsr,udp,ipv6,fill,control,api,probes,e2e,e2e_tc] [--json PATH]
  --quick                               every part, a few hundred calls per row and a short
                                        end-to-end round (about a minute): checks the harness
                                        (frames, connections), judges no timing; exits 1 when a
                                        run failed
  [--calls N] [--rounds R]              per-packet, tc, edge, edge6, synproxy, dsr, udp and ipv6 parts (default 20000 x 5)
  [--fill-calls N] [--fill-rounds R]    flow-table fill part (default 10000 x 3)
  [--e2e-rounds R] [--e2e-seconds S]    end-to-end part (default 5 rounds x 1.5 s per run)
  [--saturated-rounds R] [--saturated-seconds S]
                                        its wrk and iperf3 rows, in the first R rounds (default 3 x 5 s)
  [--e2e-profile DIR]                   one more round of two saturated rows under perf record";

/// `api` (the admin-API change) also runs as part of `control`.
const PARTS: [&str; 14] = [
    "packet", "tc", "edge", "edge6", "synproxy", "dsr", "udp", "ipv6", "fill", "control", "api",
    "probes", "e2e", "e2e_tc",
];

struct Args {
    quick: bool,
    only: Vec<String>,
    json: Option<PathBuf>,
    calls: usize,
    rounds: usize,
    fill_calls: usize,
    fill_rounds: usize,
    e2e_rounds: usize,
    e2e_seconds: f64,
    saturated_rounds: usize,
    saturated_seconds: f64,
    e2e_profile: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        quick: false,
        only: PARTS.iter().map(|p| p.to_string()).collect(),
        json: None,
        calls: 20_000,
        rounds: 5,
        fill_calls: 10_000,
        fill_rounds: 3,
        e2e_rounds: 5,
        e2e_seconds: 1.5,
        saturated_rounds: 3,
        saturated_seconds: 5.0,
        e2e_profile: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value\n{USAGE}"));
        let number = |name: &str, v: String, max: usize| -> Result<usize, String> {
            v.parse()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or(format!("{name} {v}: expected 1..={max}"))
        };
        match a.as_str() {
            "--quick" => {
                // Sizes given after it still win.
                args.quick = true;
                args.calls = 300;
                args.rounds = 3;
                args.fill_calls = 300;
                args.fill_rounds = 2;
                args.e2e_rounds = 1;
                args.e2e_seconds = 0.5;
                args.saturated_rounds = 1;
                args.saturated_seconds = 1.0;
            }
            "--only" => {
                let v = value("--only")?;
                let parts: Vec<String> = v.split(',').map(str::to_string).collect();
                if let Some(bad) = parts.iter().find(|p| !PARTS.contains(&p.as_str())) {
                    return Err(format!(
                        "--only: unknown part {bad:?}; parts: {}",
                        PARTS.join(",")
                    ));
                }
                args.only = parts;
            }
            "--json" => args.json = Some(PathBuf::from(value("--json")?)),
            "--calls" => args.calls = number(&a, value(&a)?, 10_000_000)?,
            "--rounds" => args.rounds = number(&a, value(&a)?, 1000)?,
            "--fill-calls" => args.fill_calls = number(&a, value(&a)?, 1_000_000)?,
            "--fill-rounds" => args.fill_rounds = number(&a, value(&a)?, 100)?,
            "--e2e-rounds" => args.e2e_rounds = number(&a, value(&a)?, 50)?,
            "--e2e-seconds" => {
                let v = value(&a)?;
                args.e2e_seconds = v
                    .parse()
                    .ok()
                    .filter(|s| (0.2..=60.0).contains(s))
                    .ok_or(format!("--e2e-seconds {v}: expected 0.2..=60"))?;
            }
            "--saturated-rounds" => args.saturated_rounds = number(&a, value(&a)?, 50)?,
            "--saturated-seconds" => {
                let v = value(&a)?;
                args.saturated_seconds = v
                    .parse()
                    .ok()
                    .filter(|s| (1.0..=60.0).contains(s))
                    .ok_or(format!("--saturated-seconds {v}: expected 1..=60"))?;
            }
            "--e2e-profile" => args.e2e_profile = Some(PathBuf::from(value(&a)?)),
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    Ok(args)
}

fn main() {
    let args = parse_args().unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2)
    });
    let wants = |part: &str| args.only.iter().any(|p| p == part);
    let mut report = serde_json::Map::new();
    report.insert("machine".into(), machine::describe());
    println!("machine: {}", report["machine"]);
    if wants("packet") {
        let opts = packet::Options {
            rounds: args.rounds,
            calls: args.calls,
        };
        report.insert("packet".into(), packet::run(&opts));
    }
    if wants("tc") {
        let opts = tc_hook::Options {
            rounds: args.rounds,
            calls: args.calls,
        };
        report.insert("tc".into(), tc_hook::run(&opts));
    }
    if wants("edge") {
        let opts = edge::Options {
            rounds: args.rounds,
            calls: args.calls,
        };
        report.insert("edge".into(), edge::run(&opts));
    }
    if wants("edge6") {
        let opts = edge6::Options {
            rounds: args.rounds,
            calls: args.calls,
        };
        report.insert("edge6".into(), edge6::run(&opts));
    }
    if wants("synproxy") {
        let opts = syn_proxy::Options {
            rounds: args.rounds,
            calls: args.calls,
        };
        report.insert("synproxy".into(), syn_proxy::run(&opts));
    }
    if wants("dsr") {
        let opts = dsr::Options {
            rounds: args.rounds,
            calls: args.calls,
        };
        report.insert("dsr".into(), dsr::run(&opts));
        report.insert("dsr6".into(), dsr6::run(&opts));
    }
    if wants("udp") {
        let opts = udp::Options {
            rounds: args.rounds,
            calls: args.calls,
        };
        report.insert("udp".into(), udp::run(&opts));
    }
    if wants("ipv6") {
        let opts = ipv6::Options {
            rounds: args.rounds,
            calls: args.calls,
        };
        report.insert("ipv6".into(), ipv6::run(&opts));
    }
    if wants("fill") {
        let opts = flow_fill::Options {
            rounds: args.fill_rounds,
            calls: args.fill_calls,
            fills: sizes(&args, &[1_000, 100_000, 1_000_000], &[1_000, 10_000]),
            backends: sizes(&args, &[10, 1_000, 10_000], &[10, 100]),
        };
        report.insert("fill".into(), flow_fill::run(&opts));
    }
    if wants("control") {
        let opts = control::Options {
            backends: sizes(&args, &[10, 1_000, 10_000], &[10, 100]),
            rings: sizes(&args, &[65_537, 655_373], &[65_537]),
            changes: if args.quick { 2 } else { 6 },
        };
        report.insert("control".into(), control::run(&opts));
    }
    if wants("control") || wants("api") {
        let api = api_change::run(&api_change::Options {
            backends: sizes(&args, &[10, 1_000, 10_000], &[10, 100]),
            services: sizes(&args, &[1, 100], &[1, 10]),
            adds: if args.quick { 3 } else { 20 },
        });
        report.insert("api_change".into(), api.into());
    }
    if wants("probes") {
        let seconds = if args.quick { 0.5 } else { 3.0 };
        let probes = probes::run(&probes::Options { seconds });
        report.insert("health_probes".into(), probes);
        let opts = probes_lbd::Options {
            backends: sizes(&args, &[1_000, 10_000], &[100]),
            seconds: if args.quick { 1.0 } else { 5.0 },
        };
        report.insert("health_probes_lbd".into(), probes_lbd::run(&opts));
    }
    if wants("e2e") || wants("e2e_tc") {
        let opts = e2e::Options {
            rounds: args.e2e_rounds,
            seconds: args.e2e_seconds,
            conn_workers: 4,
            keepalive_conns: 4,
            bulk_streams: 2,
            backends: 3,
            saturated_rounds: args.saturated_rounds,
            saturated_seconds: args.saturated_seconds,
            profile: args.e2e_profile.clone(),
        };
        if wants("e2e") {
            report.insert("e2e".into(), e2e::run(&opts));
        }
        // The same rows with the veths' offloads on, `lbd` at tc.
        if wants("e2e_tc") {
            report.insert("e2e_tc".into(), e2e::run_offloaded(&opts));
        }
    }
    let mut report = Value::Object(report);
    let evaluated = targets::evaluate(&report);
    report["targets"] = evaluated;
    if let Some(path) = &args.json {
        write_json(path, &report);
    }
    if args.quick {
        // A wrong frame has already stopped the run (a panic); what is left to judge
        // is whether every end-to-end run served: never how fast.
        let failures: Vec<String> = ["e2e", "e2e_tc"]
            .iter()
            .flat_map(|part| e2e::harness_failures(&report[*part]))
            .collect();
        for f in &failures {
            eprintln!("lb-bench --quick: {f}");
        }
        if !failures.is_empty() {
            std::process::exit(1);
        }
        println!("\nlb-bench --quick: the harness ran every part (timings not judged)");
    }
}

/// The full run's sizes, or the quick run's.
fn sizes<T: Copy>(args: &Args, full: &[T], quick: &[T]) -> Vec<T> {
    if args.quick { quick } else { full }.to_vec()
}

fn write_json(path: &PathBuf, report: &Value) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    }
    let text = serde_json::to_string_pretty(report).expect("figures serialise");
    std::fs::write(path, text + "\n").unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    println!("\nwrote {}", path.display());
}
