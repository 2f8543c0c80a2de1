//! `lbd`'s life: load (or adopt the pinned data path), attach, fill, then serve until
//! SIGINT/SIGTERM (probing backends, sampling the data path, answering the admin API
//! and /metrics, reloading the config on SIGHUP, expiring cached routes, reconciling
//! active-flow counts), report, and leave the data path forwarding.
//!
//! The loop, the admin API and the metrics endpoint share one [`SharedRuntime`]; every
//! change to the tables goes through it.
use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use lb_common::counters::REASONS;
use log::{error, info, warn};
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::mpsc,
};

use crate::{
    control::announce::Announcements,
    control::health::checker::{Checker, Report},
    control::runtime::Runtime,
    control::tables::Controller,
    dataplane::{Dataplane, LinkChange, VipAddresses},
    kernel::link_watch,
    kernel::pin_lock::{LockError, PinLock},
    kernel::pins::PinDir,
    kernel::privileges::{self, Verification},
    kernel::trace::Tracer,
    kernel::vip_addresses::{self, LoopbackVips},
    kernel::KernelDataplane,
    model::config::{Config, FlowTimeouts},
    model::desired::{self, Source},
    ops::metrics::Metrics,
    ops::serve::{self, Servers},
    ops::shared::{DataPath, SharedRuntime},
};

/// Exit status for an invalid config (sysexits EX_CONFIG; systemd units can list it in
/// `RestartPreventExitStatus=` so a bad file is not retried in a loop).
pub const EXIT_CONFIG: u8 = 78;

/// Exit status when another lbd holds the pin directory (sysexits EX_TEMPFAIL: it may be
/// gone at the next try).
pub const EXIT_IN_USE: u8 = 75;

/// How often every configured NIC is checked for having been deleted or re-created,
/// besides the netlink events that trigger the same check at once.
const LINK_CHECK_EVERY: Duration = Duration::from_secs(1);

/// How long the data path may use a cached route (next hop) before looking it up again.
const ROUTE_CACHE_LIFETIME: Duration = Duration::from_secs(1);

/// How often flows that ended unseen (evicted, expired) are subtracted from the
/// active-flow counts that least-connections balances on.
const RECONCILE_EVERY: Duration = Duration::from_secs(2);

/// How often timers are looked at: passive samples (one per probe interval, at least
/// 100 ms), slow-start steps and deregistration delays are due at this resolution.
const TICK: Duration = Duration::from_millis(50);

/// How often BIRD's sessions are read for `/metrics` (with `announce.bird_socket`).
const BIRD_CHECK_EVERY: Duration = Duration::from_secs(5);

/// How often counters are sampled for the per-second rates of `lbctl stats` and `top`.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

pub struct Options {
    pub config_path: PathBuf,
    /// Where the services came from (see `crate::model::desired`).
    pub source: Source,
}

/// Loads (or adopts) the data path, then gives up CAP_PERFMON (see
/// [`crate::kernel::privileges`]). Call it before any thread is started.
pub fn load(config: &Config) -> anyhow::Result<KernelDataplane> {
    let verification = privileges::verification()?;
    let dataplane = KernelDataplane::load(config, Some(&PinDir::new(&config.pin_dir)))
        .map_err(name_lacking_capabilities)?;
    if privileges::drop_after_load()? {
        info!("data path loaded; CAP_PERFMON dropped");
    }
    if verification == Verification::Hardened {
        warn!(
            "the data path was loaded without CAP_PERFMON, so the kernel hardened it against \
             Spectre at about three times the per-packet cost; grant CAP_PERFMON as \
             deploy/systemd/lbd.service does (lbd drops it once the program is loaded)"
        );
    }
    Ok(dataplane)
}

/// A failed load or attach, with the capabilities lbd lacks for it named first.
fn name_lacking_capabilities(e: anyhow::Error) -> anyhow::Error {
    match privileges::lacking_for_data_path() {
        Some(lacking) => e.context(lacking),
        None => e,
    }
}

