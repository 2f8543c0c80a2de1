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
    lbd_args::LbdArgs,
    model::config::Config,
    model::config::DEFAULT_PIN_DIR,
    model::desired,
    ops::fd_budget,
    preflight::{self, Stage},
};

fn main() -> ExitCode {
    // Milliseconds: failovers are measured from these lines.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    let args = LbdArgs::parse();
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
        return check(&args.config, &config);
    }
    let _lock = match claim_host(&args.config, &config) {
        Ok(lock) => lock,
        Err(code) => return code,
    };
    let options = daemon::Options {
        config_path: args.config,
        source,
    };
    serve(config, &options)
}

/// `lbd --check`: whether the config could run on this host, without touching it.
fn check(path: &Path, config: &Config) -> ExitCode {
    if let Err(e) = preflight::check(config, Stage::Check) {
        eprintln!("lbd: {} cannot run on this host:\n{e}", path.display());
        return ExitCode::from(EXIT_CONFIG);
    }
    println!("{}: ok", path.display());
    ExitCode::SUCCESS
}

/// Everything decided before the data path is loaded, so that a refusal changes
/// nothing: the pin directory is on bpffs and no other lbd holds it, the host passes
/// the start checks, and the descriptor limit fits the config. The lock is held for as
/// long as lbd runs.
fn claim_host(path: &Path, config: &Config) -> Result<PinLock, ExitCode> {
    // One lbd per pin directory, decided before anything touches the kernel.
    if let Err(e) = PinDir::new(&config.pin_dir).check_bpffs() {
        eprintln!(
            "lbd: {} cannot run on this host:\npin_dir: {e}",
            path.display()
        );
        return Err(ExitCode::from(EXIT_CONFIG));
    }
    let lock = match PinLock::acquire(&config.pin_dir) {
        Ok(lock) => lock,
        Err(e @ LockError::Held { .. }) => {
            eprintln!(
                "lbd: refusing to start: {e}; a second lbd would overwrite its tables and \
                 program. Stop that one first"
            );
            return Err(ExitCode::from(EXIT_IN_USE));
        }
        Err(e) => {
            eprintln!("lbd: {e}");
            return Err(ExitCode::FAILURE);
        }
    };
    if let Err(e) = preflight::check(config, Stage::Start) {
        eprintln!("lbd: {} cannot run on this host:\n{e}", path.display());
        return Err(ExitCode::from(EXIT_CONFIG));
    }
    // Before anything is loaded, so that a refusal changes nothing.
    match fd_budget::ensure(config) {
        Ok(limit) => log::info!("descriptor limit {} (RLIMIT_NOFILE)", limit.soft),
        Err(e) => {
            eprintln!("lbd: {e}");
            return Err(ExitCode::from(EXIT_CONFIG));
        }
    }
    Ok(lock)
}

/// Loads the data path, then runs the daemon on a multi-threaded async runtime until it
/// stops.
fn serve(config: Config, options: &daemon::Options) -> ExitCode {
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
    match runtime.block_on(daemon::run(config, dataplane, options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lbd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `lbd --detach`: the emergency teardown, which must work whatever state the config's
/// services or the state file are in.
fn detach(args: &LbdArgs) -> ExitCode {
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
    // The BIRD socket only sharpens the wait for the withdrawal: a config that cannot
    // be read for it does not stop the teardown.
    let bird_socket = bird_socket_of(&args.config);
    match daemon::detach(&pin_dir, args.force, bird_socket.as_deref()) {
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

/// The config file's `announce.bird_socket`, read from the YAML alone; `None` when it is
/// absent or the file cannot be read.
fn bird_socket_of(path: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(path).ok()?;
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).ok()?;
    doc.get("announce")?
        .get("bird_socket")?
        .as_str()
        .map(PathBuf::from)
}
