//! Where things are: the workspace, cargo's home and bin folder, the target directory.

use std::env;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::cmd;

/// The workspace root (the folder above this crate).
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one folder below the workspace root")
}

pub fn home() -> Result<PathBuf> {
    match env::var_os("HOME") {
        Some(home) if !home.is_empty() => Ok(PathBuf::from(home)),
        _ => bail!("HOME is not set; it is needed to find cargo's home and the LLVM folder"),
    }
}

/// `$CARGO_HOME`, by default `~/.cargo`.
pub fn cargo_home() -> Result<PathBuf> {
    match env::var_os("CARGO_HOME") {
        Some(dir) if !dir.is_empty() => Ok(PathBuf::from(dir)),
        _ => Ok(home()?.join(".cargo")),
    }
}

/// `$CARGO_HOME/bin`, where `cargo install` puts bpf-linker.
pub fn cargo_bin() -> Result<PathBuf> {
    Ok(cargo_home()?.join("bin"))
}

/// `PATH` with `$CARGO_HOME/bin` in front (unless it is already on it), so that the
/// eBPF build in lb-userspace's build script finds bpf-linker.
pub fn path_with_cargo_bin() -> Result<OsString> {
    let bin = cargo_bin()?;
    let current = env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = env::split_paths(&current).collect();
    if !dirs.contains(&bin) {
        dirs.insert(0, bin);
    }
    env::join_paths(dirs).context("cannot put $CARGO_HOME/bin on PATH")
}

/// `cargo` (through rustup's proxy, so `+nightly` works), run in the workspace root
/// with bpf-linker on `PATH`.
pub fn cargo() -> Result<Command> {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(workspace_root())
        .env("PATH", path_with_cargo_bin()?);
    Ok(cmd)
}

/// Cargo's target directory, as `cargo metadata` reports it (it may be moved by
/// `CARGO_TARGET_DIR` or a config file, so it is never assumed to be `target/`).
pub fn target_dir() -> Result<PathBuf> {
    let mut metadata = cargo()?;
    metadata.args(["metadata", "--format-version", "1", "--no-deps"]);
    let json = cmd::capture(&mut metadata)?;
    let value: serde_json::Value =
        serde_json::from_str(&json).context("cannot parse the output of `cargo metadata`")?;
    match value.get("target_directory").and_then(|dir| dir.as_str()) {
        Some(dir) => Ok(PathBuf::from(dir)),
        None => bail!("`cargo metadata` did not report a target_directory"),
    }
}

/// Whether this process runs with effective user id 0.
pub fn is_root() -> bool {
    // The `Uid:` line of /proc/self/status holds real, effective, saved and fs uids.
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Uid:"))
                .and_then(|uids| uids.split_whitespace().nth(1).map(|uid| uid == "0"))
        })
        .unwrap_or(false)
}
