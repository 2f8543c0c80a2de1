//! `lbctl apply -f FILE`: declarative. The file holds `services:` (or is a whole config
//! file, e.g. from `lbctl config dump`); lbd computes the diff against what runs and
//! applies it all or nothing, and this prints the diff.
use std::{io::Read as _, path::PathBuf};

use anyhow::Context as _;
use clap::Args;
use hyper::Method;

use super::Ctx;
use crate::ops::views::ChangeResult;

#[derive(Args)]
pub struct ApplyArgs {
    /// YAML (or JSON) file; `-` reads standard input.
    #[arg(short, long, value_name = "FILE")]
    pub file: PathBuf,
    /// Only show what would change.
    #[arg(long)]
    pub dry_run: bool,
}

pub fn run(ctx: &Ctx, args: ApplyArgs) -> anyhow::Result<()> {
    let text = if args.file.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading standard input")?;
        s
    } else {
        std::fs::read_to_string(&args.file)
            .with_context(|| format!("reading {}", args.file.display()))?
    };
    // YAML is a superset of JSON: one parser for both.
    let doc: serde_json::Value = serde_yaml_ng::from_str(&text)
        .with_context(|| format!("{}: not valid YAML", args.file.display()))?;
    let path = if args.dry_run {
        "/v1/apply?dry_run=true"
    } else {
        "/v1/apply"
    };
    let r: ChangeResult = ctx.client()?.send(Method::POST, path, Some(&doc))?;
    ctx.print(&r, || {
        let mut out: String = r.changes.iter().map(|c| format!("{c}\n")).collect();
        out.push_str(&match (r.changes.len(), r.applied) {
            (0, _) => "no change: the running services already match\n".to_string(),
            (n, true) => format!("applied {n} changes\n"),
            (n, false) => format!("dry run: {n} changes not applied\n"),
        });
        out
    });
    Ok(())
}
