//! `lbd`'s run-time state shared by its loop, the admin API and the metrics endpoint:
//! the [`Runtime`] (config, fleet, controller) behind one lock. Every change from the
//! API is computed, validated (what it can break), persisted durably, then applied, all
//! under the lock, so concurrent requests are serialized and none loses an update. A
//! change of one backend is made to the desired state in place (taken back if
//! persisting or applying fails) and re-plans its service alone; any other change
//! ([`SharedRuntime::change_with`]) computes the next state by a pure function and
//! applies it with `Runtime::reload`. A SIGHUP reload takes that path without persisting.
//!
//! The lock is a `std::sync::Mutex`: every critical section is short and synchronous
//! (map reads and writes, one fsync), and the API takes it on blocking threads.
use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::{Duration, Instant},
};

use log::{error, info, warn};

use crate::{
    control::health::machine::{Health, Outcome},
    control::runtime::{Edited, Runtime},
    control::tables::ApplySummary,
    dataplane::{Dataplane, DataplaneError},
    model::config::Config,
    model::desired::{
        diff,
        edit::{self, BackendAddr, Edit, EditError},
        journal,
        state_file::{StateFileError, Store, Undo},
    },
    model::plan::BackendRef,
    model::table_digest::{self, DigestCache, ServiceDigest},
    ops::events::EventLog,
    ops::scaling::{Scaling, ScalingView},
    ops::stats::{self, Sampler, Snapshot},
    ops::views::{ChangeResult, HealthView, StatsView},
};

/// What the API and the metrics need of the data path.
pub trait DataPath: Dataplane + Send + 'static {}
impl<T: Dataplane + Send + 'static> DataPath for T {}

pub type Shared<D> = Arc<SharedRuntime<D>>;

/// Why a change was not made. Nothing changed in any case: not the desired state, not
/// the state file, not the kernel.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error(transparent)]
    Refused(#[from] EditError),
    #[error("persisting the desired state: {0}")]
    Persist(#[from] StateFileError),
    #[error(
        "applying the desired state to the data path: {0:#} (the previous state was restored)"
    )]
    Apply(anyhow::Error),
    /// A data-path table has no room for the change (see
    /// [`DataplaneError::TableFull`]): a limit the operator set, not a fault.
    #[error("no room in the data path: {0:#} (nothing was changed)")]
    TableFull(anyhow::Error),
}

impl ChangeError {
    /// What a failed apply means: [`ChangeError::TableFull`] when a table was full,
    /// wherever in the error's context, else [`ChangeError::Apply`].
    fn applying(e: anyhow::Error) -> Self {
        let full = e.chain().any(|cause| {
            matches!(
                cause.downcast_ref::<DataplaneError>(),
                Some(DataplaneError::TableFull { .. })
            )
        });
        if full {
            Self::TableFull(e)
        } else {
            Self::Apply(e)
        }
    }
}

pub struct SharedRuntime<D> {
    inner: Mutex<Inner<D>>,
    started: Instant,
    ready: AtomicBool,
    /// Woken after every change, so that lbd's loop re-syncs the health checker.
    changed: tokio::sync::Notify,
    persist_failures: AtomicU64,
    /// Changes refused because a data-path table was full.
    refused_table_full: AtomicU64,
    /// Lifecycle events, published under the runtime's lock so they stay in order.
    events: Arc<EventLog>,
    /// The VIPs as lbd's loop last published them (see `shared_node`).
    vips: Mutex<Vec<crate::ops::node_view::VipView>>,
}

struct Inner<D> {
    runtime: Runtime<D>,
    sampler: Sampler,
    store: Store,
    /// Table digests, recomputed only for services whose tables changed.
    digests: DigestCache,
    /// The scaling signals, taken with each periodic sample.
    scaling: Scaling,
}

impl<D: Dataplane> SharedRuntime<D> {
    /// Takes over a started runtime.
    pub fn new(runtime: Runtime<D>) -> Self {
        let store = Store::new(&runtime.config().state_file)
            .with_drained_since(runtime.config().announce.drained_since);
        Self {
            inner: Mutex::new(Inner {
                runtime,
                sampler: Sampler::default(),
                store,
                digests: DigestCache::default(),
                scaling: Scaling::default(),
            }),
            started: Instant::now(),
            ready: AtomicBool::new(false),
            changed: tokio::sync::Notify::new(),
            persist_failures: AtomicU64::new(0),
            refused_table_full: AtomicU64::new(0),
            events: Arc::new(EventLog::default()),
            vips: Mutex::new(Vec::new()),
        }
    }

