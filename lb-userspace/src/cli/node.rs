//! `lbctl node status|drain|undrain`: this LB node in the tier (see docs/tier.md).
//! `drain` withdraws every VIP, waits until the withdrawal is seen (`lo`, and BIRD's
//! table when lbd has `announce.bird_socket`), then until new flows stop arriving, and
//! reports what is left; each wait that runs out has its own exit status.
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use hyper::Method;
use serde::Serialize;

use super::{client::Client, table::Table, Ctx};
use crate::{
    model::config::duration,
    ops::{
        node_view::{DrainResult, NodeView},
        views::StatsView,
    },
};

/// `lbctl node drain`: the withdrawal was not seen within `--withdraw-timeout` (3 is
/// `lbctl service compare`'s: each status means one thing across lbctl).
pub const EXIT_WITHDRAW_UNCONFIRMED: u8 = 4;
/// `lbctl node drain`: new flows still arrived at `--flows-timeout`.
pub const EXIT_FLOWS_CONTINUE: u8 = 5;

/// How often the node is polled while waiting for the withdrawal.
const WITHDRAW_POLL: Duration = Duration::from_millis(100);
/// The window new flows are counted over.
const RATE_WINDOW: Duration = Duration::from_secs(1);

#[derive(Subcommand)]
pub enum NodeCmd {
    /// The node's VIPs (announced, on lo, in BIRD, and why), its drain, and BIRD's
    /// BGP and BFD sessions (with announce.bird_socket).
    Status,
    /// Withdraw every VIP (persisted: it survives restarts), wait until the withdrawal
    /// is seen and new flows stop, and report the flows left.
    #[command(after_help = "Exit status:\n  \
        0   drained, the withdrawal seen and new flows stopped (or --no-wait)\n  \
        1   the drain failed (nothing changed) or another error\n  \
        4   drained, but the withdrawal was not seen within --withdraw-timeout (a VIP \
        still on lo, or BIRD still has it or did not answer)\n  \
        5   drained and withdrawn, but new flows still arrived at --flows-timeout\n  \
        75  lbd did not answer within --timeout")]
    Drain(DrainArgs),
    /// Announce again (each VIP once it has served for announce.hold_up).
    Undrain,
}

#[derive(Args)]
pub struct DrainArgs {
    /// How long to wait until no VIP is on lo (and, with BIRD, in BIRD's table).
    #[arg(long, default_value = "10s", value_parser = duration::parse)]
    pub withdraw_timeout: Duration,
    /// How long to wait, after the withdrawal, for new flows to stop.
    #[arg(long, default_value = "60s", value_parser = duration::parse)]
    pub flows_timeout: Duration,
    /// New flows per second (over all services, measured over 1 s) at or below which
    /// the node counts as quiet.
    #[arg(long, default_value_t = 0.0)]
    pub quiet_rate: f64,
    /// Drain and return at once, waiting for nothing.
    #[arg(long)]
    pub no_wait: bool,
}

/// Why `lbctl node drain` ended with a non-zero status after draining.
#[derive(Debug, thiserror::Error)]
pub enum DrainWaitError {
    #[error("drained, but the withdrawal was not seen within {0:?}: {1}")]
    WithdrawUnconfirmed(Duration, String),
    #[error("drained and withdrawn, but new flows still arrive after {0:?}: {1:.1}/s")]
    FlowsContinue(Duration, f64),
}

impl DrainWaitError {
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::WithdrawUnconfirmed(..) => EXIT_WITHDRAW_UNCONFIRMED,
            Self::FlowsContinue(..) => EXIT_FLOWS_CONTINUE,
        }
    }
}

/// What `lbctl node drain` reports (`-o json` prints this).
#[derive(Debug, Serialize)]
pub struct DrainReport {
    /// False when the node was drained already.
    pub changed: bool,
    /// Milliseconds from the drain to the withdrawal being seen; `None`: not seen.
    pub withdrawn_after_ms: Option<u64>,
    /// New flows per second at the last measurement; `None`: not measured.
    pub new_flows_per_sec: Option<f64>,
    /// Whether that rate was at or below `--quiet-rate`.
    pub quiet: bool,
    /// Flows through this node still open (the services' active flows).
    pub active_flows: u64,
    /// Forward entries in the flow table.
    pub flow_table_entries: u64,
    pub node: NodeView,
}

