//! rustfmt and clippy, which `cargo xtask test` runs before the tests: clippy on the
//! default toolchain for the host crates and on the nightly for the eBPF crate; rustfmt
//! on the nightly, whose `group_imports` (std / external / crate) `rustfmt.toml` sets.
//! A toolchain installed with the minimal profile has neither.

use std::process::Command;

use anyhow::Result;

use super::{Need, Step};
use crate::cmd;

pub struct LintTools;

/// (toolchain as given to `cargo +…`, cargo subcommand, rustup component)
const TOOLS: &[(Option<&str>, &str, &str)] = &[
    (Some("nightly"), "fmt", "rustfmt"),
    (None, "clippy", "clippy"),
    (Some("nightly"), "clippy", "clippy"),
];

fn missing() -> Vec<(Option<&'static str>, &'static str)> {
    TOOLS
        .iter()
        .filter(|(toolchain, subcommand, _)| {
            let mut probe = Command::new("cargo");
            if let Some(toolchain) = toolchain {
                probe.arg(format!("+{toolchain}"));
            }
            !cmd::succeeds(probe.args([subcommand, "--version"]))
        })
        .map(|(toolchain, _, component)| (*toolchain, *component))
        .collect()
}

impl Step for LintTools {
    fn name(&self) -> String {
        "clippy (default toolchain), rustfmt and clippy (nightly)".into()
    }

    fn needed_for(&self) -> Need {
        Need::Lint
    }

    fn check(&self) -> bool {
        missing().is_empty()
    }

    fn action(&self) -> String {
        let list: Vec<String> = missing()
            .iter()
            .map(|(toolchain, component)| {
                format!("{component} ({})", toolchain.unwrap_or("default toolchain"))
            })
            .collect();
        format!("adding {}", list.join(", "))
    }

    fn apply(&self) -> Result<()> {
        for (toolchain, component) in missing() {
            let mut add = Command::new("rustup");
            add.args(["component", "add", component]);
            if let Some(toolchain) = toolchain {
                add.args(["--toolchain", toolchain]);
            }
            cmd::run(&mut add)?;
        }
        Ok(())
    }
}
