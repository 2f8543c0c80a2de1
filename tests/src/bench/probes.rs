//! Health probes per second, and the CPU they cost: `lbd`'s own prober
//! (`health::checker::Checker`, one tokio task per backend, each probing on its jittered
//! interval) on a multi-thread tokio runtime as in `lbd`, probing N backends against
//! responders on the loopback of a namespace made for the run: one listener per backend
//! that accepts and closes (TCP probes) or answers `200 OK` (HTTP probes), on a runtime
//! of their own. Counted over a fixed window after every task has started: probe
//! reports per second, failures, latency, and the CPU time of the prober's threads only
//! (`/proc/self/task/*/schedstat`, by thread name), which includes the kernel work done
//! in their context (connect, loopback delivery).
use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddrV4},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use lb_userspace::{
    control::health::{
        checker::{Checker, Report},
        probe::{ProbeKind, ProbeSpec},
    },
    model::config::StatusRange,
    model::plan::BackendRef,
};
use serde_json::{json, Value};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    sync::mpsc,
};

use super::{
    stats::median_f64,
    table::{fixed, Table},
};
use crate::netns::{self, NetNs};

pub struct Options {
    /// The counting window of each scenario.
    pub seconds: f64,
}

/// Backends probed, their interval, and the probe type.
const SCENARIOS: [(usize, u64, bool); 5] = [
    (100, 1_000, false),
    (1_000, 1_000, false),
    (1_000, 100, false),
    (1_000, 100, true),
    (2_000, 50, false),
];

const PROBER_THREADS: &str = "lb-bench-prober";
const RESPONDER_THREADS: &str = "lb-bench-answer";
const FIRST_PORT: u16 = 20_000;

/// CPU time in ns of this process's threads named `name`.
fn threads_cpu_ns(name: &str) -> u64 {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
        let dir = task.expect("a task entry").path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim_end() != name {
            continue;
        }
        // schedstat: time on CPU (ns), time waiting to run (ns), timeslices.
        let stat = std::fs::read_to_string(dir.join("schedstat")).unwrap_or_default();
        total += stat
            .split_whitespace()
            .next()
            .and_then(|ns| ns.parse::<u64>().ok())
            .unwrap_or(0);
    }
    total
}

struct Outcome {
    backends: usize,
    interval_ms: u64,
    http: bool,
    per_second: f64,
    failed: u64,
    cpu_share: f64,
    cpu_us_per_probe: f64,
    latency_median_ms: f64,
    latency_p99_ms: f64,
}

/// Listeners on `127.0.0.1:FIRST_PORT..` that answer each connection and close it.
async fn respond(ports: std::ops::Range<u16>, http: bool) {
    for port in ports {
        let listener = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
            .await
            .unwrap_or_else(|e| panic!("binding responder port {port}: {e}"));
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                if http {
                    tokio::spawn(async move {
                        let mut buf = [0u8; 512];
                        let _ = stream.read(&mut buf).await;
                        let _ = stream
                            .write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
                            .await;
                    });
                }
            }
        });
    }
}

