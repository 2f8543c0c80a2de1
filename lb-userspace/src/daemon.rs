//! `lbd`'s life: load, attach, fill, serve until SIGINT/SIGTERM, report, detach.
//! While it runs, the admin API and the metrics endpoint share one [`Runtime`] with this
//! loop; every change to the tables goes through it.
use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context as _;
use lb_common::counters::REASONS;
use log::{info, warn};
use tokio::signal::unix::{signal, SignalKind};

use crate::{
    config::Config, controller::Controller, desired::Source, loader::KernelDataplane,
    runtime::Runtime, serve,
};

/// Exit status for an invalid config (sysexits EX_CONFIG; systemd units can list it in
/// `RestartPreventExitStatus=` so a bad file is not retried in a loop).
pub const EXIT_CONFIG: u8 = 78;

pub struct Options {
    pub config_path: PathBuf,
    /// Where the services came from (see `crate::desired`).
    pub source: Source,
}

pub async fn run(config: Config, options: &Options) -> anyhow::Result<()> {
    let mut dataplane = KernelDataplane::load(&config)?;
    dataplane
        .attach(&config.interfaces, config.xdp_mode)
        .context("attaching to the configured interfaces")?;
    let mut controller = Controller::new(dataplane, config.cluster.ring_size);
    let summary = controller.apply(&config)?;
    let runtime = Arc::new(Runtime::new(config.clone(), controller));
    let servers = serve::start(&config, runtime.clone()).await?;
    runtime.set_ready(true);
    let from = match options.source {
        Source::ConfigFile => options.config_path.display().to_string(),
        Source::StateFile => format!("state file {}", config.state_file.display()),
    };
    info!(
        "serving {} services from {from} on {} (zone {}): {} backends, {} ring entries written",
        config.services.len(),
        config.interfaces.join(", "),
        config.node.zone,
        summary.backends_written,
        summary.ring_entries_written
    );

    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut reconcile = tokio::time::interval(RECONCILE_EVERY);
    let mut sample = tokio::time::interval(SAMPLE_EVERY);
    loop {
        let rt = runtime.clone();
        tokio::select! {
            _ = term.recv() => { info!("SIGTERM: stopping"); break }
            _ = int.recv() => { info!("SIGINT: stopping"); break }
            _ = reconcile.tick() => {
                let _ = tokio::task::spawn_blocking(move || {
                    rt.with(|_, controller| reconcile_active_flows(controller))
                }).await;
            }
            _ = sample.tick() => {
                let _ = tokio::task::spawn_blocking(move || {
                    if let Err(e) = rt.sample() {
                        warn!("sampling counters: {e:#}");
                    }
                }).await;
            }
        }
    }
    runtime.set_ready(false);
    servers.stop().await;
    runtime.with(|_, controller| {
        log_counters(controller);
        controller.dataplane_mut().detach_all();
    });
    Ok(())
}

/// How often counters are sampled for the per-second rates of `lbctl stats` and `top`.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// How often flows that ended unseen (evicted, expired) are subtracted from the
/// active-flow counts that least-connections balances on.
const RECONCILE_EVERY: Duration = Duration::from_secs(2);

fn reconcile_active_flows(controller: &mut Controller<KernelDataplane>) {
    let Some(plan) = controller.plan() else {
        return;
    };
    let ids: Vec<u32> = plan.backends.iter().map(|b| b.id).collect();
    match controller.dataplane_mut().reconcile_active_flows(&ids) {
        Ok(fixes) if !fixes.is_empty() => {
            info!("active-flow counts corrected for flows that ended unseen: {fixes:?}")
        }
        Ok(_) => {}
        Err(e) => warn!("reconciling active-flow counts: {e:#}"),
    }
}

/// Final per-service and per-backend counters, so a run leaves a record of what it did.
fn log_counters(controller: &Controller<KernelDataplane>) {
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
        if let (Ok(c), Ok(active)) = (dp.backend_counters(b.id), dp.active_flows(b.id)) {
            info!(
                "backend {}/{}:{} ({}): new_flows={} active_flows={} packets_to_backend={} packets_to_client={}",
                b.at.service,
                b.at.address,
                b.at.port,
                b.zone,
                c.new_flows,
                active,
                c.packets_to_backend,
                c.packets_to_client
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
