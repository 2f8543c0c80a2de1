//! `cargo xtask bench [ARGS…]`: optimised build, then the benchmarks. So far the
//! per-packet part (`lb-bench`, a binary of the lb-tests package): the cost of each
//! data-path case through BPF_PROG_TEST_RUN beside an empty XDP program.

use anyhow::{bail, Result};
use clap::Args;

use super::build::cargo_build;
use crate::setup::{self, Need, Verbosity};
use crate::{cmd, paths};

#[derive(Args)]
pub struct BenchArgs {
    /// Passed on to lb-bench unchanged (`--calls N`, `--rounds R`).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    pub args: Vec<String>,
}

pub fn main(bench: BenchArgs) -> Result<()> {
    setup::ensure(&[Need::Build, Need::Run], Verbosity::Quiet)?;
    cmd::run(&mut cargo_build(true)?)?;
    let bench_bin = paths::target_dir()?.join("release").join("lb-bench");
    if !bench_bin.is_file() {
        bail!("{} was not built", bench_bin.display());
    }
    let mut run = std::process::Command::new(&bench_bin);
    run.args(&bench.args);
    Err(cmd::exec(&mut run))
}