/// Runs the daemon on the data path [`load`] returned, until SIGTERM or SIGINT.
pub async fn run(
    config: Config,
    mut dataplane: KernelDataplane,
    options: &Options,
) -> anyhow::Result<()> {
    let pins = PinDir::new(&config.pin_dir);
    // Before any packet can be stamped: a flow stamped with a fresh map's 0 would look
    // idle since boot to the first expiry walk, which would delete it while it is live.
    dataplane
        .set_clock(boot_seconds())
        .context("setting the flow clock")?;
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
    // Subscribed before attaching, so that no NIC event after the attach is missed.
    let link_events =
        link_watch::watch(&config.interfaces).context("watching the configured NICs")?;
    dataplane
        .attach(
            &config.interfaces,
            &config.tc_interfaces,
            config.xdp_mode,
            Some(&pins),
        )
        .context("attaching to the configured interfaces")
        .map_err(name_lacking_capabilities)?;
    let tracer = match dataplane.take_trace() {
        Some(maps) => Some(Tracer::start(maps).context("starting the packet trace's reader")?),
        None => None,
    };
    let ring_size = config.cluster.ring_size;
    let controller = match &live {
        Some(live) => Controller::adopt(dataplane, ring_size, &config, live),
        None => Controller::new(dataplane, ring_size),
    };
    let (runtime, summary) = Runtime::start(config.clone(), controller, Instant::now())?;
    let shared = Arc::new(SharedRuntime::new(runtime));
    let servers = serve::start(&config, shared.clone(), tracer).await?;
    check_links(&shared, &servers.metrics);
    let vips = LoopbackVips::open().context("opening lo for the VIP announcements")?;
    let (mut announcements, adopted) =
        Announcements::start(vips, &config.announce).context("reading the VIPs announced on lo")?;
    if !adopted.is_empty() {
        info!(
            "keeping the VIPs the previous lbd announced ({adopted:?}) until their backends' \
             health is known"
        );
    }
    announce::publish(&shared, &announcements, &servers.metrics);
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

    serve_until_stopped(
        &shared,
        servers,
        &mut announcements,
        link_events,
        &options.config_path,
    )
    .await?;
    info!(
        "stopped; the data path keeps forwarding from {} and the announced VIPs stay on lo \
         (`lbd --detach` withdraws and removes them)",
        pins.root().display()
    );
    Ok(())
}

/// The loop: probes, timers, NIC events, the admin API's changes and SIGHUP, until
/// SIGTERM or SIGINT; then the servers stop and the final counters are logged.
async fn serve_until_stopped<D: DataPath, V: VipAddresses>(
    shared: &SharedRuntime<D>,
    servers: Servers,
    announcements: &mut Announcements<V>,
    mut link_events: mpsc::Receiver<String>,
    config_path: &Path,
) -> anyhow::Result<()> {
    let (reports_tx, mut reports) = mpsc::channel(1024);
    let mut checker = Checker::new(reports_tx);
    let mut probes = probes::Probes::default();
    checker.sync(probes.specs(shared));
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reconcile = tokio::time::interval(RECONCILE_EVERY);
    let mut routes = tokio::time::interval(ROUTE_CACHE_LIFETIME);
    let mut sample = tokio::time::interval(SAMPLE_EVERY);
    let mut link_check = tokio::time::interval(LINK_CHECK_EVERY);
    let mut bird_check = tokio::time::interval(BIRD_CHECK_EVERY);
    let mut bird_reading: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        // A failed kernel write is logged and retried on the next tick; packets keep
        // seeing whole tables (a flip happens only after its slot is written).
        let result = tokio::select! {
            Some(report) = reports.recv() => {
                if !checker.is_current(&report) {
                    continue;
                }
                apply_probe(shared, &servers.metrics, &report)
            }
            due = ticker.tick() => {
                let handling = Instant::now();
                let ticked = shared.with(|rt| rt.tick(handling)).map(drop);
                servers.metrics.health.tick(due.into_std(), handling);
                announce::step(shared, announcements, &servers.metrics, handling);
                ticked
            }
            _ = reconcile.tick() => {
                shared.with(|rt| on_reconcile_tick(rt, boot_seconds()));
                Ok(())
            }
            _ = routes.tick() => shared.with(|rt| on_routes_tick(rt, boot_seconds())),
            _ = sample.tick() => {
                announce::publish(shared, announcements, &servers.metrics);
                shared.sample().context("sampling counters")
            }
            Some(_) = link_events.recv() => {
                check_links(shared, &servers.metrics);
                Ok(())
            }
            _ = link_check.tick() => {
                check_links(shared, &servers.metrics);
                announce::resync(shared, announcements, &servers.metrics);
                Ok(())
            }
            _ = bird_check.tick() => {
                // Off the loop (a hung BIRD costs up to a second per query); one at a time.
                if bird_reading.as_ref().is_none_or(|r| r.is_finished()) {
                    let socket = shared.with(|rt| rt.config().announce.bird_socket.clone());
                    let metrics = servers.metrics.clone();
                    bird_reading = socket.map(|socket| {
                        tokio::task::spawn_blocking(move || read_bird(&socket, &metrics))
                    });
                }
                Ok(())
            }
            // The admin API changed the desired state: probe what it now holds.
            _ = shared.changed() => {
                checker.sync(probes.specs(shared));
                Ok(())
            }
            _ = hup.recv() => {
                reload(shared, &mut checker, &mut probes, config_path);
                Ok(())
            }
            _ = term.recv() => { info!("SIGTERM: stopping"); break; }
            _ = int.recv() => { info!("SIGINT: stopping"); break; }
        };
        if let Err(e) = result {
            error!("updating the kernel tables: {e:#}");
        }
    }
    // Probing stops; forwarding does not: the pinned data path carries on with the
    // last tables until another lbd adopts it or `lbd --detach` removes it.
    shared.set_ready(false);
    drop(checker);
    servers.stop().await;
    shared.with(|rt| log_counters(rt));
    Ok(())
}

