//! `cargo xtask run -- ARGS…`: build, then replace this process with `lbd ARGS…`.

use std::process::Command;

use anyhow::{bail, Result};
use clap::Args;

use super::build::cargo_build;
use crate::setup::{self, Need, Verbosity};
use crate::{cmd, paths};

#[derive(Args)]
pub struct RunArgs {
    /// Passed on to lbd unchanged, e.g. `-- --config lb.yaml`.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "LBD_ARGS"
    )]
    pub args: Vec<String>,
}

pub fn main(run: RunArgs) -> Result<()> {
    setup::ensure(&[Need::Build, Need::Run], Verbosity::Quiet)?;
    for mut build in cargo_build(false)? {
        cmd::run(&mut build)?;
    }

    let lbd = paths::target_dir()?.join("debug").join("lbd");
    if !lbd.is_file() {
        bail!("{} was not built", lbd.display());
    }
    Err(cmd::exec(Command::new(&lbd).args(&run.args)))
}