    /// The lifecycle events (`GET /v1/events`, the event hook).
    pub fn events(&self) -> &Arc<EventLog> {
        &self.events
    }

    /// Publishes what the runtime noted; called under the lock after anything that may
    /// have changed the fleet.
    fn publish(&self, inner: &mut Inner<D>) {
        self.events.publish(inner.runtime.take_events());
    }

    fn lock(&self) -> MutexGuard<'_, Inner<D>> {
        // A panic while holding the lock leaves the last state that was fully applied or
        // restored: every change below either completes or is undone before returning.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks the data path attached and serving (for `/readyz`).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// A copy of the desired state.
    pub fn desired(&self) -> Config {
        self.lock().runtime.config().clone()
    }

    /// Runs `f` on the runtime, under the lock (lbd's loop: probes, timers, ...).
    pub fn with<T>(&self, f: impl FnOnce(&mut Runtime<D>) -> T) -> T {
        let mut inner = self.lock();
        let out = f(&mut inner.runtime);
        self.publish(&mut inner);
        out
    }

    /// Resolves after a change was applied since the last call.
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    /// Makes one change (see the module docs); it is persisted as a journal record.
    pub fn change(&self, edit: &Edit) -> Result<ChangeResult, ChangeError> {
        match edit.backend() {
            Some((service, at)) => self.change_backend(edit, service, at),
            None => self.commit(|current| edit::apply(current, edit), Some(edit), false),
        }
    }

