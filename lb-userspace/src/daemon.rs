//! `lbd`'s life: load, attach, fill, serve until SIGINT/SIGTERM, report, detach.
use std::{path::PathBuf, time::Duration};

use anyhow::Context as _;
use lb_common::counters::REASONS;
use log::{info, warn};
use tokio::signal::unix::{signal, SignalKind};

use crate::{config::Config, controller::Controller, loader::KernelDataplane, pins::PinDir};

/// Exit status for an invalid config (sysexits EX_CONFIG; systemd units can list it in
/// `RestartPreventExitStatus=` so a bad file is not retried in a loop).
pub const EXIT_CONFIG: u8 = 78;

pub struct Options {
    pub config_path: PathBuf,
}

pub async fn run(config: Config, options: &Options) -> anyhow::Result<()> {
    let pins = PinDir::new(&config.pin_dir);
    let mut dataplane = KernelDataplane::load(&config, Some(&pins))?;
    let live = if dataplane.adopted() {
        let live = dataplane.live_state()?;
        info!(
            "adopting the data path pinned in {} ({} services, {} backends)",
            pins.root().display(),
            live.services.len(),
            live.backends.len()
        );
        Some(live)
    } else {
        None
    };
    dataplane
        .attach(&config.interfaces, config.xdp_mode, Some(&pins))
        .context("attaching to the configured interfaces")?;
    let ring_size = config.cluster.ring_size;
    let mut controller = match &live {
        Some(live) => Controller::adopt(dataplane, ring_size, &config, live),
        None => Controller::new(dataplane, ring_size),
    };
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
    let mut reconcile = tokio::time::interval(RECONCILE_EVERY);
    let mut routes = tokio::time::interval(ROUTE_CACHE_LIFETIME);
    loop {
        tokio::select! {
            _ = term.recv() => { info!("SIGTERM: stopping"); break }
            _ = int.recv() => { info!("SIGINT: stopping"); break }
            _ = reconcile.tick() => reconcile_active_flows(&mut controller),
            _ = routes.tick() => {
                if let Err(e) = controller.dataplane_mut().bump_nexthop_generation() {
                    warn!("expiring cached routes: {e:#}");
                }
            }
        }
    }
    log_counters(&controller);
    info!(
        "stopped; the data path keeps forwarding from {} (`lbd --detach` removes it)",
        pins.root().display()
    );
    Ok(())
}

/// `lbd --detach`: detaches the data path from every NIC and removes its pinned state.
/// Established connections through it are cut.
pub fn detach(config: &Config) -> anyhow::Result<()> {
    let pins = PinDir::new(&config.pin_dir);
    let interfaces = pins
        .remove_all()
        .with_context(|| format!("removing {}", pins.root().display()))?;
    if interfaces.is_empty() {
        println!("nothing was attached from {}", pins.root().display());
    } else {
        println!(
            "detached from {}; removed {}",
            interfaces.join(", "),
            pins.root().display()
        );
    }
    Ok(())
}

/// How long the data path may use a cached route (next hop) before looking it up again.
const ROUTE_CACHE_LIFETIME: Duration = Duration::from_secs(1);

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
