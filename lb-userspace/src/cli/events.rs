//! `lbctl events [--follow [--for 1h]] [--since SEQ] [--service S]`: lbd's lifecycle
//! events (a backend healthy or unhealthy, draining, drained with no flows left,
//! deregistered; a zone drained or undrained), one line each, as they come with
//! `--follow`; `-o json` prints the API's JSON lines.
use std::{io::Write, time::Duration};

use anyhow::Context as _;
use clap::Args;

use super::{segment, Ctx, Output};
use crate::{
    model::config::duration,
    ops::events::view::{EventLine, MAX_FOLLOW},
};

#[derive(Args)]
pub struct EventsArgs {
    /// Keep printing new events as lbd notes them.
    #[arg(long)]
    pub follow: bool,
    /// With --follow: how long (at most 1h; lbd ends the answer then).
    #[arg(long = "for", default_value = "1h", value_parser = duration::parse)]
    pub duration: Duration,
    /// Only events numbered after SEQ (the first column).
    #[arg(long, default_value_t = 0)]
    pub since: u64,
    /// Only this service's events.
    #[arg(long)]
    pub service: Option<String>,
}

pub fn run(ctx: &Ctx, args: EventsArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        !args.duration.is_zero() && args.duration <= MAX_FOLLOW,
        "--for: {} is out of range (more than 0, at most 1h)",
        duration::format(args.duration)
    );
    let mut path = format!("/v1/events?since={}", args.since);
    if let Some(service) = &args.service {
        path.push_str(&format!("&service={}", segment(service)));
    }
    let lasts = if args.follow {
        path.push_str(&format!(
            "&follow=1&for={}",
            duration::format(args.duration)
        ));
        args.duration
    } else {
        Duration::ZERO
    };
    let mut out = std::io::stdout().lock();
    let mut cut_off = None;
    ctx.client()?.stream_get_lines(&path, lasts, |line| {
        let value: serde_json::Value =
            serde_json::from_slice(line).context("an unexpected events line")?;
        if let Some(error) = value.get("error").and_then(|e| e.as_str()) {
            cut_off = Some(error.to_string());
            return Ok(());
        }
        match ctx.output {
            Output::Json => out.write_all(line)?,
            Output::Table => {
                let e: EventLine =
                    serde_json::from_value(value).context("an unexpected events line")?;
                write!(out, "{e}")?;
            }
        }
        // Each event as it comes: a script reading the pipe sees it at once.
        out.write_all(b"\n")?;
        out.flush()?;
        Ok(())
    })?;
    match cut_off {
        Some(error) => anyhow::bail!("{error}"),
        None => Ok(()),
    }
}