/// Reads BIRD's sessions into `/metrics` (`lb_bird_up`); logged when BIRD stops or
/// starts answering.
fn read_bird(socket: &Path, metrics: &Metrics) {
    match crate::ops::bird::sessions(socket) {
        Ok(read) => {
            if metrics.set_bird(Some(&read)) {
                info!("BIRD answers at {}", socket.display());
            }
        }
        Err(e) => {
            if metrics.set_bird(None) {
                warn!(
                    "BIRD does not answer at {}: {e:#}; lb_bird_up is 0 and node drains cannot \
                     confirm their withdrawal until it does",
                    socket.display()
                );
            }
        }
    }
}

/// One probe result: observed into the latency histogram, then applied to the runtime.
fn apply_probe<D: Dataplane>(
    shared: &SharedRuntime<D>,
    metrics: &Metrics,
    report: &Report,
) -> anyhow::Result<()> {
    let handling = Instant::now();
    if let Some(zone) = shared.zone_of(&report.at) {
        let backend = std::net::SocketAddr::new(report.at.address, report.at.port).to_string();
        let secs = report.latency.as_secs_f64();
        metrics.observe_probe(&report.at.service, &backend, &zone, secs);
    }
    let applied = shared.on_probe(&report.at, &report.outcome, report.latency);
    let lag = handling.saturating_duration_since(report.done);
    metrics.health.probe_applied(lag, handling.elapsed());
    applied.map(drop)
}

/// How long `lbd --detach` waits for its withdrawal to be seen before it removes the
/// data path anyway.
pub const DETACH_WITHDRAW_WAIT: Duration = Duration::from_secs(5);