    /// [`SharedRuntime::change`] of one backend, made in place: the desired state is
    /// not copied, only that backend is compared and persisted, and only its service is
    /// re-planned; a failure takes the edit back (see `edit::Revert`).
    fn change_backend(
        &self,
        edit: &Edit,
        service: &str,
        at: BackendAddr,
    ) -> Result<ChangeResult, ChangeError> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let revert = edit::apply_in_place(inner.runtime.config_mut(), edit)?;
        let config = inner.runtime.config();
        let after = config
            .services
            .iter()
            .find(|s| s.name == service)
            .and_then(|s| s.backends.iter().find(|b| BackendAddr::from(*b) == at));
        let changes = diff::backend_change(service, at, revert.backend_before(), after);
        if changes.is_empty() {
            return Ok(ChangeResult {
                changes,
                applied: true,
            });
        }
        let ops = journal::ops(edit, config);
        let undo = match self.persist(&mut inner.store, config, ops.as_deref()) {
            Ok(undo) => undo,
            Err(e) => {
                revert.undo(inner.runtime.config_mut());
                return Err(e.into());
            }
        };
        let target = BackendRef {
            service: service.to_string(),
            address: at.address,
            port: at.port,
        };
        if let Err(e) = inner
            .runtime
            .edited(Edited::Backend(&target), Instant::now())
        {
            // All or nothing: put the state, the file and the kernel back as they were.
            // A backend this edit added never reached the data path: it leaves at once
            // rather than retiring, which would take a slot it never had.
            let added = matches!(revert, edit::Revert::RemoveBackend { .. });
            revert.undo(inner.runtime.config_mut());
            if added {
                inner.runtime.fleet_mut().forget(&target);
            }
            if let Err(e) = inner.store.undo(undo, &inner.runtime.config().services) {
                self.persist_failures.fetch_add(1, Ordering::Relaxed);
                error!("restoring the state file after a failed apply: {e}");
            }
            if let Err(undo) = inner
                .runtime
                .edited(Edited::Backend(&target), Instant::now())
            {
                error!("restoring the data path after a failed apply: {undo:#}");
            }
            // What the edit and its undo noted did not happen.
            inner.runtime.take_events();
            return Err(self.refused(e));
        }
        for c in &changes {
            info!("desired state: {c}");
        }
        self.publish(inner);
        self.changed.notify_one();
        Ok(ChangeResult {
            changes,
            applied: true,
        })
    }

    /// Computes the next state with `next`, and unless `dry_run` persists and applies it
    /// (persisted as a whole snapshot: `next` may have changed anything).
    pub fn change_with(
        &self,
        next: impl FnOnce(&Config) -> Result<Config, EditError>,
        dry_run: bool,
    ) -> Result<ChangeResult, ChangeError> {
        self.commit(next, None, dry_run)
    }

    fn commit(
        &self,
        next: impl FnOnce(&Config) -> Result<Config, EditError>,
        edit: Option<&Edit>,
        dry_run: bool,
    ) -> Result<ChangeResult, ChangeError> {
        let mut inner = self.lock();
        let previous = inner.runtime.config().clone();
        let next = next(&previous)?;
        let changes = match edit.and_then(Edit::backend) {
            Some((service, at)) => diff::backend(&previous, &next, service, at),
            None => diff::services(&previous, &next),
        };
        if dry_run || changes.is_empty() {
            return Ok(ChangeResult {
                changes,
                applied: !dry_run,
            });
        }
        let ops = edit.and_then(|e| journal::ops(e, &next));
        let undo = self.persist(&mut inner.store, &next, ops.as_deref())?;
        // An edit within one service re-plans and rewrites that service alone.
        let only = match edit {
            Some(Edit::SetZoneDrained {
                service: Some(service),
                ..
            })
            | Some(Edit::SetFilterRule { service, .. }) => Some(service.as_str()),
            _ => edit.and_then(Edit::backend).map(|(service, _)| service),
        };
        let applied = match only {
            Some(service) => inner.runtime.reload_service(next, service, Instant::now()),
            None => inner.runtime.reload(next, Instant::now()),
        };
        if let Err(e) = applied {
            // All or nothing: put the file and the kernel back as they were.
            if let Err(e) = inner.store.undo(undo, &previous.services) {
                self.persist_failures.fetch_add(1, Ordering::Relaxed);
                error!("restoring the state file after a failed apply: {e}");
            }
            if let Err(undo) = inner.runtime.reload(previous, Instant::now()) {
                error!("restoring the data path after a failed apply: {undo:#}");
            }
            // What the change and its undo noted did not happen.
            inner.runtime.take_events();
            return Err(self.refused(e));
        }
        for c in &changes {
            info!("desired state: {c}");
        }
        self.publish(&mut inner);
        self.changed.notify_one();
        Ok(ChangeResult {
            changes,
            applied: true,
        })
    }

    /// The error for a change whose apply failed and was taken back; a full table is
    /// logged and counted here.
    fn refused(&self, e: anyhow::Error) -> ChangeError {
        let e = ChangeError::applying(e);
        if let ChangeError::TableFull(_) = &e {
            self.refused_table_full.fetch_add(1, Ordering::Relaxed);
            warn!("change refused: {e}");
        }
        e
    }

    /// Persists `next` (see `state_file::Store`); a failure is logged and counted.
    fn persist(
        &self,
        store: &mut Store,
        next: &Config,
        ops: Option<&[journal::Op]>,
    ) -> Result<Undo, StateFileError> {
        if store.path() != next.state_file {
            *store = Store::new(&next.state_file).with_drained_since(next.announce.drained_since);
        }
        store.persist(&next.services, ops).inspect_err(|e| {
            self.persist_failures.fetch_add(1, Ordering::Relaxed);
            error!("persisting a change: {e}; the change was refused");
        })
    }

    /// Writes that failed to persist the desired state (for /metrics).
    pub fn persist_failures(&self) -> u64 {
        self.persist_failures.load(Ordering::Relaxed)
    }

    /// Changes refused because a data-path table was full (for /metrics).
    pub fn refused_table_full(&self) -> u64 {
        self.refused_table_full.load(Ordering::Relaxed)
    }

    /// Bytes written to the state file and its journal by this process.
    pub fn persisted_bytes(&self) -> u64 {
        self.lock().store.bytes_written()
    }

    /// Replaces the whole desired state with `next`, already loaded and validated by
    /// `crate::model::desired::load` (config file + state file), without writing the state
    /// file: a reload (SIGHUP). Returns what changed in the services.
    pub fn reload(&self, next: Config) -> anyhow::Result<(ChangeResult, ApplySummary)> {
        let mut inner = self.lock();
        let changes = diff::services(inner.runtime.config(), &next);
        let summary = inner.runtime.reload(next, Instant::now())?;
        for c in &changes {
            info!("reloaded: {c}");
        }
        self.publish(&mut inner);
        self.changed.notify_one();
        Ok((
            ChangeResult {
                changes,
                applied: true,
            },
            summary,
        ))
    }

    /// Hands a probe result to the runtime (which also keeps it for `lbctl health`).
    /// A map lookup unless the result changes the backend's eligibility.
    pub fn on_probe(
        &self,
        at: &BackendRef,
        outcome: &Outcome,
        latency: Duration,
    ) -> anyhow::Result<ApplySummary> {
        let mut inner = self.lock();
        let applied = inner.runtime.on_probe(at, outcome, latency, Instant::now());
        self.publish(&mut inner);
        applied
    }

    /// Takes the periodic counter sample that per-second rates are measured against.
    pub fn sample(&self) -> anyhow::Result<()> {
        let mut inner = self.lock();
        let Some(plan) = inner.runtime.controller().plan() else {
            return Ok(());
        };
        let snapshot = Snapshot::read(plan, inner.runtime.controller().dataplane())?;
        if let (Some(recent), older) = inner.sampler.latest() {
            for line in crate::ops::surge::lines(older, recent, &snapshot) {
                log::warn!("{line}");
            }
        }
        let inner = &mut *inner;
        let (config, fleet) = (inner.runtime.config(), inner.runtime.fleet());
        let previous = inner.sampler.latest().0;
        let at = snapshot.at;
        inner.scaling.update(config, fleet, &snapshot, previous, at);
        inner.sampler.push(snapshot);
        Ok(())
    }

    /// Each service's scaling signals at the last periodic sample.
    pub fn scaling(&self) -> Vec<ScalingView> {
        self.lock().scaling.views().to_vec()
    }

    /// Fresh counters, with rates against the last periodic sample.
    pub fn stats(&self) -> anyhow::Result<StatsView> {
        let inner = self.lock();
        let controller = inner.runtime.controller();
        let Some(plan) = controller.plan() else {
            anyhow::bail!("the data path has not been programmed yet");
        };
        let now = Snapshot::read(plan, controller.dataplane())?;
        let baseline = inner.sampler.baseline(now.at);
        let health = |service: &str, at: &BackendAddr| health_of(&inner.runtime, service, at);
        Ok(stats::view(
            inner.runtime.config(),
            &now,
            baseline,
            self.uptime(),
            &health,
        ))
    }

    /// Every backend's health: the verdict, the last probe and why.
    pub fn health(&self) -> Vec<HealthView> {
        let inner = self.lock();
        let config = inner.runtime.config();
        let now = Instant::now();
        let mut out = Vec::new();
        for s in &config.services {
            for b in &s.backends {
                let at = BackendRef {
                    service: s.name.clone(),
                    address: b.address,
                    port: b.port,
                };
                let fleet = inner.runtime.fleet();
                let state = fleet.health(&at).unwrap_or(Health::Unknown);
                let record = fleet.probe_record(&at);
                let probe = record.and_then(|r| r.last.as_ref());
                let reason = match (state, probe) {
                    (_, None) => "no probe has answered yet".to_string(),
                    (Health::Unhealthy, Some(_)) if fleet.flapping(&at) => format!(
                        "flapping: held until {} consecutive probes pass",
                        s.health.flap_window
                    ),
                    (Health::Healthy, Some(_)) => {
                        format!("{} consecutive probes passed", s.health.healthy_threshold)
                    }
                    (Health::Unhealthy, Some(p)) if p.result == "ok" => {
                        "recovering: probes pass, not yet enough in a row".to_string()
                    }
                    (Health::Unhealthy, Some(p)) => format!("failing: {}", p.result),
                    (Health::Unknown, Some(p)) => format!("waiting for a verdict: {}", p.result),
                };
                out.push(HealthView {
                    service: s.name.clone(),
                    address: b.address,
                    port: b.port,
                    zone: b.zone.clone(),
                    state: state.to_string(),
                    last_probe: probe.map(|p| p.result.clone()),
                    latency_ms: probe.map(|p| p.latency.as_secs_f64() * 1e3),
                    last_probe_age_ms: record
                        .and_then(|r| r.age(now))
                        .map(|age| age.as_secs_f64() * 1e3),
                    probe_failures: record.map_or(0, |r| r.failures),
                    reason,
                });
            }
        }
        out
    }

    /// Each planned service's table and config digests (see `model::table_digest`), in
    /// plan order; empty before the data path is programmed.
    pub fn digests(&self) -> Vec<ServiceDigest> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let Some(plan) = inner.runtime.controller().plan() else {
            return Vec::new();
        };
        let config = inner.runtime.config();
        table_digest::service_digests(&mut inner.digests, plan, config)
    }

    /// The zone of a backend in the desired state (`None` once it was removed).
    pub fn zone_of(&self, at: &BackendRef) -> Option<String> {
        self.lock().runtime.fleet().zone(at).map(str::to_string)
    }
}

fn health_of<D: Dataplane>(runtime: &Runtime<D>, service: &str, at: &BackendAddr) -> String {
    let at = BackendRef {
        service: service.to_string(),
        address: at.address,
        port: at.port,
    };
    runtime
        .fleet()
        .health(&at)
        .unwrap_or(Health::Unknown)
        .to_string()
}

#[cfg(test)]
#[path = "shared_tests.rs"]
mod tests;

#[path = "shared_node.rs"]
mod node;
