//! End to end in the namespace lab: new connections per second, keep-alive requests per
//! second and bulk throughput from the client namespace, through the LB namespace, to
//! the backends, for each [`Variant`] (straight to a backend as the ceiling, `lbd`'s
//! XDP, HAProxy, nftables DNAT), with the CPU each spends ([`cpu`] says how it is
//! attributed).
//!
//! One lab, one set of backends ([`server`]) and one client ([`load`]) serve every
//! variant. Rounds interleave the variants (the order rotates each round), so that a
//! neighbour's burst of CPU use hits all of them alike; each figure is the median over
//! rounds, and ratios are taken within a round before the median.
pub mod cpu;
pub mod haproxy;
pub mod load;
pub mod nft;
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
use super::{
    stats::median_f64,
    table::{fixed, percent, Table},
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
enum Workload {
    Connections,
    KeepAlive,
    Bulk,
}

impl Workload {
    const ALL: [Workload; 3] = [Workload::Connections, Workload::KeepAlive, Workload::Bulk];

    fn key(self) -> &'static str {
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
    fn units(self, r: &LoadResult) -> f64 {
        match self {
            Workload::Bulk => r.bytes as f64 / 1e9,
            _ => r.ok as f64,
        }
    }

    fn rate(self, r: &LoadResult) -> f64 {
        match self {
            Workload::Bulk => r.bits_per_second() / 1e9,
            _ => r.per_second(),
        }
    }
}

struct Sample {
    variant: Variant,
    workload: Workload,
    round: usize,
    load: LoadResult,
    cpu: Usage,
}

impl Sample {
    /// CPU per unit: microseconds per connection or request, seconds per GB.
    fn cpu_per_unit(&self, ns: u64) -> f64 {
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
        out.insert(workload.key().into(), summarise(opts, &samples, workload));
    }
    out.insert(
        "xdp_check".into(),
        through_xdp(xdp_connections, &xdp_counted),
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

/// Shows that the VIP traffic was XDP's: the LB namespace has no route to the VIP, so a
/// connection to it can only succeed if the XDP program rewrote it, and lbd's counters
/// must have seen it.
fn through_xdp(connections: u64, counted: &LbdCounters) -> Value {
    let mut t = Table::new(
        "end to end: the VIP traffic went through XDP",
        &["check", "value"],
    );
    t.row(vec![
        "connections completed through the VIP while lbd ran".into(),
        connections.to_string(),
    ]);
    t.row(vec![
        "new flows counted by the XDP program".into(),
        counted.new_flows.to_string(),
    ]);
    let packets = counted.packets_to_backend + counted.packets_to_client;
    t.row(vec![
        "packets it forwarded (to backends + to the client)".into(),
        packets.to_string(),
    ]);
    t.note("the LB namespace has no route to the VIP: without XDP no VIP connection completes");
    t.note(
        "a client port reused within one lbd run (TIME_WAIT reuse) meets its old flow entry, \
         so new flows can be fewer than connections",
    );
    t.print();
    json!({
        "connections": connections,
        "new_flows_counted": counted.new_flows,
        "packets_to_backend": counted.packets_to_backend,
        "packets_to_client": counted.packets_to_client,
    })
}

/// Figures of one variant in one workload, medians over rounds.
struct Summary {
    rate: f64,
    vs_ceiling: f64,
    cpu_per_unit: f64,
    lb_over_ceiling: f64,
    lb_process: f64,
    ok: u64,
    failed: u64,
    others_cores: f64,
    first_error: Option<String>,
}

fn summary(samples: &[Sample], workload: Workload, variant: Variant) -> Summary {
    let of = |v: Variant| -> Vec<&Sample> {
        samples
            .iter()
            .filter(|s| s.workload == workload && s.variant == v)
            .collect()
    };
    let mine = of(variant);
    let ceiling = of(Variant::Direct);
    let paired = |f: &dyn Fn(&Sample, &Sample) -> f64| -> f64 {
        let v: Vec<f64> = mine
            .iter()
            .filter_map(|s| ceiling.iter().find(|c| c.round == s.round).map(|c| f(s, c)))
            .collect();
        median_f64(&v)
    };
    let each = |f: &dyn Fn(&Sample) -> f64| -> f64 {
        median_f64(&mine.iter().map(|s| f(s)).collect::<Vec<_>>())
    };
    Summary {
        rate: each(&|s| workload.rate(&s.load)),
        vs_ceiling: paired(&|s, c| workload.rate(&s.load) / workload.rate(&c.load)),
        cpu_per_unit: each(&|s| s.cpu_per_unit(s.cpu.total_ns())),
        lb_over_ceiling: paired(&|s, c| {
            s.cpu_per_unit(s.cpu.total_ns()) - c.cpu_per_unit(c.cpu.total_ns())
        }),
        lb_process: each(&|s| s.cpu_per_unit(s.cpu.lb_ns)),
        ok: mine.iter().map(|s| s.load.ok).sum(),
        failed: mine.iter().map(|s| s.load.failed).sum(),
        others_cores: each(&|s| s.cpu.others_cores()),
        first_error: mine.iter().find_map(|s| s.load.first_error.clone()),
    }
}

fn summarise(opts: &Options, samples: &[Sample], workload: Workload) -> Value {
    let (title, rate_unit, cpu_unit, concurrency) = match workload {
        Workload::Connections => (
            "new connections per second (one request per connection)",
            "conn/s",
            "us/conn",
            format!("{} client threads", opts.conn_workers),
        ),
        Workload::KeepAlive => (
            "keep-alive requests per second",
            "req/s",
            "us/req",
            format!(
                "{} connections, one request in flight each",
                opts.keepalive_conns
            ),
        ),
        Workload::Bulk => (
            "bulk throughput, backend -> client",
            "Gbit/s",
            "s/GB",
            format!("{} streams", opts.bulk_streams),
        ),
    };
    let cpu_all = format!("CPU {cpu_unit}");
    let cpu_lb = format!("LB {cpu_unit}");
    let cpu_proc = format!("LB proc {cpu_unit}");
    let mut table = Table::new(
        format!(
            "end to end: {title}; {concurrency}, {} rounds x {} s",
            opts.rounds, opts.seconds
        ),
        &[
            "variant",
            rate_unit,
            "vs ceiling",
            &cpu_all,
            &cpu_lb,
            &cpu_proc,
            "ok",
            "failed",
        ],
    );
    let decimals = if workload == Workload::Bulk { 3 } else { 1 };
    let mut variants = serde_json::Map::new();
    let mut others = Vec::new();
    for variant in Variant::ALL {
        let s = summary(samples, workload, variant);
        others.push(s.others_cores);
        table.row(vec![
            variant.label().into(),
            fixed(s.rate, if workload == Workload::Bulk { 2 } else { 0 }),
            percent(s.vs_ceiling),
            fixed(s.cpu_per_unit, decimals),
            fixed(s.lb_over_ceiling, decimals),
            if variant == Variant::Haproxy || variant == Variant::Xdp {
                fixed(s.lb_process, decimals)
            } else {
                "-".into()
            },
            s.ok.to_string(),
            s.failed.to_string(),
        ]);
        if let Some(e) = &s.first_error {
            table.note(format!("{}: first failure: {e}", variant.key()));
        }
        variants.insert(
            variant.key().into(),
            json!({
                "label": variant.label(),
                "rate": s.rate, "rate_unit": rate_unit, "vs_ceiling": s.vs_ceiling,
                "cpu_per_unit": s.cpu_per_unit, "lb_cpu_over_ceiling_per_unit": s.lb_over_ceiling,
                "lb_process_cpu_per_unit": s.lb_process, "cpu_unit": cpu_unit,
                "ok": s.ok, "failed": s.failed, "other_load_cores": s.others_cores,
            }),
        );
    }
    table.note(
        "vs ceiling: median of the per-round ratios; the ceiling is one backend, the VIP \
         spreads over all, and with few requests in flight a rate is bound by latency, so a \
         VIP can beat the ceiling",
    );
    table.note(
        "CPU = all CPU of client, backends, LB process and ksoftirqd per unit; LB = CPU minus \
         the ceiling's in the same round (what the LB adds to routing); LB proc = the LB \
         process alone (lbd is idle while XDP forwards)",
    );
    table.note(format!(
        "the rest of the machine (other engineers) used {} cores on median meanwhile",
        fixed(median_f64(&others), 2)
    ));
    table.print();
    Value::Object(variants)
}
