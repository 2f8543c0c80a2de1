//! `lbd`'s life: load, attach, fill, serve until SIGINT/SIGTERM, report, detach.
use std::path::PathBuf;

use anyhow::Context as _;
use lb_common::counters::REASONS;
use log::info;
use tokio::signal::unix::{signal, SignalKind};

use crate::{config::Config, controller::Controller, loader::KernelDataplane};

/// Exit status for an invalid config (sysexits EX_CONFIG; systemd units can list it in
/// `RestartPreventExitStatus=` so a bad file is not retried in a loop).
pub const EXIT_CONFIG: u8 = 78;

pub struct Options {
    pub config_path: PathBuf,
}

pub async fn run(config: Config, options: &Options) -> anyhow::Result<()> {
    let mut dataplane = KernelDataplane::load(&config)?;
    dataplane
        .attach(&config.interfaces, config.xdp_mode)
        .context("attaching to the configured interfaces")?;
    let mut controller = Controller::new(dataplane, config.cluster.ring_size);
    let summary = controller.apply(&config)?;
    info!(
        "serving {} services from {} on {} (zone {}): {} backends, {} ring entries written",
        config.services.len(),
        options.config_path.display(),
        config.interfaces.join(", "),
        config.node.zone,
        summary.backends_written,
        summary.ring_entries_written
    );

    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: stopping"),
        _ = int.recv() => info!("SIGINT: stopping"),
    }
    log_counters(&controller);
    controller.dataplane_mut().detach_all();
    Ok(())
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
        if let Ok(c) = dp.backend_counters(b.id) {
            info!(
                "backend {}/{}:{} ({}): new_flows={} packets_to_backend={} packets_to_client={}",
                b.at.service,
                b.at.address,
                b.at.port,
                b.zone,
                c.new_flows,
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
