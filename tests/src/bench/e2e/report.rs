//! The end-to-end tables and their JSON: per workload, each variant's rate, its ratio to
//! the ceiling and its CPU per unit (medians over rounds, ratios and differences taken
//! within a round first), and the check that the VIP traffic went through XDP.
use serde_json::{json, Value};

use super::{standard, variants::LbdCounters, Options, Sample, Variant, Workload};
use crate::bench::{
    stats::median_f64,
    table::{fixed, percent, Table},
};

/// Shows that the VIP traffic was lbd's: the LB namespace has no route to the VIP, so a
/// connection to it can only succeed if lbd's program (`lb_xdp`, or `lb_tc` in the lab
/// with offloads, `tc`) rewrote it, and lbd's counters must have seen it.
pub fn through_lbd(connections: u64, counted: &LbdCounters, tc: bool) -> Value {
    let hook = if tc { "tc" } else { "XDP" };
    let mut t = Table::new(
        format!("end to end: the VIP traffic went through {hook}"),
        &["check", "value"],
    );
    t.row(vec![
        "connections completed through the VIP while lbd ran".into(),
        connections.to_string(),
    ]);
    t.row(vec![
        format!("new flows counted by the {hook} program"),
        counted.new_flows.to_string(),
    ]);
    let packets = counted.packets_to_backend + counted.packets_to_client;
    t.row(vec![
        "packets it forwarded (to backends + to the client)".into(),
        packets.to_string(),
    ]);
    t.note(format!(
        "the LB namespace has no route to the VIP: without {hook} no VIP connection completes"
    ));
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

/// The table and JSON of `workload` for `variants` (the run's lab's).
pub fn summarise(
    opts: &Options,
    samples: &[Sample],
    workload: Workload,
    variants: &[Variant],
) -> Value {
    let wrk = format!(
        "{} connections on {} threads",
        standard::WRK_CONNECTIONS,
        standard::WRK_THREADS
    );
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
        Workload::WrkClose => (
            "saturated, wrk, a new connection per request (Connection: close)",
            "conn/s",
            "us/conn",
            wrk.clone(),
        ),
        Workload::WrkKeepAlive => (
            "saturated, wrk, keep-alive requests per second",
            "req/s",
            "us/req",
            wrk.clone(),
        ),
        Workload::IperfUpload => (
            "saturated, iperf3 upload, client -> backend",
            "Gbit/s",
            "s/GB",
            "one stream".into(),
        ),
        Workload::IperfDownload => (
            "saturated, iperf3 download (-R), backend -> client",
            "Gbit/s",
            "s/GB",
            "one stream".into(),
        ),
    };
    let (rounds, seconds) = if workload.saturated() {
        (
            opts.saturated_rounds.min(opts.rounds),
            opts.saturated_seconds,
        )
    } else {
        (opts.rounds, opts.seconds)
    };
    let cpu_all = format!("CPU {cpu_unit}");
    let cpu_lb = format!("LB {cpu_unit}");
    let cpu_proc = format!("LB proc {cpu_unit}");
    let mut table = Table::new(
        format!("end to end: {title}; {concurrency}, {rounds} rounds x {seconds} s"),
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
    let decimals = if workload.bytes_based() { 3 } else { 1 };
    let mut json = serde_json::Map::new();
    let mut others = Vec::new();
    for &variant in variants.iter().filter(|v| v.runs(workload)) {
        let s = summary(samples, workload, variant);
        others.push(s.others_cores);
        table.row(vec![
            variant.label().into(),
            fixed(s.rate, if workload.bytes_based() { 2 } else { 0 }),
            percent(s.vs_ceiling),
            fixed(s.cpu_per_unit, decimals),
            fixed(s.lb_over_ceiling, decimals),
            if variant.lb_process() {
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
        json.insert(
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
    Value::Object(json)
}
