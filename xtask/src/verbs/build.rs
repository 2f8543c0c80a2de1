//! `cargo xtask build [--release]`: the toolchain set-up if anything is missing, then
//! every binary of the workspace (the userspace build script builds the eBPF object
//! with bpf-linker, which is why `$CARGO_HOME/bin` goes on `PATH`), then the manual
//! pages (see `man`).

use std::process::Command;

use anyhow::Result;

use crate::setup::{self, Need, Verbosity};
use crate::{cmd, paths};

use super::man;

/// `cargo build` for the host crates; lb-ebpf is `no_std` for the BPF target and is
/// built by lb-userspace's build script instead.
pub fn cargo_build(release: bool) -> Result<Command> {
    let mut build = paths::cargo()?;
    build.args(["build", "--workspace", "--exclude", "lb-ebpf", "--bins"]);
    if release {
        build.arg("--release");
    }
    Ok(build)
}

pub fn main(release: bool) -> Result<()> {
    setup::ensure(&[Need::Build], Verbosity::Quiet)?;
    cmd::run(&mut cargo_build(release)?)?;
    man::write(release)
}
