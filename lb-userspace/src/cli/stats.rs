//! `lbctl stats`: counters per service, backend and zone.
use clap::Args;

use super::{
    backend::state_name,
    table::{bytes, human, rate, Table},
    Ctx,
};
use crate::ops::views::{Counts, StatsView};

#[derive(Args)]
pub struct StatsArgs {
    /// Only this service (and its backends).
    #[arg(long)]
    pub service: Option<String>,
}

pub fn run(ctx: &Ctx, args: StatsArgs) -> anyhow::Result<()> {
    let mut stats: StatsView = ctx.client()?.get("/v1/stats")?;
    if let Some(name) = &args.service {
        anyhow::ensure!(
            stats.services.iter().any(|s| &s.service == name),
            "service `{name}` does not exist"
        );
        stats.services.retain(|s| &s.service == name);
        stats.backends.retain(|b| &b.service == name);
    }
    ctx.print(&stats, || render(&stats));
    Ok(())
}

const COUNT_HEADERS: [&str; 6] = [
    "CONNS>",
    "NEW/S>",
    "ACTIVE>",
    "PKTS IN>",
    "PKTS OUT>",
    "BYTES>",
];

fn counts(c: &Counts) -> Vec<String> {
    vec![
        human(c.connections),
        rate(c.new_flows_per_sec),
        human(c.active_flows),
        human(c.packets_to_backend),
        human(c.packets_to_client),
        bytes(c.bytes_to_backend + c.bytes_to_client),
    ]
}

pub fn render(s: &StatsView) -> String {
    let mut out = String::new();
    let mut t = Table::new(&[&["SERVICE"][..], &COUNT_HEADERS[..]].concat());
    for svc in &s.services {
        let mut row = vec![svc.service.clone()];
        row.extend(counts(&svc.counts));
        t.row(row);
    }
    out.push_str(&t.render());

    let mut t = Table::new(
        &[
            &["BACKEND", "ZONE", "STATE", "HEALTH"][..],
            &COUNT_HEADERS[..],
        ]
        .concat(),
    );
    for b in &s.backends {
        let mut row = vec![
            format!("{}/{}:{}", b.service, b.address, b.port),
            b.zone.clone(),
            state_name(b.state).into(),
            b.health.clone(),
        ];
        row.extend(counts(&b.counts));
        t.row(row);
    }
    out.push('\n');
    out.push_str(&t.render());

    let mut t = Table::new(&[&["ZONE"][..], &COUNT_HEADERS[..]].concat());
    for z in &s.zones {
        let mut row = vec![z.zone.clone()];
        row.extend(counts(&z.counts));
        t.row(row);
    }
    out.push('\n');
    out.push_str(&t.render());
    out.push_str(&format!(
        "\nflow table {}/{} entries ({}/{} in the LRU maps behind the slots), IPv6 {}/{}; rates over the last {:.1}s; PKTS IN = to backends, PKTS OUT = to clients\n",
        s.flow_table_entries,
        s.flow_table_capacity,
        s.flow_table_overflow_entries,
        s.flow_table_overflow_capacity,
        s.flow_table6_entries,
        s.flow_table6_capacity,
        s.rate_interval_secs
    ));
    out
}
