//! `lbd`'s shared state while it runs: the desired state and the controller that applies
//! it, behind one lock. Every change — from the API, and after issue 3 from reloads —
//! goes through [`Runtime::change`]: the next desired state is computed by a pure
//! function, validated as a whole, persisted atomically, then applied; all of it under
//! the lock, so concurrent requests are serialized and none loses an update.
//!
//! The lock is a `std::sync::Mutex` taken on blocking threads only (callers use
//! `spawn_blocking`): applying writes kernel maps and persisting fsyncs, both blocking.
use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Mutex, MutexGuard,
    },
    time::{Duration, Instant},
};

use log::{error, info};

use crate::{
    api::views::{ChangeResult, StatsView},
    config::Config,
    controller::Controller,
    dataplane::Dataplane,
    desired::{
        diff,
        edit::{self, BackendAddr, Edit, EditError},
        state_file::{self, StateDoc, StateFileError},
    },
    stats::{self, CounterSource, Sampler, Snapshot},
};

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
}

pub struct Runtime<D> {
    inner: Mutex<Inner<D>>,
    started: Instant,
    ready: AtomicBool,
}

struct Inner<D> {
    desired: Config,
    controller: Controller<D>,
    sampler: Sampler,
}

impl<D: Dataplane + CounterSource> Runtime<D> {
    /// Takes over a controller that has already applied `desired`.
    pub fn new(desired: Config, controller: Controller<D>) -> Self {
        Self {
            inner: Mutex::new(Inner {
                desired,
                controller,
                sampler: Sampler::default(),
            }),
            started: Instant::now(),
            ready: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<D>> {
        // A panic while holding the lock leaves the last state that was fully applied or
        // restored: every step below either completes or is undone before returning.
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
        self.lock().desired.clone()
    }

    /// Runs `f` with the desired state and the controller, under the lock.
    pub fn with<T>(&self, f: impl FnOnce(&Config, &mut Controller<D>) -> T) -> T {
        let mut inner = self.lock();
        let inner = &mut *inner;
        f(&inner.desired, &mut inner.controller)
    }

    /// Makes one change (see the module docs).
    pub fn change(&self, edit: &Edit) -> Result<ChangeResult, ChangeError> {
        self.change_with(|current| edit::apply(current, edit), false)
    }

    /// Computes the next state with `next`, and unless `dry_run` persists and applies it.
    pub fn change_with(
        &self,
        next: impl FnOnce(&Config) -> Result<Config, EditError>,
        dry_run: bool,
    ) -> Result<ChangeResult, ChangeError> {
        let mut inner = self.lock();
        let next = next(&inner.desired)?;
        let changes = diff::services(&inner.desired, &next);
        if dry_run || changes.is_empty() {
            return Ok(ChangeResult {
                changes,
                applied: !dry_run,
            });
        }
        persist(&next)?;
        if let Err(e) = inner.controller.apply(&next) {
            // All or nothing: put the file and the kernel back as they were.
            let previous = inner.desired.clone();
            if let Err(undo) = persist(&previous) {
                error!("restoring the state file after a failed apply: {undo}");
            }
            if let Err(undo) = inner.controller.apply(&previous) {
                error!("restoring the data path after a failed apply: {undo:#}");
            }
            return Err(ChangeError::Apply(e));
        }
        for c in &changes {
            info!("desired state: {c}");
        }
        inner.desired = next;
        Ok(ChangeResult {
            changes,
            applied: true,
        })
    }

    /// Replaces the whole desired state with `next`, already loaded and validated by
    /// `crate::desired::load` (config file + state file), without writing the state
    /// file: the entry point for a reload (SIGHUP, issue 3). Returns what changed.
    pub fn reload(&self, next: Config) -> Result<ChangeResult, ChangeError> {
        let mut inner = self.lock();
        let changes = diff::services(&inner.desired, &next);
        inner.controller.apply(&next).map_err(ChangeError::Apply)?;
        for c in &changes {
            info!("reloaded: {c}");
        }
        inner.desired = next;
        Ok(ChangeResult {
            changes,
            applied: true,
        })
    }

    /// Takes the periodic counter sample that per-second rates are measured against.
    pub fn sample(&self) -> anyhow::Result<()> {
        let mut inner = self.lock();
        let Some(plan) = inner.controller.plan() else {
            return Ok(());
        };
        let snapshot = Snapshot::read(plan, inner.controller.dataplane())?;
        inner.sampler.push(snapshot);
        Ok(())
    }

    /// Fresh counters, with rates against the last periodic sample.
    pub fn stats(&self, health: stats::HealthOf<'_>) -> anyhow::Result<StatsView> {
        let inner = self.lock();
        let Some(plan) = inner.controller.plan() else {
            anyhow::bail!("the data path has not been programmed yet");
        };
        let now = Snapshot::read(plan, inner.controller.dataplane())?;
        let baseline = inner.sampler.baseline(now.at);
        Ok(stats::view(
            &inner.desired,
            &now,
            baseline,
            self.uptime(),
            health,
        ))
    }
}

fn persist(config: &Config) -> Result<(), StateFileError> {
    state_file::write_atomic(
        &config.state_file,
        &StateDoc {
            services: config.services.clone(),
        },
    )
}

/// Health as lbd knows it today: nothing probes backends before issue 3, so every
/// backend is `unknown` (never a made-up `healthy`).
pub fn health_unknown(_service: &str, _backend: &BackendAddr) -> String {
    "unknown".to_string()
}

#[cfg(test)]
#[path = "runtime_tests.rs"]
mod tests;
