//! The nightly toolchain with `rust-src`: the eBPF crate is built for
//! `bpfel-unknown-none` with `-Z build-std=core`, which compiles `core` from source.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::{Need, Step};
use crate::cmd;

pub struct RustSrc;

/// The nightly toolchain's sysroot, e.g. `~/.rustup/toolchains/nightly-<host>`.
pub fn nightly_sysroot() -> Result<PathBuf> {
    let out = cmd::capture(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))
        .context("the nightly toolchain is not usable (is rustup installed?)")?;
    Ok(PathBuf::from(out.trim()))
}

fn nightly_present() -> bool {
    cmd::succeeds(Command::new("rustc").args(["+nightly", "--version"]))
}

impl Step for RustSrc {
    fn name(&self) -> String {
        "rust-src for the nightly toolchain".into()
    }

    fn needed_for(&self) -> Need {
        Need::Build
    }

    fn check(&self) -> bool {
        nightly_sysroot()
            .map(|sysroot| sysroot.join("lib/rustlib/src/rust/library/core").is_dir())
            .unwrap_or(false)
    }

    fn action(&self) -> String {
        if nightly_present() {
            "adding the rust-src component".into()
        } else {
            "installing the nightly toolchain (minimal profile) with rust-src".into()
        }
    }

    fn apply(&self) -> Result<()> {
        if nightly_present() {
            return cmd::run(Command::new("rustup").args([
                "component",
                "add",
                "rust-src",
                "--toolchain",
                "nightly",
            ]));
        }
        let install = cmd::run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]));
        if let Err(err) = install {
            bail!(
                "the nightly toolchain is missing and could not be installed: {err:#}\n\
                 the eBPF crate needs it (with rust-src); install it with \
                 `rustup toolchain install nightly --component rust-src`"
            );
        }
        Ok(())
    }
}