fn scenario(backends: usize, interval_ms: u64, http: bool, window: Duration) -> Outcome {
    let ports = FIRST_PORT..FIRST_PORT + backends as u16;
    let responder = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(RESPONDER_THREADS)
        .enable_all()
        .build()
        .expect("responder runtime");
    responder.block_on(respond(ports.clone(), http));
    let prober = tokio::runtime::Builder::new_multi_thread()
        .thread_name(PROBER_THREADS)
        .enable_all()
        .build()
        .expect("prober runtime");
    let interval = Duration::from_millis(interval_ms);
    let outcome = prober.block_on(async move {
        let (tx, mut rx) = mpsc::channel::<Report>(4096);
        let mut checker = Checker::new(tx);
        let kind = if http {
            ProbeKind::Http {
                path: "/healthz".into(),
                host: "127.0.0.1".into(),
                expect: StatusRange { min: 200, max: 399 },
            }
        } else {
            ProbeKind::Tcp
        };
        let wanted: BTreeMap<BackendRef, ProbeSpec> = ports
            .map(|port| {
                (
                    BackendRef {
                        service: "bench".into(),
                        address: Ipv4Addr::LOCALHOST.into(),
                        port,
                    },
                    ProbeSpec {
                        target: SocketAddrV4::new(Ipv4Addr::LOCALHOST, port).into(),
                        kind: kind.clone(),
                        interval,
                        timeout: Duration::from_secs(1),
                        via: None,
                    },
                )
            })
            .collect();
        checker.sync(wanted);
        // Every task starts within its first interval; count from the second one on.
        let counting = Arc::new(AtomicBool::new(false));
        let consumer = {
            let counting = counting.clone();
            tokio::spawn(async move {
                let (mut ok, mut failed, mut latencies) = (0u64, 0u64, Vec::new());
                while let Some(report) = rx.recv().await {
                    if !counting.load(Ordering::Relaxed) {
                        continue;
                    }
                    match report.outcome {
                        Ok(()) => ok += 1,
                        Err(_) => failed += 1,
                    }
                    latencies.push(report.latency.as_secs_f64() * 1e3);
                }
                (ok, failed, latencies)
            })
        };
        tokio::time::sleep(interval * 2).await;
        let cpu_before = threads_cpu_ns(PROBER_THREADS);
        let started = Instant::now();
        counting.store(true, Ordering::Relaxed);
        tokio::time::sleep(window).await;
        counting.store(false, Ordering::Relaxed);
        let elapsed = started.elapsed().as_secs_f64();
        let cpu = threads_cpu_ns(PROBER_THREADS) - cpu_before;
        drop(checker);
        let (ok, failed, mut latencies) = consumer.await.expect("the consumer ends");
        latencies.sort_by(f64::total_cmp);
        let probes = (ok + failed).max(1);
        let p99 = latencies
            .get(latencies.len() * 99 / 100)
            .copied()
            .unwrap_or(f64::NAN);
        Outcome {
            backends,
            interval_ms,
            http,
            per_second: (ok + failed) as f64 / elapsed,
            failed,
            cpu_share: cpu as f64 / 1e9 / elapsed,
            cpu_us_per_probe: cpu as f64 / 1e3 / probes as f64,
            latency_median_ms: median_f64(&latencies),
            latency_p99_ms: p99,
        }
    });
    prober.shutdown_timeout(Duration::from_secs(2));
    responder.shutdown_timeout(Duration::from_secs(2));
    outcome
}

pub fn run(opts: &Options) -> Value {
    let ns = NetNs::create(&format!("{}pr", netns::unique_prefix()));
    netns::ns_ip(ns.name(), &["link", "set", "lo", "up"]);
    let window = Duration::from_secs_f64(opts.seconds);
    let outcomes: Vec<Outcome> = netns::run_in(ns.name(), || {
        SCENARIOS
            .iter()
            .map(|&(backends, interval_ms, http)| scenario(backends, interval_ms, http, window))
            .collect()
    });
    let mut table = Table::new(
        format!(
            "health probes: lbd's prober against loopback responders, {:.1} s per row",
            opts.seconds
        ),
        &[
            "probe",
            "backends",
            "interval",
            "offered/s",
            "probes/s",
            "failed",
            "prober CPU",
            "CPU us/probe",
            "latency med ms",
            "p99 ms",
        ],
    );
    for o in &outcomes {
        table.row(vec![
            if o.http { "HTTP" } else { "TCP" }.into(),
            o.backends.to_string(),
            format!("{} ms", o.interval_ms),
            (o.backends as u64 * 1000 / o.interval_ms).to_string(),
            fixed(o.per_second, 0),
            o.failed.to_string(),
            format!("{:.1}% of a core", o.cpu_share * 100.0),
            fixed(o.cpu_us_per_probe, 1),
            fixed(o.latency_median_ms, 3),
            fixed(o.latency_p99_ms, 3),
        ]);
    }
    table.note("offered: backends / interval; the jitter makes waits 90-100% of the interval");
    table.note(
        "prober CPU: the prober runtime's threads (probes, timers, the report channel), \
         not the responders'",
    );
    table.print();
    json!(outcomes
        .iter()
        .map(|o| json!({
            "probe": if o.http { "http" } else { "tcp" },
            "backends": o.backends,
            "interval_ms": o.interval_ms,
            "probes_per_second": o.per_second,
            "failed": o.failed,
            "prober_cpu_cores": o.cpu_share,
            "cpu_us_per_probe": o.cpu_us_per_probe,
            "latency_median_ms": o.latency_median_ms,
            "latency_p99_ms": o.latency_p99_ms,
        }))
        .collect::<Vec<_>>())
}
