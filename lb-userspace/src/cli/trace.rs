//! `lbctl trace <service> [--sample N] [--for 30s]`: one line per traced packet (or one
//! JSON object per line with `-o json`) until the trace ends.
use std::{io::Write, time::Duration};

use anyhow::Context as _;
use clap::Args;
use serde_json::json;

use super::{segment, Ctx, Output};
use crate::{model::config::duration, ops::trace::view::TraceLine};

#[derive(Args)]
pub struct TraceArgs {
    /// The service to trace.
    pub service: String,
    /// Trace 1 in N of its packets.
    #[arg(long, default_value_t = 1)]
    pub sample: u32,
    /// How long (at most 10m); the trace is switched off after it, or when lbctl exits.
    #[arg(long = "for", default_value = "30s", value_parser = duration::parse)]
    pub duration: Duration,
}

pub fn run(ctx: &Ctx, args: TraceArgs) -> anyhow::Result<()> {
    let body = json!({
        "sample": args.sample,
        "duration": duration::format(args.duration),
    });
    let path = format!("/v1/services/{}/trace", segment(&args.service));
    let mut out = std::io::stdout().lock();
    let mut count = 0u64;
    ctx.client()?
        .stream_lines(&path, &body, args.duration, |line| {
            count += 1;
            match ctx.output {
                Output::Json => out.write_all(line)?,
                Output::Table => {
                    let l: TraceLine =
                        serde_json::from_slice(line).context("an unexpected trace line")?;
                    write!(out, "{l}")?;
                }
            }
            // Each packet as it comes: a reader piping into grep sees it at once.
            out.write_all(b"\n")?;
            out.flush()?;
            Ok(())
        })?;
    eprintln!("trace of {} ended: {count} packets", args.service);
    Ok(())
}
