//! `cargo xtask build [--release]`: the toolchain set-up if anything is missing, then
//! every binary of the workspace (the userspace build script builds the eBPF object
//! with bpf-linker, which is why `$CARGO_HOME/bin` goes on `PATH`), then the manual
//! pages (see `man`).

use std::process::Command;

use anyhow::Result;

use super::man;
use crate::setup::{self, Need, Verbosity};
use crate::{cmd, paths};

/// `cargo build` for the host crates, in two runs: `lbd` and `lbctl` on their own, so
/// that the in-memory data path the tests crate enables (lb-userspace's `fake`
/// feature) is not unified into them; then the other binaries. lb-ebpf is `no_std` for
/// the BPF target and is built by lb-userspace's build script instead.
pub fn cargo_build(release: bool) -> Result<Vec<Command>> {
    let mut product = paths::cargo()?;
    product.args(["build", "-p", "lb-userspace", "--bins"]);
    let mut rest = paths::cargo()?;
    rest.args(["build", "--workspace", "--exclude", "lb-ebpf"]);
    rest.args(["--exclude", "lb-userspace", "--bins"]);
    let mut builds = vec![product, rest];
    if release {
        for build in &mut builds {
            build.arg("--release");
        }
    }
    Ok(builds)
}

pub fn main(release: bool) -> Result<()> {
    setup::ensure(&[Need::Build], Verbosity::Quiet)?;
    for mut build in cargo_build(release)? {
        cmd::run(&mut build)?;
    }
    man::write(release)
}
