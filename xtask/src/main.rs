//! `cargo xtask`: the project's own tasks, in Rust so that they run wherever cargo does.
//!
//! - `setup`: install what building and testing need (idempotent).
//! - `build [--release]`: every binary, the eBPF object embedded in lbd, then `man`.
//! - `man [--release]`: the manual pages of lbd and lbctl, in `<target>/man/`.
//! - `package [--dev]`: the Debian package (cargo-deb), in `<target>/debian/`.
//! - `test [-- ARGS]`: fmt, clippy (host and eBPF), build, then the tests. What CI runs.
//! - `lab [--keep] [ARGS]`: build, then the namespace lab (`lb-lab`).
//! - `run -- ARGS`: build, then `lbd ARGS`.
//! - `bench [ARGS]`: optimised build, then the benchmarks (`lb-bench`), JSON in `<target>/bench/`.
//!
//! Layout: `cmd` runs programs and names them when they fail, `paths` knows where
//! things are, `setup/` holds one file per set-up step, `verbs/` one file per verb.

mod cmd;
mod paths;
mod setup;
mod verbs;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Tasks for the lb-xdp workspace"
)]
struct Cli {
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Subcommand)]
enum Verb {
    /// Install what building and testing need: nightly rust-src, bpf-linker built
    /// against the nightly's LLVM 22, rustfmt/clippy, cargo-deb, Debian packages, bpffs.
    /// Idempotent.
    Setup,
    /// Build every binary of the workspace (set-up first if anything is missing), then
    /// the manual pages.
    Build {
        /// Optimised build, in the target directory's `release/`.
        #[arg(long)]
        release: bool,
    },
    /// The manual pages of lbd and lbctl, from their clap definitions, in
    /// <target dir>/man/.
    Man {
        /// Render them with the optimised build of the library.
        #[arg(long)]
        release: bool,
    },
    /// The Debian package of lbd and lbctl (optimised build, unit, example configs, manual
    /// pages, completions), with cargo-deb, in <target dir>/debian/.
    Package {
        /// Package the debug build (stripped): what the package test installs.
        #[arg(long)]
        dev: bool,
    },
    /// fmt check, clippy (host and eBPF), build, then `cargo test`; what CI runs.
    Test(verbs::test::TestArgs),
    /// Build, then run the namespace lab `lb-lab` with LBD_BIN set.
    Lab(verbs::lab::LabArgs),
    /// Build, then run `lbd` with the given arguments.
    Run(verbs::run::RunArgs),
    /// Optimised build, then the benchmarks: per packet, flow-table fill, control plane,
    /// end to end beside HAProxy and nftables; tables, and JSON in <target dir>/bench/.
    Bench(verbs::bench::BenchArgs),
}

fn main() -> ExitCode {
    match dispatch(Cli::parse().verb) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(verb: Verb) -> Result<u8> {
    match verb {
        Verb::Setup => setup::ensure(setup::ALL, setup::Verbosity::Loud).map(|()| 0),
        Verb::Build { release } => verbs::build::main(release).map(|()| 0),
        Verb::Man { release } => verbs::man::main(release).map(|()| 0),
        Verb::Package { dev } => verbs::package::main(dev).map(|()| 0),
        Verb::Test(args) => verbs::test::main(args),
        Verb::Lab(args) => verbs::lab::main(args).map(|()| 0),
        Verb::Run(args) => verbs::run::main(args).map(|()| 0),
        Verb::Bench(args) => verbs::bench::main(args).map(|()| 0),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn test_keeps_a_second_double_dash_for_the_harness() {
        let cli = Cli::try_parse_from([
            "xtask",
            "test",
            "--test-threads",
            "3",
            "--",
            "-p",
            "lb-common",
            "--",
            "--nocapture",
        ])
        .unwrap();
        let Verb::Test(test) = cli.verb else {
            panic!("not the test verb")
        };
        assert_eq!(test.test_threads, 3);
        assert_eq!(test.args, ["-p", "lb-common", "--", "--nocapture"]);
    }

    #[test]
    fn lab_and_run_pass_hyphenated_arguments_on() {
        let cli = Cli::try_parse_from(["xtask", "lab", "--keep", "--scenario", "zones"]).unwrap();
        let Verb::Lab(lab) = cli.verb else {
            panic!("not the lab verb")
        };
        assert!(lab.keep);
        assert_eq!(lab.args, ["--scenario", "zones"]);

        let cli = Cli::try_parse_from(["xtask", "run", "--", "--config", "lb.yaml"]).unwrap();
        let Verb::Run(run) = cli.verb else {
            panic!("not the run verb")
        };
        assert_eq!(run.args, ["--config", "lb.yaml"]);
    }
}
