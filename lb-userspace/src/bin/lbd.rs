//! `lbd`: the load balancer daemon.
use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use clap::Parser;
use lb_userspace::{
    daemon::{self, EXIT_CONFIG, EXIT_IN_USE},
    kernel::pin_lock::{LockError, PinLock},
    kernel::pins::PinDir,
    model::config::DEFAULT_PIN_DIR,
    model::desired,
    ops::fd_budget,
    preflight::{self, Stage},
};

/// XDP L4 load balancer daemon: attaches the data path to the configured NICs and keeps
/// its tables in line with the config.
#[derive(Parser)]
#[command(
    version,
    after_help = "Exit status:\n  \
        0   stopped on SIGTERM/SIGINT, or --check/--detach succeeded\n  \
        1   a failure while running or talking to the kernel (worth a retry)\n  \
        2   bad command-line arguments\n  \
        75  the pin directory is held by another lbd (its pid is named)\n  \
        78  invalid config or state file, or a config this host cannot run (missing \
        interface or token file, pin_dir not on bpffs, incompatible pinned maps, maps \
        too large, a listener address in use); nothing in the kernel was changed"
)]
struct Args {
    /// Config file (YAML).
    #[arg(long, short, default_value = "/etc/lbd/lb.yaml")]
    config: PathBuf,
    /// Validate the config (and the state file, if there is one) against this host and
    /// exit (0 valid, 78 invalid).
    #[arg(long)]
    check: bool,
    /// Detach the data path from every NIC and remove its pinned state, then exit.
    /// Established connections through it are cut. Needs only the pin directory: from
    /// --pin-dir, else the config's pin_dir key (the rest of the config and the state
    /// file are not read). Refused while an lbd runs on it, unless --force.
    #[arg(long, conflicts_with = "check")]
    detach: bool,
    /// With --detach: the pin directory to remove (no config is read).
    #[arg(long, requires = "detach")]
    pin_dir: Option<PathBuf>,
    /// With --detach: detach even while an lbd runs on the pin directory.
    #[arg(long, requires = "detach")]
    force: bool,
}

fn main() -> ExitCode {
    // Milliseconds: failovers are measured from these lines.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    let args = Args::parse();
    if args.detach {
        return detach(&args);
    }
    // The config file, with the services of the state file when there is one.
    let (config, source) = match desired::load(&args.config) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("lbd: invalid config {}:\n{e}", args.config.display());
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if args.check {
        if let Err(e) = preflight::check(&config, Stage::Check) {
            eprintln!(
                "lbd: {} cannot run on this host:\n{e}",
                args.config.display()
            );
            return ExitCode::from(EXIT_CONFIG);
        }
        println!("{}: ok", args.config.display());
        return ExitCode::SUCCESS;
    }
    // One lbd per pin directory, decided before anything touches the kernel.
    if let Err(e) = PinDir::new(&config.pin_dir).check_bpffs() {
        eprintln!(
            "lbd: {} cannot run on this host:\npin_dir: {e}",
            args.config.display()
        );
        return ExitCode::from(EXIT_CONFIG);
    }
    let _lock = match PinLock::acquire(&config.pin_dir) {
        Ok(lock) => lock,
        Err(e @ LockError::Held { .. }) => {
            eprintln!(
                "lbd: refusing to start: {e}; a second lbd would overwrite its tables and \
                 program. Stop that one first"
            );
            return ExitCode::from(EXIT_IN_USE);
        }
        Err(e) => {
            eprintln!("lbd: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = preflight::check(&config, Stage::Start) {
        eprintln!(
            "lbd: {} cannot run on this host:\n{e}",
            args.config.display()
        );
        return ExitCode::from(EXIT_CONFIG);
    }
    // Before anything is loaded, so that a refusal changes nothing.
    match fd_budget::ensure(&config) {
        Ok(limit) => log::info!("descriptor limit {} (RLIMIT_NOFILE)", limit.soft),
        Err(e) => {
            eprintln!("lbd: {e}");
            return ExitCode::from(EXIT_CONFIG);
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

/// `lbd --detach`: the emergency teardown, which must work whatever state the config's
/// services or the state file are in.
fn detach(args: &Args) -> ExitCode {
    let pin_dir = match &args.pin_dir {
        Some(dir) => dir.clone(),
        None => match pin_dir_of(&args.config) {
            Ok(dir) => dir,
            Err(e) => {
                eprintln!("lbd: {e}; name the pin directory with --pin-dir");
                return ExitCode::from(EXIT_CONFIG);
            }
        },
    };
    match daemon::detach(&pin_dir, args.force) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => match e.downcast_ref::<LockError>() {
            Some(held @ LockError::Held { .. }) => {
                eprintln!(
                    "lbd: refusing to detach: {held}; stop it first, or detach anyway with \
                     --force (it keeps running without a data path)"
                );
                ExitCode::from(EXIT_IN_USE)
            }
            _ => {
                eprintln!("lbd: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

/// The config file's `pin_dir` (default if absent), read from the YAML alone: nothing
/// else in the file needs to be valid.
fn pin_dir_of(path: &Path) -> Result<PathBuf, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text)
        .map_err(|e| format!("config file {} is not YAML: {e}", path.display()))?;
    match doc.get("pin_dir") {
        None => Ok(PathBuf::from(DEFAULT_PIN_DIR)),
        Some(serde_yaml_ng::Value::String(dir)) => Ok(PathBuf::from(dir)),
        Some(other) => Err(format!(
            "config file {}: pin_dir: expected a path, found {other:?}",
            path.display()
        )),
    }
}
