//! End to end in the namespace lab: new connections per second, keep-alive requests per
//! second and bulk throughput from the client namespace, through the LB namespace, to
//! the backends, for each [`Variant`] (straight to a backend as the ceiling, `lbd`'s
//! XDP, HAProxy, nftables DNAT; and the bulk download through each of `lbd`'s
//! direct-server-return modes), with the CPU each spends ([`cpu`] says how it is
//! attributed).
//!
//! Beside those latency-bound rows (a few blocking connections, [`load`]), the
//! saturated rows run Debian's `wrk` and `iperf3` ([`standard`]) through the same
//! variants.
//!
//! [`run_offloaded`] runs the same rows in a second lab whose veths keep their transmit
//! checksum and segmentation offloads (as a container's do; the first lab turns them off
//! for XDP): straight, `lbd` at tc, HAProxy and nftables.
//!
//! One lab, one set of backends ([`server`], and one `iperf3 -s` on backend 0) serves
//! every variant of a run. Rounds interleave the variants (the order rotates each round), so that a
//! neighbour's burst of CPU use hits all of them alike; each figure is the median over
//! rounds, and ratios are taken within a round before the median ([`report`]).
pub mod cpu;
pub mod direct_return;
pub mod haproxy;
pub mod load;
pub mod nft;
pub mod profile;
pub mod report;
pub mod server;
pub mod standard;
pub mod variants;

use std::{
    net::SocketAddrV4,
    path::{Path, PathBuf},
    time::Duration,
};

use serde_json::{json, Value};

use self::{
    cpu::{Meter, Usage},
    load::LoadResult,
    server::BenchServer,
    variants::{activate, iperf_server, lbd_counters, Active, LbdCounters, Variant},
};
use crate::{
    netns,
    process::{lbd_path, Daemon},
    running_lb::BACKEND_PORT,
    topology::{Lab, LabSpec},
};

pub struct Options {
    pub rounds: usize,
    /// Length of each load run.
    pub seconds: f64,
    /// Client threads opening connections one after another.
    pub conn_workers: usize,
    /// Long-lived connections for the keep-alive run.
    pub keepalive_conns: usize,
    /// Concurrent streams for the bulk run.
    pub bulk_streams: usize,
    pub backends: usize,
    /// Rounds (the first ones) that also run the saturated rows, and their length.
    pub saturated_rounds: usize,
    pub saturated_seconds: f64,
    /// If set, one more, unrecorded round of the profiled rows ([`profile::PROFILED`]) under
    /// `perf record -a -g`, one file per variant and row in this directory.
    pub profile: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    Connections,
    KeepAlive,
    Bulk,
    /// wrk, a new connection per request.
    WrkClose,
    /// wrk, keep-alive.
    WrkKeepAlive,
    /// iperf3, one stream, client -> server.
    IperfUpload,
    /// iperf3, one stream, server -> client.
    IperfDownload,
}

impl Workload {
    /// The latency-bound rows.
    pub const ALL: [Workload; 3] = [Workload::Connections, Workload::KeepAlive, Workload::Bulk];
    /// The saturated rows.
    pub const SATURATED: [Workload; 4] = [
        Workload::WrkClose,
        Workload::WrkKeepAlive,
        Workload::IperfUpload,
        Workload::IperfDownload,
    ];

    pub fn key(self) -> &'static str {
        match self {
            Workload::Connections => "connections",
            Workload::KeepAlive => "keepalive",
            Workload::Bulk => "bulk",
            Workload::WrkClose => "wrk_close",
            Workload::WrkKeepAlive => "wrk_keepalive",
            Workload::IperfUpload => "iperf3_upload",
            Workload::IperfDownload => "iperf3_download",
        }
    }

    pub fn saturated(self) -> bool {
        Workload::SATURATED.contains(&self)
    }

    pub fn run(self, opts: &Options, ns: &str, active: &Active) -> LoadResult {
        let d = Duration::from_secs_f64(opts.seconds);
        let sat = Duration::from_secs_f64(opts.saturated_seconds);
        let target = active.target;
        match self {
            Workload::Connections => load::connections(ns, target, opts.conn_workers, d),
            Workload::KeepAlive => load::keepalive(ns, target, opts.keepalive_conns, d),
            Workload::Bulk => load::bulk(ns, target, opts.bulk_streams, d),
            Workload::WrkClose => standard::wrk(ns, target, true, sat),
            Workload::WrkKeepAlive => standard::wrk(ns, target, false, sat),
            Workload::IperfUpload => standard::iperf3(ns, active.iperf_target, false, sat),
            Workload::IperfDownload => standard::iperf3(ns, active.iperf_target, true, sat),
        }
    }

    /// The unit a rate and a CPU cost are given per: a connection, a request, or a GB.
    pub fn units(self, r: &LoadResult) -> f64 {
        if self.bytes_based() {
            r.bytes as f64 / 1e9
        } else {
            r.ok as f64
        }
    }

    pub fn rate(self, r: &LoadResult) -> f64 {
        if self.bytes_based() {
            r.bits_per_second() / 1e9
        } else {
            r.per_second()
        }
    }

    pub fn bytes_based(self) -> bool {
        matches!(
            self,
            Workload::Bulk | Workload::IperfUpload | Workload::IperfDownload
        )
    }

    /// Connections the run held or opened, for the check that lbd counted them.
    fn connections(self, opts: &Options, r: &LoadResult) -> u64 {
        match self {
            Workload::Connections | Workload::WrkClose => r.ok,
            Workload::KeepAlive => opts.keepalive_conns as u64,
            Workload::Bulk => opts.bulk_streams as u64,
            Workload::WrkKeepAlive => standard::WRK_CONNECTIONS as u64,
            // Control and data connections; on another service than the one counted.
            Workload::IperfUpload | Workload::IperfDownload => 0,
        }
    }
}