/// `lbd --detach`: withdraws the VIPs lbd announced (every /32 on `lo` with its label),
/// waits (at most [`DETACH_WITHDRAW_WAIT`]) until the withdrawal is seen (`lo` listed
/// again, and BIRD's table when `bird_socket` is given), then detaches the data path
/// from every NIC and removes its pinned state. Established connections through it are
/// cut. Refused (a [`LockError::Held`]) while an lbd runs on `pin_dir`, unless `force`.
pub fn detach(pin_dir: &Path, force: bool, bird_socket: Option<&Path>) -> anyhow::Result<()> {
    let pins = PinDir::new(pin_dir);
    if !pins.root().exists() {
        withdraw_vips(bird_socket)?;
        println!("nothing was attached from {}", pins.root().display());
        return Ok(());
    }
    let _lock = match PinLock::acquire_existing(pins.root()) {
        Ok(lock) => Some(lock),
        Err(e @ LockError::Held { .. }) if force => {
            warn!("--force: detaching although {e}");
            None
        }
        Err(e) => return Err(e.into()),
    };
    // First, so the routers move the flows away while the data path still forwards.
    withdraw_vips(bird_socket)?;
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

/// Removes every VIP lbd holds on `lo` and waits until that is seen; says which.
fn withdraw_vips(bird_socket: Option<&Path>) -> anyhow::Result<()> {
    let withdrawn = vip_addresses::withdraw_all().context("withdrawing the announced VIPs")?;
    if withdrawn.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = withdrawn.iter().map(|v| v.to_string()).collect();
    println!("withdrew VIPs {} from lo", list.join(", "));
    let started = Instant::now();
    let deadline = started + DETACH_WITHDRAW_WAIT;
    loop {
        let last = match withdrawal_seen(&withdrawn, bird_socket) {
            Ok(None) => {
                let seen = if bird_socket.is_some() {
                    "lo and BIRD"
                } else {
                    "lo"
                };
                println!(
                    "withdrawal seen ({seen}) after {} ms",
                    started.elapsed().as_millis()
                );
                return Ok(());
            }
            Ok(Some(left)) => left,
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() >= deadline {
            warn!(
                "the withdrawal was not seen within {DETACH_WITHDRAW_WAIT:?} ({last}); \
                 detaching anyway"
            );
            println!("withdrawal not seen within {DETACH_WITHDRAW_WAIT:?}: {last}");
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `None` when none of `vips` is on `lo` (with lbd's label) nor, with a BIRD socket, in
/// BIRD's table; else what is left.
fn withdrawal_seen(
    vips: &[std::net::IpAddr],
    bird_socket: Option<&Path>,
) -> anyhow::Result<Option<String>> {
    let held = LoopbackVips::open()?.announced()?;
    if let Some(vip) = vips.iter().find(|v| held.contains(v)) {
        return Ok(Some(format!("{vip} still on lo")));
    }
    if let Some(socket) = bird_socket {
        for vip in vips {
            if crate::ops::bird::route_on_lo(socket, *vip)? {
                return Ok(Some(format!("BIRD still has {vip}")));
            }
        }
    }
    Ok(None)
}

/// Re-attaches a configured NIC that was deleted and created again or lost lb_xdp, and
/// keeps readiness and the per-NIC metrics in line with what is attached.
fn check_links<D: Dataplane>(shared: &SharedRuntime<D>, metrics: &Metrics) {
    let (changes, states) = shared.with(|rt| {
        let dp = rt.controller_mut().dataplane_mut();
        (dp.ensure_attached(), dp.interface_states())
    });
    for change in changes {
        match change {
            LinkChange::Lost { interface, ifindex } => {
                warn!(
                    "{interface} (ifindex {ifindex}) is gone: nothing is forwarded on it until \
                     a NIC of that name is back, and lbd is not ready meanwhile"
                );
                metrics.count_interface_event(&interface, "lost");
            }
            LinkChange::Displaced {
                interface,
                ifindex,
                program,
                found,
            } => {
                let hook = if program == lb_common::limits::PROGRAM_TC {
                    "tc ingress"
                } else {
                    "XDP"
                };
                warn!(
                    "{program} is no longer attached to {interface} (ifindex {ifindex}; {hook} \
                     programs there: {found:?}): it was detached or replaced; attaching it again"
                );
                metrics.count_interface_event(&interface, "lost");
            }
            LinkChange::Abandoned {
                interfaces,
                pin_dir,
            } => {
                error!(
                    "{} was removed (`lbd --detach --force`?), which detached lb_xdp from {}: \
                     lbd stays detached and not ready until it is restarted",
                    pin_dir.display(),
                    interfaces.join(", ")
                );
                for interface in &interfaces {
                    metrics.count_interface_event(interface, "lost");
                }
            }
            LinkChange::Attached { interface, ifindex } => {
                info!("{interface} is back (ifindex {ifindex}): the data path is attached again");
                metrics.count_interface_event(&interface, "attached");
            }
            LinkChange::Failed { interface, error } => {
                error!("re-attaching to {interface}: {error:#}; retrying every second");
                metrics.count_interface_event(&interface, "attach_failed");
            }
        }
    }
    for (interface, attached) in &states {
        metrics.set_interface_attached(interface, *attached);
    }
    shared.set_ready(states.iter().all(|(_, attached)| *attached));
}

/// Whole seconds of CLOCK_BOOTTIME: monotonic, and the same clock across lbd restarts,
/// so the stamps on adopted flows stay meaningful.
fn boot_seconds() -> u32 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-parameter; CLOCK_BOOTTIME always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as u32
}

/// Every [`RECONCILE_EVERY`]: idle flows expired, then active-flow counts corrected.
fn on_reconcile_tick<D: Dataplane>(rt: &mut Runtime<D>, now: u32) {
    let timeouts = rt.config().flow_timeouts.clone();
    expire_flows(rt.controller_mut(), &timeouts, now);
    reconcile_active_flows(rt.controller_mut());
}

/// Every [`ROUTE_CACHE_LIFETIME`]: the flow clock advanced and cached routes expired.
fn on_routes_tick<D: Dataplane>(rt: &mut Runtime<D>, now: u32) -> anyhow::Result<()> {
    let dp = rt.controller_mut().dataplane_mut();
    dp.set_clock(now).context("advancing the flow clock")?;
    dp.bump_nexthop_generation()
        .context("expiring cached routes")
}

/// Removes flow entries idle longer than their state's timeout at `now` (see
/// `crate::model::ageing`).
fn expire_flows<D: Dataplane>(controller: &mut Controller<D>, timeouts: &FlowTimeouts, now: u32) {
    match controller.dataplane_mut().expire_flows(now, timeouts) {
        Ok(0) => {}
        Ok(n) => info!("expired {n} idle flows"),
        Err(e) => warn!("expiring idle flows: {e:#}"),
    }
}

fn reconcile_active_flows<D: Dataplane>(controller: &mut Controller<D>) {
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

/// SIGHUP: the file is validated as a whole, as at start-up, with the state file's
/// services when there is one (see `crate::model::desired`); a file with any problem changes
/// nothing.
fn reload<D: Dataplane>(
    shared: &SharedRuntime<D>,
    checker: &mut Checker,
    probes: &mut probes::Probes,
    path: &Path,
) {
    let outcome = desired::load(path)
        .map_err(anyhow::Error::from)
        .and_then(|(config, _)| shared.reload(config));
    match outcome {
        Ok((_, summary)) => {
            checker.sync(probes.specs(shared));
            info!(
                "SIGHUP: reloaded {}: {} services, {} probed backends; {} ring entries written",
                path.display(),
                shared.desired().services.len(),
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
fn log_counters<D: Dataplane>(runtime: &Runtime<D>) {
    let controller = runtime.controller();
    let Some(plan) = controller.plan() else {
        return;
    };
    let dp = controller.dataplane();
    for s in &plan.services {
        if let Ok(c) = dp.service_counters(s.id) {
            info!(
                "service {}: new_flows={} packets_to_backend={} packets_to_client={} stateless_forwards={} flows_from_replies={}",
                s.name,
                c.new_flows,
                c.packets_to_backend,
                c.packets_to_client,
                c.stateless_forwards,
                c.flows_from_replies
            );
        }
    }
    for b in &plan.backends {
        if let (Ok(c), Ok(s), Ok(active)) = (
            dp.backend_counters(b.id),
            dp.backend_signals(b.id),
            dp.active_flows(b.id),
        ) {
            info!(
                "backend {} ({}): new_flows={} active_flows={active} packets_to_backend={} packets_to_client={} syns={} syn_acks={} resets={}",
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

#[path = "daemon_announce.rs"]
mod announce;
#[path = "daemon_probes.rs"]
mod probes;

#[cfg(test)]
#[path = "daemon_tests.rs"]
mod tests;
