//! `cargo xtask test [--test-threads N] [-- CARGO_TEST_ARGS… [-- HARNESS_ARGS…]]`: what
//! CI runs. Stages, stopping at the first that fails:
//!
//! 1. set-up (toolchain, lint tools, packages, bpffs) if anything is missing;
//! 2. `cargo +nightly fmt --check` over the whole workspace (the nightly rustfmt groups
//!    imports std / external / crate, see `rustfmt.toml`);
//! 3. clippy on the host crates, all targets, warnings denied;
//! 4. clippy on the eBPF crate for the BPF target (nightly, `build-std=core`);
//! 5. every binary (the tests start `lbd` and the lab binaries);
//! 6. `cargo test`, with `--test-threads` (tests that need root use unique namespace
//!    names, so they can run side by side);
//! 7. the benchmark's quick mode (`lb-bench --quick`, about a minute), when the whole
//!    suite runs (no test arguments): it checks every bench row's frames and that every
//!    end-to-end run served, and judges no timing.
//!
//! The exit code is that of the stage that failed, so CI sees cargo's own.

use std::env;
use std::process::Command;

use anyhow::Result;
use clap::Args;

use super::build::cargo_build;
use crate::setup::{self, Verbosity};
use crate::{cmd, paths};

#[derive(Args)]
pub struct TestArgs {
    /// Threads for the test harness, unless the harness arguments set --test-threads.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub test_threads: usize,
    /// Skip the fmt and clippy stages, for quick local runs (CI runs them).
    #[arg(long)]
    no_lint: bool,
    /// Skip the benchmark's quick mode (CI runs it).
    #[arg(long)]
    no_bench: bool,
    /// Passed on to `cargo test` (e.g. `-p lb-common maglev`); after a second `--`, to
    /// the test harness (e.g. `--nocapture`).
    #[arg(last = true, value_name = "ARGS")]
    pub args: Vec<String>,
}

pub fn main(test: TestArgs) -> Result<u8> {
    setup::ensure(setup::ALL, Verbosity::Quiet)?;

    let mut stages: Vec<(&str, Command)> = Vec::new();
    if !test.no_lint {
        stages.push(("fmt", fmt()?));
        stages.push(("clippy", clippy_host()?));
        stages.push(("clippy (eBPF)", clippy_ebpf()?));
    }
    for build in cargo_build(false)? {
        stages.push(("build", build));
    }
    stages.push(("test", cargo_test(&test)?));
    if !test.no_bench && test.args.is_empty() {
        stages.push(("bench (quick)", quick_bench()?));
    }

    for (name, mut command) in stages {
        eprintln!("==> xtask test: {name}");
        let status = cmd::status(&mut command)?;
        if !status.success() {
            let code = cmd::exit_code(status);
            eprintln!("xtask test: stage `{name}` failed (exit code {code})");
            return Ok(u8::try_from(code).unwrap_or(1).max(1));
        }
    }
    eprintln!("xtask test: all stages passed");
    Ok(0)
}

fn fmt() -> Result<Command> {
    let mut fmt = paths::cargo()?;
    fmt.args(["+nightly", "fmt", "--all", "--", "--check"]);
    Ok(fmt)
}

fn clippy_host() -> Result<Command> {
    let mut clippy = paths::cargo()?;
    clippy.args([
        "clippy",
        "--workspace",
        "--exclude",
        "lb-ebpf",
        "--all-targets",
    ]);
    clippy.args(["--", "-D", "warnings"]);
    Ok(clippy)
}

/// Clippy for lb-ebpf as it is really compiled: BPF target, nightly, `core` from source.
///
/// `CARGO_CFG_BPF_TARGET_ARCH` is deliberately not set: aya's build scripts read it as
/// "cargo already passes `--cfg bpf_target_arch`" and then emit no cfg at all, and
/// aya-ebpf-bindings fails with unresolved imports. Left unset, they derive the arch
/// from `HOST` (`AYA_BPF_TARGET_ARCH` overrides it), as aya-build does for the build.
fn clippy_ebpf() -> Result<Command> {
    let mut clippy = paths::cargo()?;
    clippy.args(["+nightly", "clippy", "-p", "lb-ebpf"]);
    clippy.args([
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
        "--release",
    ]);
    clippy.args(["--", "-D", "warnings"]);
    Ok(clippy)
}

fn cargo_test(test: &TestArgs) -> Result<Command> {
    let (cargo_args, harness_args) = split_test_args(&test.args, test.test_threads);
    let mut run = paths::cargo()?;
    run.arg("test");
    if !selects_packages(&cargo_args) {
        run.args(["--workspace", "--exclude", "lb-ebpf"]);
    }
    run.args(&cargo_args).arg("--").args(&harness_args);
    // The end-to-end tests start this lbd, as the lab does.
    if env::var_os("LBD_BIN").is_none() {
        run.env("LBD_BIN", paths::target_dir()?.join("debug").join("lbd"));
    }
    Ok(run)
}

/// The debug `lb-bench` the build stage made, in quick mode, with the debug `lbd`.
fn quick_bench() -> Result<Command> {
    let debug = paths::target_dir()?.join("debug");
    let mut bench = Command::new(debug.join("lb-bench"));
    bench.arg("--quick").env("LBD_BIN", debug.join("lbd"));
    Ok(bench)
}

/// Splits what came after `--` into arguments for `cargo test` and, after a second
/// `--`, for the test harness; adds `--test-threads=N` unless the harness ones set it.
fn split_test_args(args: &[String], threads: usize) -> (Vec<String>, Vec<String>) {
    let (cargo_args, mut harness_args) = match args.iter().position(|arg| arg == "--") {
        Some(at) => (args[..at].to_vec(), args[at + 1..].to_vec()),
        None => (args.to_vec(), Vec::new()),
    };
    if !harness_args
        .iter()
        .any(|arg| arg.starts_with("--test-threads"))
    {
        harness_args.push(format!("--test-threads={threads}"));
    }
    (cargo_args, harness_args)
}

/// Whether the `cargo test` arguments pick packages themselves (then `--workspace`
/// must not be added).
fn selects_packages(cargo_args: &[String]) -> bool {
    cargo_args
        .iter()
        .any(|arg| arg == "--workspace" || arg.starts_with("-p") || arg.starts_with("--package"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|arg| arg.to_string()).collect()
    }

    #[test]
    fn threads_are_added_to_the_harness_arguments() {
        assert_eq!(
            split_test_args(&[], 2),
            (vec![], strings(&["--test-threads=2"]))
        );
        assert_eq!(
            split_test_args(&strings(&["maglev", "--", "--nocapture"]), 4),
            (
                strings(&["maglev"]),
                strings(&["--nocapture", "--test-threads=4"])
            )
        );
    }

    #[test]
    fn threads_given_by_hand_win() {
        assert_eq!(
            split_test_args(&strings(&["--", "--test-threads", "1"]), 2),
            (vec![], strings(&["--test-threads", "1"]))
        );
    }

    #[test]
    fn package_selection_replaces_workspace() {
        assert!(selects_packages(&strings(&["-p", "lb-common"])));
        assert!(selects_packages(&strings(&["--package=lb-common"])));
        assert!(!selects_packages(&strings(&["maglev", "--release"])));
    }
}