pub fn run(ctx: &Ctx, cmd: NodeCmd) -> anyhow::Result<()> {
    let client = ctx.client()?;
    match cmd {
        NodeCmd::Status => {
            let node: NodeView = client.get("/v1/node")?;
            ctx.print(&node, || render(&node));
            Ok(())
        }
        NodeCmd::Undrain => {
            let r: DrainResult = client.send(Method::POST, "/v1/node/undrain", None)?;
            ctx.print(&r, || {
                let head = if r.changed {
                    "undrained: each VIP is announced once it has served for announce.hold_up\n"
                } else {
                    "no change: the node was not drained through the API\n"
                };
                format!("{head}{}", render(&r.node))
            });
            Ok(())
        }
        NodeCmd::Drain(args) => drain(ctx, &client, &args),
    }
}

fn drain(ctx: &Ctx, client: &Client, args: &DrainArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let r: DrainResult = client.send(Method::POST, "/v1/node/drain", None)?;
    let mut report = DrainReport {
        changed: r.changed,
        withdrawn_after_ms: None,
        new_flows_per_sec: None,
        quiet: false,
        active_flows: 0,
        flow_table_entries: 0,
        node: r.node,
    };
    if args.no_wait {
        ctx.print(&report, || render_report(&report));
        return Ok(());
    }
    // The withdrawal: lbd's loop removes the /32s at its next tick.
    let deadline = started + args.withdraw_timeout;
    while !report.node.withdrawn_everywhere() && Instant::now() < deadline {
        std::thread::sleep(WITHDRAW_POLL);
        report.node = client.get("/v1/node")?;
    }
    if !report.node.withdrawn_everywhere() {
        let why = unconfirmed(&report.node);
        ctx.print(&report, || render_report(&report));
        return Err(DrainWaitError::WithdrawUnconfirmed(args.withdraw_timeout, why).into());
    }
    report.withdrawn_after_ms = Some(started.elapsed().as_millis() as u64);
    // New flows: counted over a window, until quiet or the timeout.
    let deadline = Instant::now() + args.flows_timeout;
    let (mut before, mut at) = (flows(client)?, Instant::now());
    loop {
        std::thread::sleep(RATE_WINDOW);
        let now = flows(client)?;
        let elapsed = at.elapsed().as_secs_f64();
        let rate = now.0.saturating_sub(before.0) as f64 / elapsed;
        report.new_flows_per_sec = Some(rate);
        report.active_flows = now.1;
        report.flow_table_entries = now.2;
        report.quiet = rate <= args.quiet_rate;
        if report.quiet || Instant::now() >= deadline {
            break;
        }
        (before, at) = (now, Instant::now());
    }
    ctx.print(&report, || render_report(&report));
    if !report.quiet {
        let rate = report.new_flows_per_sec.unwrap_or_default();
        return Err(DrainWaitError::FlowsContinue(args.flows_timeout, rate).into());
    }
    Ok(())
}

/// (flows created, active flows, flow-table entries), summed over services.
fn flows(client: &Client) -> anyhow::Result<(u64, u64, u64)> {
    let stats: StatsView = client.get("/v1/stats")?;
    let created = stats.services.iter().map(|s| s.counts.connections).sum();
    let active = stats.services.iter().map(|s| s.counts.active_flows).sum();
    Ok((created, active, stats.flow_table_entries))
}

/// What is still not withdrawn, for the error.
fn unconfirmed(node: &NodeView) -> String {
    let mut left = Vec::new();
    for v in &node.vips {
        if v.announced || v.on_lo {
            left.push(format!("{} still on lo", v.vip));
        } else if node.bird.is_some() && v.in_bird != Some(false) {
            left.push(format!("{} not confirmed gone from BIRD", v.vip));
        }
    }
    if let Some(error) = node.bird.as_ref().and_then(|b| b.error.as_ref()) {
        left.push(format!("BIRD: {error}"));
    }
    left.join("; ")
}

