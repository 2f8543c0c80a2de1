//! cargo-deb, which `cargo xtask package` builds the Debian package with, pinned to one
//! version so that the package's layout does not change under us.

use std::env;
use std::process::Command;

use anyhow::Result;

use super::{Need, Step};
use crate::{cmd, paths};

pub const VERSION: &str = "3.8.0";

pub struct CargoDeb;

/// The version `cargo deb --version` reports (`cargo-deb 3.8.0`), if it runs.
fn installed_version() -> Option<String> {
    let out = cmd::capture(paths::cargo().ok()?.args(["deb", "--version"])).ok()?;
    out.split_whitespace().nth(1).map(str::to_string)
}

impl Step for CargoDeb {
    fn name(&self) -> String {
        format!("cargo-deb {VERSION}")
    }

    fn needed_for(&self) -> Need {
        Need::Package
    }

    fn check(&self) -> bool {
        installed_version().as_deref() == Some(VERSION)
    }

    fn action(&self) -> String {
        let why = match installed_version() {
            Some(version) => format!("version {version} is installed"),
            None => "it is missing".into(),
        };
        format!("{why}; `cargo install cargo-deb@{VERSION} --locked` (a few minutes)")
    }

    fn apply(&self) -> Result<()> {
        cmd::run(
            Command::new("cargo")
                .args([
                    "install",
                    &format!("cargo-deb@{VERSION}"),
                    "--locked",
                    "--force",
                ])
                // Away from the workspace, so that its .cargo/config.toml plays no part.
                .current_dir(env::temp_dir()),
        )
    }
}
