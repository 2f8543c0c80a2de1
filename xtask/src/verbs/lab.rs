//! `cargo xtask lab [--keep] [ARGS…]`: build, then run the namespace lab (`lb-lab`, a
//! binary of the lb-tests package) with `LBD_BIN` naming the `lbd` it should start.

use anyhow::{bail, Result};
use clap::Args;

use super::build::cargo_build;
use crate::setup::{self, Need, Verbosity};
use crate::{cmd, paths};

#[derive(Args)]
pub struct LabArgs {
    /// Keep the lab running until Ctrl-C and print how to reach it (lb-lab --keep).
    #[arg(long)]
    pub keep: bool,
    /// Passed on to lb-lab unchanged.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    pub args: Vec<String>,
}

pub fn main(lab: LabArgs) -> Result<()> {
    setup::ensure(&[Need::Build, Need::Run], Verbosity::Quiet)?;
    for mut build in cargo_build(false)? {
        cmd::run(&mut build)?;
    }

    let bin_dir = paths::target_dir()?.join("debug");
    let lab_bin = bin_dir.join("lb-lab");
    if !lab_bin.is_file() {
        bail!(
            "{} was not built: the lb-tests package (tests/Cargo.toml) needs a `lb-lab` bin target",
            lab_bin.display()
        );
    }
    let mut run = std::process::Command::new(&lab_bin);
    if lab.keep {
        run.arg("--keep");
    }
    run.args(&lab.args)
        .env("LBD_BIN", bin_dir.join("lbd"))
        .env("PATH", paths::path_with_cargo_bin()?);
    Err(cmd::exec(&mut run))
}
