//! End to end in the namespace lab: new connections per second, keep-alive requests per
//! second and bulk throughput from the client namespace, through the LB namespace, to
//! the backends, for each [`Variant`] (straight to a backend as the ceiling, `lbd`'s
//! XDP, HAProxy, nftables DNAT), with the CPU each spends ([`cpu`] says how it is
//! attributed).
//!
//! One lab, one set of backends ([`server`]) and one client ([`load`]) serve every
//! variant. Rounds interleave the variants (the order rotates each round), so that a
//! neighbour's burst of CPU use hits all of them alike; each figure is the median over
//! rounds, and ratios are taken within a round before the median ([`report`]).
pub mod cpu;
pub mod haproxy;
pub mod load;
pub mod nft;
pub mod report;
pub mod server;
pub mod variants;

use std::{net::SocketAddrV4, time::Duration};

use serde_json::{json, Value};

use self::{
    cpu::{Meter, Usage},
    load::LoadResult,
    server::BenchServer,
    variants::{activate, lbd_counters, LbdCounters, Variant},
};
use crate::{
    netns,
    process::lbd_path,
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
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    Connections,
    KeepAlive,
    Bulk,
}

impl Workload {
    pub const ALL: [Workload; 3] = [Workload::Connections, Workload::KeepAlive, Workload::Bulk];

    pub fn key(self) -> &'static str {
        match self {
            Workload::Connections => "connections",
            Workload::KeepAlive => "keepalive",
            Workload::Bulk => "bulk",
        }
    }

    fn run(self, opts: &Options, ns: &str, target: SocketAddrV4) -> LoadResult {
        let d = Duration::from_secs_f64(opts.seconds);
        match self {
            Workload::Connections => load::connections(ns, target, opts.conn_workers, d),
            Workload::KeepAlive => load::keepalive(ns, target, opts.keepalive_conns, d),
            Workload::Bulk => load::bulk(ns, target, opts.bulk_streams, d),
        }
    }

    /// The unit a rate and a CPU cost are given per: a connection, a request, or a GB.
    pub fn units(self, r: &LoadResult) -> f64 {
        match self {
            Workload::Bulk => r.bytes as f64 / 1e9,
            _ => r.ok as f64,
        }
    }

    pub fn rate(self, r: &LoadResult) -> f64 {
        match self {
            Workload::Bulk => r.bits_per_second() / 1e9,
            _ => r.per_second(),
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
        let scale = match self.workload {
            Workload::Bulk => 1e9,
            _ => 1e3,
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

pub fn run(opts: &Options) -> Value {
    let lab = Lab::build(&LabSpec::with_backends(opts.backends));
    tune(&lab);
    // Every backend can serve all client connections at once, wherever they land.
    let workers = opts
        .conn_workers
        .max(opts.keepalive_conns)
        .max(opts.bulk_streams)
        + 2;
    let servers: Vec<BenchServer> = (0..lab.backend_count())
        .map(|i| {
            let addr = SocketAddrV4::new(lab.backend_addr(i), BACKEND_PORT);
            BenchServer::start(lab.backend_ns(i), addr, &lab.backend_spec(i).name, workers)
        })
        .collect();
    let lbd = lbd_path();

    // Warm-up (not recorded): neighbour entries, page cache, lazily built kernel state.
    {
        let direct = activate(&lab, Variant::Direct, &lbd);
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
        let mut order = Variant::ALL;
        order.rotate_left(round % Variant::ALL.len());
        for variant in order {
            let active = activate(&lab, variant, &lbd);
            let meter = Meter::new(active.lb_pid);
            for workload in Workload::ALL {
                let before = meter.snapshot();
                let load = workload.run(opts, lab.client_ns(), active.target);
                let cpu = before.until(&meter.snapshot());
                if variant == Variant::Xdp {
                    xdp_connections += match workload {
                        Workload::Connections => load.ok,
                        Workload::KeepAlive => opts.keepalive_conns as u64,
                        Workload::Bulk => opts.bulk_streams as u64,
                    };
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
    drop(servers);

    let mut out = serde_json::Map::new();
    for workload in Workload::ALL {
        out.insert(
            workload.key().into(),
            report::summarise(opts, &samples, workload),
        );
    }
    out.insert(
        "xdp_check".into(),
        report::through_xdp(xdp_connections, &xdp_counted),
    );
    out.insert(
        "setup".into(),
        json!({
            "rounds": opts.rounds, "seconds_per_run": opts.seconds,
            "connection_workers": opts.conn_workers, "keepalive_connections": opts.keepalive_conns,
            "bulk_streams": opts.bulk_streams, "backends": opts.backends,
            "cpu_method": "sum of CPU time of this process (client + backends + their softirq work), \
                           the LB process, and ksoftirqd; LB cost = that per unit minus the same in \
                           the ceiling run of the same round",
        }),
    );
    Value::Object(out)
}