pub struct Sample {
    pub variant: Variant,
    pub workload: Workload,
    pub round: usize,
    pub load: LoadResult,
    pub cpu: Usage,
}

impl Sample {
    /// CPU per unit: microseconds per connection or request, seconds per GB.
    pub fn cpu_per_unit(&self, ns: u64) -> f64 {
        let scale = if self.workload.bytes_based() {
            1e9
        } else {
            1e3
        };
        ns as f64 / scale / self.workload.units(&self.load)
    }
}

/// Lab settings that let a few seconds of new connections run without running out of
/// ephemeral ports (the servers close first, so the TIME_WAIT states are theirs).
fn tune(lab: &Lab) {
    for ns in [lab.client_ns(), lab.lb_ns()] {
        netns::ns_sysctl(ns, "net.ipv4.ip_local_port_range", "1024 65535");
        netns::ns_sysctl(ns, "net.ipv4.tcp_tw_reuse", "1");
    }
}

/// Worker threads per backend server: every backend can serve all client connections at
/// once, wherever they land.
pub fn server_workers(opts: &Options) -> usize {
    opts.conn_workers
        .max(opts.keepalive_conns)
        .max(opts.bulk_streams)
        .max(standard::WRK_CONNECTIONS)
        + 2
}

/// The XDP lab: every [`Variant::ALL`].
pub fn run(opts: &Options) -> Value {
    run_in(opts, false)
}

/// The lab with offloads on: [`Variant::OFFLOADED`], `lbd` at tc.
pub fn run_offloaded(opts: &Options) -> Value {
    run_in(opts, true)
}

