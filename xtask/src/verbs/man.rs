//! `cargo xtask man [--release]`: the manual pages of `lbd` and `lbctl`, rendered from
//! their clap definitions by lb-userspace's `man_pages` example, into
//! `<target dir>/man/` (`lbd.8`, `lbctl.1` and a page per `lbctl` subcommand).

use std::path::PathBuf;
use std::process::Command;

use anyhow::Result;

use crate::setup::{self, Need, Verbosity};
use crate::{cmd, paths};

/// Where the pages go.
pub fn man_dir() -> Result<PathBuf> {
    Ok(paths::target_dir()?.join("man"))
}

/// `cargo run` of the example that writes the pages into `dir`.
pub fn cargo_man(release: bool, dir: &std::path::Path) -> Result<Command> {
    let mut run = paths::cargo()?;
    run.args([
        "run",
        "--quiet",
        "-p",
        "lb-userspace",
        "--example",
        "man_pages",
    ]);
    if release {
        run.arg("--release");
    }
    run.arg("--").arg(dir);
    Ok(run)
}

pub fn main(release: bool) -> Result<()> {
    // The example links lb-userspace, whose build script builds the eBPF object.
    setup::ensure(&[Need::Build], Verbosity::Quiet)?;
    write(release)
}

/// The pages, once the toolchain is known to be set up.
pub fn write(release: bool) -> Result<()> {
    cmd::run(&mut cargo_man(release, &man_dir()?)?)
}
