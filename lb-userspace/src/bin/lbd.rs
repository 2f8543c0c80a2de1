//! `lbd`: the load balancer daemon.
use std::{path::PathBuf, process::ExitCode};

use clap::Parser;
use lb_userspace::{daemon, desired, fd_budget};

/// XDP L4 load balancer daemon: attaches the data path to the configured NICs and keeps
/// its tables in line with the config.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Config file (YAML).
    #[arg(long, short, default_value = "/etc/lbd/lb.yaml")]
    config: PathBuf,
    /// Validate the config (and the state file, if there is one) and exit (0 valid,
    /// 78 invalid).
    #[arg(long)]
    check: bool,
    /// Detach the data path from every NIC and remove its pinned state (from the
    /// config's pin_dir), then exit. Established connections through it are cut.
    #[arg(long, conflicts_with = "check")]
    detach: bool,
}

fn main() -> ExitCode {
    // Milliseconds: failovers are measured from these lines.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    let args = Args::parse();
    // The config file, with the services of the state file when there is one.
    let (config, source) = match desired::load(&args.config) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("lbd: invalid config {}:\n{e}", args.config.display());
            return ExitCode::from(daemon::EXIT_CONFIG);
        }
    };
    if args.check {
        println!("{}: ok", args.config.display());
        return ExitCode::SUCCESS;
    }
    if args.detach {
        return match daemon::detach(&config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("lbd: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    // Before anything is loaded, so that a refusal changes nothing.
    match fd_budget::ensure(&config) {
        Ok(limit) => log::info!("descriptor limit {} (RLIMIT_NOFILE)", limit.soft),
        Err(e) => {
            eprintln!("lbd: {e}");
            return ExitCode::from(daemon::EXIT_CONFIG);
        }
    }
    // Before the runtime starts its threads: lbd narrows its capabilities once the
    // program is loaded, and capabilities are per thread (see `privileges`).
    let dataplane = match daemon::load(&config) {
        Ok(dataplane) => dataplane,
        Err(e) => {
            eprintln!("lbd: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("lbd: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let options = daemon::Options {
        config_path: args.config,
        source,
    };
    match runtime.block_on(daemon::run(config, dataplane, &options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lbd: {e:#}");
            ExitCode::FAILURE
        }
    }
}