fn yes(b: bool) -> String {
    if b { "yes" } else { "no" }.into()
}

fn render_report(r: &DrainReport) -> String {
    let mut out = String::from(if r.changed {
        "drained: every VIP withdrawn\n"
    } else {
        "already drained\n"
    });
    if let Some(ms) = r.withdrawn_after_ms {
        let seen = if r.node.bird.is_some() {
            "lo and BIRD"
        } else {
            "lo"
        };
        out.push_str(&format!("withdrawal seen ({seen}) after {ms} ms\n"));
    }
    if let Some(rate) = r.new_flows_per_sec {
        out.push_str(&format!(
            "new flows: {rate:.1}/s{}; flows still open: {} (flow table entries: {})\n",
            if r.quiet { " (quiet)" } else { "" },
            r.active_flows,
            r.flow_table_entries
        ));
    }
    out.push_str(&render(&r.node));
    out
}

fn render(node: &NodeView) -> String {
    let mut out = match (node.drained_by_config, node.drained_since) {
        (true, _) => "node: drained (announce.drained in the config file)\n".to_string(),
        (false, Some(since)) => {
            format!("node: drained through the API since {since} (Unix seconds)\n")
        }
        (false, None) => "node: not drained\n".to_string(),
    };
    let mut t = Table::new(&["VIP", "ANNOUNCED", "ON LO", "IN BIRD", "SERVICES", "WHY"]);
    for v in &node.vips {
        t.row(vec![
            v.vip.to_string(),
            yes(v.announced),
            yes(v.on_lo),
            v.in_bird.map(yes).unwrap_or_else(|| "-".into()),
            v.services.join(","),
            v.why.clone(),
        ]);
    }
    out.push_str(&t.render());
    let Some(bird) = &node.bird else {
        out.push_str("BIRD: not configured (announce.bird_socket)\n");
        return out;
    };
    match &bird.error {
        Some(e) => out.push_str(&format!("BIRD at {}: {e}\n", bird.socket)),
        None => out.push_str(&format!("BIRD at {}: reachable\n", bird.socket)),
    }
    if !bird.protocols.is_empty() {
        let mut t = Table::new(&["PROTOCOL", "PROTO", "STATE", "SINCE", "INFO"]);
        for p in bird.protocols.iter().filter(|p| p.proto == "BGP") {
            t.row(vec![
                p.name.clone(),
                p.proto.clone(),
                p.state.clone(),
                p.since.clone(),
                p.info.clone(),
            ]);
        }
        out.push_str(&t.render());
    }
    if !bird.bfd_sessions.is_empty() {
        let mut t = Table::new(&["BFD PEER", "INTERFACE", "STATE", "SINCE"]);
        for s in &bird.bfd_sessions {
            t.row(vec![
                s.address.clone(),
                s.interface.clone(),
                s.state.clone(),
                s.since.clone(),
            ]);
        }
        out.push_str(&t.render());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::exit_code;

    #[test]
    fn each_drain_wait_that_runs_out_has_its_own_exit_status() {
        let unconfirmed = anyhow::Error::from(DrainWaitError::WithdrawUnconfirmed(
            Duration::from_secs(10),
            "10.0.0.100 not confirmed gone from BIRD".into(),
        ));
        assert_eq!(exit_code(&unconfirmed), EXIT_WITHDRAW_UNCONFIRMED);
        assert_eq!(
            unconfirmed.to_string(),
            "drained, but the withdrawal was not seen within 10s: 10.0.0.100 not confirmed \
             gone from BIRD"
        );
        let flows =
            anyhow::Error::from(DrainWaitError::FlowsContinue(Duration::from_secs(60), 2.5));
        assert_eq!(exit_code(&flows), EXIT_FLOWS_CONTINUE);
        assert_eq!(
            flows.to_string(),
            "drained and withdrawn, but new flows still arrive after 60s: 2.5/s"
        );
    }
}
