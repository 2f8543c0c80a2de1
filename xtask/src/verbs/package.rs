//! `cargo xtask package`: the Debian packages, with cargo-deb: `lbd` and `lbctl` (its
//! contents are listed in lb-userspace's `[package.metadata.deb]`), and `lb-decap` for
//! DSR backends (its variant `lb-decap`). Before cargo-deb runs, the optimised binaries
//! are built and what the package ships besides them is rendered into
//! `<target>/release/package/`: the manual pages, gzipped, and `lbctl`'s shell
//! completions. The packages land in `<target>/debian/`; their paths are printed, lbd's
//! last.
//!
//! `--dev` packages the debug build instead (stripped, faster compression): what the
//! package test installs, in seconds rather than an optimised build's minutes.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::man;
use crate::setup::{self, Need, Verbosity};
use crate::{cmd, paths};

/// (shell, file name the shell looks for)
const COMPLETIONS: &[(&str, &str)] =
    &[("bash", "lbctl"), ("zsh", "_lbctl"), ("fish", "lbctl.fish")];

pub fn main(dev: bool) -> Result<()> {
    setup::ensure(&[Need::Build, Need::Package], Verbosity::Quiet)?;
    let target = paths::target_dir()?;
    let (profile, profile_dir) = if dev {
        ("dev", "debug")
    } else {
        ("release", "release")
    };
    let mut build = paths::cargo()?;
    build.args([
        "build",
        "--profile",
        profile,
        "-p",
        "lb-userspace",
        "--bins",
    ]);
    cmd::run(&mut build)?;

    let built = target.join(profile_dir);
    let staging = built.join("package");
    if staging.exists() {
        fs::remove_dir_all(&staging)
            .with_context(|| format!("removing the old {}", staging.display()))?;
    }
    let man_dir = staging.join("man");
    cmd::run(&mut man::cargo_man(!dev, &man_dir)?)?;
    gzip_pages(&man_dir)?;
    write_completions(&built.join("lbctl"), &staging.join("completions"))?;

    let out = target.join("debian");
    // The backends' package (lb-decap alone: a DSR backend runs neither lbd nor lbctl),
    // then lbd's, whose path is the last line printed.
    for variant in [Some("lb-decap"), None] {
        let mut deb = paths::cargo()?;
        deb.args([
            "deb",
            "-p",
            "lb-userspace",
            "--no-build",
            "--profile",
            profile,
        ]);
        if let Some(variant) = variant {
            deb.args(["--variant", variant]);
        }
        if dev {
            deb.args(["--strip", "--fast"]);
        }
        deb.arg("--output").arg(&out);
        let printed = cmd::capture(&mut deb)?;
        let Some(package) = printed.lines().rev().find(|l| l.trim().ends_with(".deb")) else {
            bail!("cargo deb did not name the package it wrote: {printed}");
        };
        println!("{}", package.trim());
    }
    Ok(())
}

/// `gzip -9n` every page (no name or time stamp in the archive, so the same pages give
/// the same bytes).
fn gzip_pages(dir: &Path) -> Result<()> {
    let pages: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    if pages.is_empty() {
        bail!("no manual pages in {}", dir.display());
    }
    cmd::run(Command::new("gzip").args(["-9nf"]).args(&pages))
}

/// `lbctl completions SHELL` for each shell the package supports.
fn write_completions(lbctl: &Path, dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (shell, file) in COMPLETIONS {
        let script = cmd::capture(Command::new(lbctl).args(["completions", shell]))?;
        let path = dir.join(file);
        fs::write(&path, script).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
