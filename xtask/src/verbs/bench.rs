//! `cargo xtask bench [ARGS…]`: optimised build, then the benchmarks (`lb-bench`, a binary
//! of the lb-tests package): per-packet cost through BPF_PROG_TEST_RUN, its growth with
//! flow-table fill and backend count, control-plane costs, and end-to-end rates in the
//! namespace lab beside HAProxy and nftables. It prints tables and writes the same
//! figures to `<target dir>/bench/latest.json`.

use anyhow::{bail, Result};
use clap::Args;

use super::build::cargo_build;
use crate::setup::{self, Need, Verbosity};
use crate::{cmd, paths};

#[derive(Args)]
pub struct BenchArgs {
    /// Passed on to lb-bench unchanged (`--only packet,fill,control,probes,e2e`, `--calls N`,
    /// `--rounds R`, `--e2e-rounds R`, `--e2e-seconds S`, ...; `--help` lists them).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    pub args: Vec<String>,
}

pub fn main(bench: BenchArgs) -> Result<()> {
    // Run: namespaces, haproxy and nft for the end-to-end comparison, bpffs.
    setup::ensure(&[Need::Build, Need::Run], Verbosity::Quiet)?;
    for mut build in cargo_build(true)? {
        cmd::run(&mut build)?;
    }
    let target = paths::target_dir()?;
    let release = target.join("release");
    let bench_bin = release.join("lb-bench");
    if !bench_bin.is_file() {
        bail!("{} was not built", bench_bin.display());
    }
    let mut run = std::process::Command::new(&bench_bin);
    // The end-to-end part runs this optimised lbd, not a debug one found elsewhere.
    run.env("LBD_BIN", release.join("lbd"))
        .arg("--json")
        .arg(target.join("bench").join("latest.json"))
        .args(&bench.args);
    Err(cmd::exec(&mut run))
}
