//! `cargo xtask bench`: runs the parts of the benchmark (see `lb_tests::bench`), prints
//! their tables, evaluates the targets and writes every figure as JSON (`--json PATH`).
//! Needs root (BPF, namespaces). Every part is bounded in time.
use std::path::PathBuf;

use lb_tests::bench::{
    api_change, control, dsr, e2e, edge, flow_fill, machine, packet, probes, probes_lbd, targets,
};
use serde_json::Value;

const USAGE: &str =
    "usage: lb-bench [--only packet,edge,dsr,fill,control,api,probes,e2e] [--json PATH]
  [--calls N] [--rounds R]              per-packet, edge and dsr parts (default 20000 x 5)
  [--fill-calls N] [--fill-rounds R]    flow-table fill part (default 10000 x 3)
  [--e2e-rounds R] [--e2e-seconds S]    end-to-end part (default 5 rounds x 1.5 s per run)";

/// `api` (the admin-API change) also runs as part of `control`.
const PARTS: [&str; 8] = [
    "packet", "edge", "dsr", "fill", "control", "api", "probes", "e2e",
];

struct Args {
    only: Vec<String>,
    json: Option<PathBuf>,
    calls: usize,
    rounds: usize,
    fill_calls: usize,
    fill_rounds: usize,
    e2e_rounds: usize,
    e2e_seconds: f64,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        only: PARTS.iter().map(|p| p.to_string()).collect(),
        json: None,
        calls: 20_000,
        rounds: 5,
        fill_calls: 10_000,
        fill_rounds: 3,
        e2e_rounds: 5,
        e2e_seconds: 1.5,
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
    if wants("edge") {
        let opts = edge::Options {
            rounds: args.rounds,
            calls: args.calls,
        };
        report.insert("edge".into(), edge::run(&opts));
    }
    if wants("dsr") {
        let opts = dsr::Options {
            rounds: args.rounds,
            calls: args.calls,
        };
        report.insert("dsr".into(), dsr::run(&opts));
    }
    if wants("fill") {
        let opts = flow_fill::Options {
            rounds: args.fill_rounds,
            calls: args.fill_calls,
            fills: vec![1_000, 100_000, 1_000_000],
            backends: vec![10, 1_000, 10_000],
        };
        report.insert("fill".into(), flow_fill::run(&opts));
    }
    if wants("control") {
        let opts = control::Options {
            backends: vec![10, 1_000, 10_000],
            rings: vec![65_537, 655_373],
            changes: 6,
        };
        report.insert("control".into(), control::run(&opts));
    }
    if wants("control") || wants("api") {
        let api = api_change::run(&api_change::Options {
            backends: vec![10, 1_000, 10_000],
            services: vec![1, 100],
            adds: 20,
        });
        report.insert("api_change".into(), api.into());
    }
    if wants("probes") {
        let probes = probes::run(&probes::Options { seconds: 3.0 });
        report.insert("health_probes".into(), probes);
        let opts = probes_lbd::Options {
            backends: vec![1_000, 10_000],
            seconds: 5.0,
        };
        report.insert("health_probes_lbd".into(), probes_lbd::run(&opts));
    }
    if wants("e2e") {
        let opts = e2e::Options {
            rounds: args.e2e_rounds,
            seconds: args.e2e_seconds,
            conn_workers: 4,
            keepalive_conns: 4,
            bulk_streams: 2,
            backends: 3,
        };
        report.insert("e2e".into(), e2e::run(&opts));
    }
    let mut report = Value::Object(report);
    let evaluated = targets::evaluate(&report);
    report["targets"] = evaluated;
    if let Some(path) = &args.json {
        write_json(path, &report);
    }
}

fn write_json(path: &PathBuf, report: &Value) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    }
    let text = serde_json::to_string_pretty(report).expect("figures serialise");
    std::fs::write(path, text + "\n").unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    println!("\nwrote {}", path.display());
}
