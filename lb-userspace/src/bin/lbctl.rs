//! `lbctl`: the operator's CLI for `lbd` (see `lb_userspace::cli`).
use std::process::ExitCode;

use clap::Parser;
use lb_userspace::cli::{self, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line naming what was wrong; details joined, not stacked.
            let message = format!("{e:#}").replace('\n', "; ");
            eprintln!("lbctl: {message}");
            ExitCode::from(cli::exit_code(&e))
        }
    }
}
