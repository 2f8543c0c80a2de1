//! The cost of one admin-API change as `lbd` makes it (`SharedRuntime::change`: the edit
//! and its validation, the diff, persisting to a real state file with fsync, and the
//! re-plan and table writes), with 10, 1,000 and 10,000 backends in two layouts: all in
//! one service, and spread over up to 100 services (the change goes to one of them).
//! Each timed change adds one more backend. The data path is the in-memory fake: an add writes
//! one backend slot and at most one prefilter word, which the change-to-live rows price
//! on the real maps; what grows with the backend count is all in userspace.
use std::time::Instant;

use lb_userspace::{
    control::runtime::Runtime,
    control::tables::Controller,
    dataplane::FakeDataplane,
    model::config,
    model::desired::edit::{BackendAddr, Edit},
    ops::shared::SharedRuntime,
};
use serde_json::{json, Value};

use super::{
    stats::{median_f64, median_u64, timed},
    table::{fixed, Table},
};

pub struct Options {
    pub backends: Vec<usize>,
    /// How many services the backends are spread over, per layout (the count is capped
    /// at the number of backends).
    pub services: Vec<usize>,
    /// Adds timed per backend count.
    pub adds: usize,
}

const RING: u32 = 65_537;

fn backend(i: usize) -> config::BackendConfig {
    config::BackendConfig {
        address: std::net::IpAddr::from([
            10,
            3 + (i / 50_000) as u8,
            (i / 200 % 250) as u8,
            (i % 200) as u8 + 1,
        ]),
        port: 8080,
        zone: "az-a".into(),
        weight: 1,
        state: config::BackendState::Active,
    }
}

/// `n` backends dealt round robin over `services` services: `web` (the one the adds go
/// to), then `web1`, `web2`, ...
fn runtime(
    n: usize,
    services: usize,
    state_file: &std::path::Path,
) -> SharedRuntime<FakeDataplane> {
    let mut lists = vec![String::new(); services];
    for i in 0..n {
        lists[i % services].push_str(&format!(
            "      - {{ address: {}, port: 8080, zone: az-a }}\n",
            backend(i).address
        ));
    }
    let services: String = lists
        .iter()
        .enumerate()
        .map(|(k, list)| {
            let name = if k == 0 {
                "web".to_string()
            } else {
                format!("web{k}")
            };
            format!(
                "  - name: {name}\n    vip: 10.0.{}.{}\n    port: 80\n    backends:\n{list}",
                k / 200,
                k % 200 + 1
            )
        })
        .collect();
    let c = config::parse(&format!(
        "node: {{ zone: az-a }}\ninterfaces: [eth0]\nlimits: {{ max_backends: 16384, max_services: 128 }}\n\
         cluster: {{ ring_size: {RING} }}\nstate_file: {}\nservices:\n{services}",
        state_file.display()
    ))
    .expect("bench config is valid");
    let controller = Controller::new(FakeDataplane::new(RING, 1), RING);
    let (runtime, _) = Runtime::start(c, controller, Instant::now()).expect("starting the runtime");
    SharedRuntime::new(runtime)
}

pub fn run(opts: &Options) -> Vec<Value> {
    let mut table = Table::new(
        "admin API change: add one backend to a service (SharedRuntime::change, real state file)",
        &[
            "backends",
            "services",
            "first ms",
            "first bytes",
            "add med ms",
            "add max ms",
            "bytes med",
            "weight med ms",
        ],
    );
    let mut out = Vec::new();
    let layouts = opts
        .services
        .iter()
        .flat_map(|&services| opts.backends.iter().map(move |&n| (n, services.min(n))));
    for (n, services) in layouts {
        let dir = std::env::temp_dir().join(format!(
            "lb-bench-api-{n}-{services}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let rt = runtime(n, services, &dir.join("state.yaml"));
        let add = |i: usize| {
            let before = rt.persisted_bytes();
            let edit = Edit::AddBackend {
                service: "web".into(),
                backend: backend(i),
            };
            let (took, result) = timed(|| rt.change(&edit));
            result.expect("adding a backend");
            (took.as_secs_f64() * 1e3, rt.persisted_bytes() - before)
        };
        // The first change of a process writes the whole snapshot.
        let (first_ms, first_bytes) = add(n);
        let (times, bytes): (Vec<f64>, Vec<u64>) = (1..=opts.adds).map(|k| add(n + k)).unzip();
        let median = median_f64(&times);
        let max = times.iter().copied().fold(f64::NAN, f64::max);
        let bytes_median = median_u64(&bytes);
        // A weight change of a serving backend of `web` (backend i is in service
        // i % services) moves ring slots: its Maglev table is rebuilt.
        let per_service = n / services;
        let weights: Vec<f64> = (0..opts.adds)
            .map(|k| {
                let edit = Edit::SetWeight {
                    service: "web".into(),
                    backend: BackendAddr {
                        address: backend(k % per_service * services).address,
                        port: 8080,
                    },
                    // Each pass over the service's backends sets the other weight.
                    weight: 2 + (k / per_service % 2) as u32,
                };
                let (took, result) = timed(|| rt.change(&edit));
                result.expect("changing a weight");
                took.as_secs_f64() * 1e3
            })
            .collect();
        let weight_median = median_f64(&weights);
        table.row(vec![
            n.to_string(),
            services.to_string(),
            fixed(first_ms, 2),
            first_bytes.to_string(),
            fixed(median, 2),
            fixed(max, 2),
            bytes_median.to_string(),
            fixed(weight_median, 2),
        ]);
        out.push(json!({
            "backends": n, "services": services, "first_change_ms": first_ms, "first_change_bytes": first_bytes,
            "adds": opts.adds, "add_median_ms": median, "add_max_ms": max,
            "add_median_bytes_persisted": bytes_median, "weight_change_median_ms": weight_median,
        }));
        drop(rt);
        let _ = std::fs::remove_dir_all(&dir);
    }
    table.note("first: the first change of a process writes a whole snapshot; later ones append a journal record (fsynced)");
    table.note("weight: a serving backend's weight 1 -> 2 (or 2 <-> 3), which rebuilds its service's Maglev table (an add does not: a new backend waits for its probes at weight 0)");
    table.note("a journal that outgrows the snapshot is compacted by the next change, so a compaction can show as the max");
    table.print();
    out
}
