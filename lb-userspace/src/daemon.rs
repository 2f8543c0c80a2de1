//! `lbd`'s life: load, attach, fill, then serve until SIGINT/SIGTERM (probing backends,
//! sampling the data path, reloading the config on SIGHUP), report, detach.
use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use lb_common::counters::REASONS;
use log::{error, info};
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::mpsc,
};

use crate::{
    config::{self, Config},
    controller::Controller,
    dataplane::Dataplane as _,
    health::checker::Checker,
    loader::KernelDataplane,
    runtime::Runtime,
};

/// Exit status for an invalid config (sysexits EX_CONFIG; systemd units can list it in
/// `RestartPreventExitStatus=` so a bad file is not retried in a loop).
pub const EXIT_CONFIG: u8 = 78;

/// How often timers are looked at: passive samples (one per probe interval, at least
/// 100 ms), slow-start steps and deregistration delays are due at this resolution.
const TICK: Duration = Duration::from_millis(50);

pub struct Options {
    pub config_path: PathBuf,
}

pub async fn run(config: Config, options: &Options) -> anyhow::Result<()> {
    let mut dataplane = KernelDataplane::load(&config)?;
    dataplane
        .attach(&config.interfaces, config.xdp_mode)
        .context("attaching to the configured interfaces")?;
    let controller = Controller::new(dataplane, config.cluster.ring_size);
    let (mut runtime, summary) = Runtime::start(config, controller, Instant::now())?;
    let config = runtime.config();
    info!(
        "serving {} services from {} on {} (zone {}): {} backends, {} ring entries written",
        config.services.len(),
        options.config_path.display(),
        config.interfaces.join(", "),
        config.node.zone,
        summary.backends_written,
        summary.ring_entries_written
    );

    let (reports_tx, mut reports) = mpsc::channel(1024);
    let mut checker = Checker::new(reports_tx);
    checker.sync(runtime.probe_specs());
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // A failed kernel write is logged and retried on the next tick; packets keep
        // seeing whole tables (a flip happens only after its slot is written).
        let result = tokio::select! {
            Some(report) = reports.recv() => {
                if !checker.is_current(&report) {
                    continue;
                }
                runtime.on_probe(&report.at, &report.outcome, Instant::now()).map(drop)
            }
            _ = ticker.tick() => runtime.tick(Instant::now()).map(drop),
            _ = hup.recv() => {
                reload(&mut runtime, &mut checker, &options.config_path);
                Ok(())
            }
            _ = term.recv() => { info!("SIGTERM: stopping"); break; }
            _ = int.recv() => { info!("SIGINT: stopping"); break; }
        };
        if let Err(e) = result {
            error!("updating the kernel tables: {e:#}");
        }
    }
    drop(checker);
    log_counters(&runtime);
    runtime.controller_mut().dataplane_mut().detach_all();
    Ok(())
}

/// SIGHUP: the file is validated as a whole, as at start-up; a file with any problem
/// changes nothing.
fn reload(runtime: &mut Runtime<KernelDataplane>, checker: &mut Checker, path: &Path) {
    let outcome = config::load(path)
        .map_err(anyhow::Error::from)
        .and_then(|config| runtime.reload(config, Instant::now()));
    match outcome {
        Ok(summary) => {
            checker.sync(runtime.probe_specs());
            info!(
                "SIGHUP: reloaded {}: {} services, {} probed backends; {} ring entries written",
                path.display(),
                runtime.config().services.len(),
                checker.len(),
                summary.ring_entries_written
            );
        }
        Err(e) => error!(
            "SIGHUP: reload rejected, still running the previous config; {}:\n{e:#}",
            path.display()
        ),
    }
}

/// Final per-service and per-backend counters, so a run leaves a record of what it did.
fn log_counters(runtime: &Runtime<KernelDataplane>) {
    let controller = runtime.controller();
    let Some(plan) = controller.plan() else {
        return;
    };
    let dp = controller.dataplane();
    for s in &plan.services {
        if let Ok(c) = dp.service_counters(s.id) {
            info!(
                "service {}: new_flows={} packets_to_backend={} packets_to_client={}",
                s.name, c.new_flows, c.packets_to_backend, c.packets_to_client
            );
        }
    }
    for b in &plan.backends {
        if let (Ok(c), Ok(s)) = (dp.backend_counters(b.id), dp.backend_signals(b.id)) {
            info!(
                "backend {} ({}): new_flows={} packets_to_backend={} packets_to_client={} syns={} syn_acks={} resets={}",
                b.at,
                b.zone,
                c.new_flows,
                c.packets_to_backend,
                c.packets_to_client,
                s.syns,
                s.syn_acks,
                s.resets
            );
        }
    }
    if let Ok(counts) = dp.reason_counters() {
        let nonzero: Vec<String> = REASONS
            .iter()
            .zip(counts)
            .filter(|(_, n)| *n > 0)
            .map(|((_, name), n)| format!("{name}={n}"))
            .collect();
        info!("data path actions: {}", nonzero.join(" "));
    }
}
