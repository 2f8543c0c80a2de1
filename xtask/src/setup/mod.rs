//! `cargo xtask setup`: put in place what building and testing need, idempotently.
//!
//! Each step lives in its own file and has the same shape ([`Step`]): a cheap `check`
//! that says whether the thing is already there, and an `apply` that puts it there.
//! Nothing is applied when the check passes, so a second run changes nothing. The other
//! verbs call [`ensure`] with the parts they need, quietly when all is in place.

mod bpf_linker;
mod bpffs;
mod cargo_deb;
mod lint_tools;
mod packages;
mod rust_src;

use anyhow::{bail, Context, Result};

use crate::paths;

/// What a step is needed for, so that a verb only asks for what it uses (`build` does
/// not need root to mount bpffs, for example).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Compiling the workspace, including the eBPF object.
    Build,
    /// `cargo fmt` and `cargo clippy` (host and eBPF) in `cargo xtask test`.
    Lint,
    /// Running `lbd`, the lab and the tests that load BPF programs.
    Run,
    /// `cargo xtask package`: the Debian package.
    Package,
}

pub const ALL: &[Need] = &[Need::Build, Need::Lint, Need::Run, Need::Package];

pub trait Step {
    /// What this step provides, for messages, e.g. "bpffs at /sys/fs/bpf".
    fn name(&self) -> String;
    fn needed_for(&self) -> Need;
    /// Whether `apply` has to run as root.
    fn needs_root(&self) -> bool {
        false
    }
    /// Whether the thing is in place already. Cheap and without side effects.
    fn check(&self) -> bool;
    /// One line saying what `apply` is about to do.
    fn action(&self) -> String;
    /// Puts the thing in place.
    fn apply(&self) -> Result<()>;
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    /// One line per step, and a summary (for `cargo xtask setup`).
    Loud,
    /// Only the steps that do something (for the implicit setup of the other verbs).
    Quiet,
}

fn steps() -> Result<Vec<Box<dyn Step>>> {
    Ok(vec![
        Box::new(rust_src::RustSrc),
        Box::new(bpf_linker::BpfLinker::in_cargo_home()?),
        Box::new(lint_tools::LintTools),
        Box::new(cargo_deb::CargoDeb),
        Box::new(packages::Packages),
        Box::new(bpffs::Bpffs),
    ])
}

/// Runs the missing steps among those needed for `needs`.
pub fn ensure(needs: &[Need], verbosity: Verbosity) -> Result<()> {
    let loud = verbosity == Verbosity::Loud;
    let steps: Vec<Box<dyn Step>> = steps()?
        .into_iter()
        .filter(|step| needs.contains(&step.needed_for()))
        .collect();

    let mut missing = Vec::new();
    for step in &steps {
        if step.check() {
            if loud {
                println!("setup: {}: ok: already present", step.name());
            }
        } else {
            missing.push(step);
        }
    }
    if missing.is_empty() {
        if loud {
            println!("setup: everything already in place");
        }
        return Ok(());
    }

    // Say everything that needs root at once, before doing anything half-way.
    let need_root: Vec<String> = missing
        .iter()
        .filter(|step| step.needs_root())
        .map(|step| format!("  - {}: {}", step.name(), step.action()))
        .collect();
    if !need_root.is_empty() && !paths::is_root() {
        bail!(
            "setup: these steps need root, and this process is not root:\n{}\n\
             run `cargo xtask setup` as root once (or do the above by hand), then try again",
            need_root.join("\n")
        );
    }

    for step in &missing {
        println!("setup: {}: {}", step.name(), step.action());
        step.apply()
            .with_context(|| format!("setup step `{}` failed", step.name()))?;
        if !step.check() {
            bail!(
                "setup step `{}` ran without error, but its check still fails",
                step.name()
            );
        }
    }
    println!(
        "setup: done ({} step{} applied)",
        missing.len(),
        if missing.len() == 1 { "" } else { "s" }
    );
    Ok(())
}