fn run_in(opts: &Options, offloaded: bool) -> Value {
    let spec = LabSpec::with_backends(opts.backends).tc(offloaded);
    let lab = Lab::build(&spec);
    let all: &[Variant] = if offloaded {
        &Variant::OFFLOADED
    } else {
        &Variant::ALL
    };
    tune(&lab);
    let workers = server_workers(opts);
    let servers: Vec<BenchServer> = (0..lab.backend_count())
        .map(|i| {
            let addr = SocketAddrV4::new(lab.backend_addr(i), BACKEND_PORT);
            BenchServer::start(lab.backend_ns(i), addr, &lab.backend_spec(i).name, workers)
        })
        .collect();
    let iperf = iperf_server_start(&lab);
    let lbd = lbd_path();

    // Warm-up (not recorded): neighbour entries, page cache, lazily built kernel state.
    {
        let direct = activate(&lab, Variant::Direct, &lbd, workers);
        let _ = load::connections(
            lab.client_ns(),
            direct.target,
            opts.conn_workers,
            Duration::from_millis(500),
        );
    }

    let mut samples = Vec::new();
    let mut xdp_counted = LbdCounters::default();
    let mut xdp_connections = 0u64;
    for round in 0..opts.rounds {
        let mut order = all.to_vec();
        order.rotate_left(round % all.len());
        for variant in order {
            let active = activate(&lab, variant, &lbd, workers);
            let meter = Meter::with_others(active.lb_pid, &[iperf.pid()]);
            let saturated = Workload::SATURATED
                .into_iter()
                .filter(|_| round < opts.saturated_rounds);
            let workloads = Workload::ALL.into_iter().chain(saturated);
            for workload in workloads.filter(|w| variant.runs(*w)) {
                let before = meter.snapshot();
                let load = workload.run(opts, lab.client_ns(), &active);
                let cpu = before.until(&meter.snapshot());
                if matches!(variant, Variant::Xdp | Variant::Tc) {
                    xdp_connections += workload.connections(opts, &load);
                }
                samples.push(Sample {
                    variant,
                    workload,
                    round,
                    load,
                    cpu,
                });
            }
            if let Some(log) = active.finish() {
                xdp_counted.add(lbd_counters(&log).unwrap_or_default());
            }
        }
    }
    if let Some(dir) = opts.profile.as_ref().filter(|_| !offloaded) {
        profile::record(opts, &lab, &lbd, dir);
    }
    drop(iperf);
    drop(servers);

    let mut out = serde_json::Map::new();
    let rows = Workload::ALL.into_iter().chain(
        Workload::SATURATED
            .into_iter()
            .filter(|_| opts.saturated_rounds > 0),
    );
    for workload in rows {
        out.insert(
            workload.key().into(),
            report::summarise(opts, &samples, workload, all),
        );
    }
    out.insert(
        "xdp_check".into(),
        report::through_lbd(xdp_connections, &xdp_counted, offloaded),
    );
    out.insert(
        "setup".into(),
        json!({
            "rounds": opts.rounds, "seconds_per_run": opts.seconds,
            "connection_workers": opts.conn_workers, "keepalive_connections": opts.keepalive_conns,
            "bulk_streams": opts.bulk_streams, "backends": opts.backends,
            "saturated_rounds": opts.saturated_rounds, "saturated_seconds": opts.saturated_seconds,
            "wrk_connections": standard::WRK_CONNECTIONS, "wrk_threads": standard::WRK_THREADS,
            "cpu_method": "sum of CPU time of this process (client + backends + their softirq work), \
                           the LB process, and ksoftirqd; LB cost = that per unit minus the same in \
                           the ceiling run of the same round; wrk and the iperf3 client count as \
                           children of this process (RUSAGE_CHILDREN), the iperf3 server by its pid",
        }),
    );
    Value::Object(out)
}

/// What in an end-to-end report (the value of `run`; `Null` if the part did not run)
/// says the harness itself failed: a row with failed runs or none that succeeded, or
/// VIP traffic that lbd's XDP program did not count.
pub fn harness_failures(report: &Value) -> Vec<String> {
    let Some(rows) = report.as_object() else {
        return Vec::new();
    };
    let mut failures = Vec::new();
    for (row, variants) in rows {
        if row == "setup" || row == "xdp_check" {
            continue;
        }
        for (variant, v) in variants.as_object().into_iter().flatten() {
            let (ok, failed) = (v["ok"].as_u64(), v["failed"].as_u64());
            if ok == Some(0) || failed != Some(0) {
                failures.push(format!(
                    "end to end, {row}, {variant}: {} succeeded, {} failed",
                    ok.unwrap_or(0),
                    failed.map_or("?".into(), |f| f.to_string())
                ));
            }
        }
    }
    if report["xdp_check"]["new_flows_counted"].as_u64() == Some(0) {
        failures.push("end to end: lbd's program counted no new flow".into());
    }
    failures
}

/// `iperf3 -s` on backend 0, for every variant's iperf3 rows; stopped on drop.
fn iperf_server_start(lab: &Lab) -> Daemon {
    let addr = iperf_server(lab);
    let (host, port) = (addr.ip().to_string(), addr.port().to_string());
    let mut d = lab.spawn_daemon(
        lab.backend_ns(0),
        Path::new(standard::IPERF3),
        &["-s", "-B", &host, "-p", &port, "--forceflush"],
    );
    d.wait_for_log("Server listening", Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("iperf3 -s on {addr} did not start: {e}"));
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn harness_failures_are_failed_or_empty_rows_and_uncounted_xdp_traffic() {
        let clean = json!({
            "setup": {"rounds": 1},
            "keepalive": {"direct": {"ok": 10, "failed": 0}, "xdp": {"ok": 9, "failed": 0}},
            "xdp_check": {"new_flows_counted": 4},
        });
        assert!(harness_failures(&clean).is_empty());
        assert!(harness_failures(&Value::Null).is_empty());
        let broken = json!({
            "wrk_close": {"direct": {"ok": 10, "failed": 2}, "xdp": {"ok": 0, "failed": 0}},
            "xdp_check": {"new_flows_counted": 0},
        });
        assert_eq!(
            harness_failures(&broken),
            [
                "end to end, wrk_close, direct: 10 succeeded, 2 failed",
                "end to end, wrk_close, xdp: 0 succeeded, 0 failed",
                "end to end: lbd's program counted no new flow",
            ]
        );
    }
}
