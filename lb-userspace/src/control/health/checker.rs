//! Probing every backend: one tokio task per backend (not a thread), each probing on its
//! own interval and sending the results to the daemon's loop over a channel.
//!
//! Jitter: a task starts at a random point of its first interval, and every later wait
//! is 90-100% of the interval at random, so probes of many backends spread out instead
//! of firing together, and a probe never comes later than one interval after the last
//! (the detection bound `unhealthy_threshold x interval` holds).
use std::{collections::BTreeMap, time::Duration};

use tokio::{sync::mpsc, task::JoinHandle, time::Instant};

use super::{
    machine::Outcome,
    probe::{probe, ProbeSpec},
};
use crate::model::plan::BackendRef;

/// One probe result.
#[derive(Debug)]
pub struct Report {
    pub at: BackendRef,
    /// Which task sent it: a report of a task that was replaced is stale.
    pub generation: u64,
    pub outcome: Outcome,
    /// How long the probe took (to its answer, or to its failure).
    pub latency: Duration,
    /// When it completed (the loop measures how late it applies it).
    pub done: std::time::Instant,
}

struct Task {
    spec: ProbeSpec,
    generation: u64,
    handle: JoinHandle<()>,
}

/// The probing tasks; all are aborted when it is dropped.
pub struct Checker {
    reports: mpsc::Sender<Report>,
    tasks: BTreeMap<BackendRef, Task>,
    next_generation: u64,
}

/// The wait before the next probe: `interval` minus up to a tenth of it, `r` in [0, 1).
pub fn jittered(interval: Duration, r: f64) -> Duration {
    interval.saturating_sub(interval.mul_f64(0.1 * r.clamp(0.0, 1.0)))
}

impl Checker {
    pub fn new(reports: mpsc::Sender<Report>) -> Self {
        Self {
            reports,
            tasks: BTreeMap::new(),
            next_generation: 0,
        }
    }

    /// Probes exactly the backends in `wanted`: tasks whose spec is unchanged keep
    /// running (their rhythm and streaks are not disturbed), changed ones restart, the
    /// rest stop.
    pub fn sync(&mut self, wanted: BTreeMap<BackendRef, ProbeSpec>) {
        self.tasks.retain(|at, task| {
            let keep = wanted.get(at) == Some(&task.spec);
            if !keep {
                task.handle.abort();
            }
            keep
        });
        for (at, spec) in wanted {
            if self.tasks.contains_key(&at) {
                continue;
            }
            let generation = self.next_generation;
            self.next_generation += 1;
            let handle = tokio::spawn(probe_loop(
                at.clone(),
                spec.clone(),
                generation,
                self.reports.clone(),
            ));
            self.tasks.insert(
                at,
                Task {
                    spec,
                    generation,
                    handle,
                },
            );
        }
    }

    /// Whether `report` comes from a task that still runs.
    pub fn is_current(&self, report: &Report) -> bool {
        self.tasks
            .get(&report.at)
            .is_some_and(|t| t.generation == report.generation)
    }

    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        for task in self.tasks.values() {
            task.handle.abort();
        }
    }
}

async fn probe_loop(
    at: BackendRef,
    spec: ProbeSpec,
    generation: u64,
    reports: mpsc::Sender<Report>,
) {
    tokio::time::sleep(spec.interval.mul_f64(fastrand::f64())).await;
    loop {
        let started = Instant::now();
        let outcome = probe(&spec).await;
        let report = Report {
            at: at.clone(),
            generation,
            outcome,
            latency: started.elapsed(),
            done: std::time::Instant::now(),
        };
        if reports.send(report).await.is_err() {
            return;
        }
        tokio::time::sleep_until(started + jittered(spec.interval, fastrand::f64())).await;
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddrV4};

    use super::*;
    use crate::control::health::{machine::Failure, probe::ProbeKind};

    #[test]
    fn waits_are_between_ninety_and_a_hundred_percent_of_the_interval() {
        let interval = Duration::from_millis(200);
        assert_eq!(jittered(interval, 0.0), interval);
        assert_eq!(jittered(interval, 0.5), Duration::from_millis(190));
        let shortest = jittered(interval, 0.999_999);
        assert!(shortest > Duration::from_millis(180) && shortest < Duration::from_micros(180_001));
        assert_eq!(jittered(interval, 7.0), Duration::from_millis(180));
    }

    fn at(port: u16) -> BackendRef {
        BackendRef {
            service: "web".into(),
            address: Ipv4Addr::LOCALHOST.into(),
            port,
        }
    }

    fn spec(port: u16, interval_ms: u64) -> ProbeSpec {
        ProbeSpec {
            target: SocketAddrV4::new(Ipv4Addr::LOCALHOST, port).into(),
            kind: ProbeKind::Tcp,
            interval: Duration::from_millis(interval_ms),
            // Longer than the interval on purpose: a loaded machine must not turn the
            // listener's answer into a timeout.
            timeout: Duration::from_secs(30),
            via: None,
        }
    }

    #[tokio::test]
    async fn every_backend_is_probed_repeatedly_and_replaced_tasks_go_stale() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let up = listener.local_addr().unwrap().port();
        let down = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let (tx, mut rx) = mpsc::channel(64);
        let mut checker = Checker::new(tx);
        checker.sync([(at(up), spec(up, 100)), (at(down), spec(down, 100))].into());
        assert_eq!(checker.len(), 2);
        let mut seen: BTreeMap<u16, Vec<Outcome>> = BTreeMap::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while seen.values().map(Vec::len).min().unwrap_or(0) < 3 || seen.len() < 2 {
            let report = tokio::time::timeout_at(deadline, rx.recv())
                .await
                .expect("probes report within 60 s")
                .unwrap();
            assert!(checker.is_current(&report));
            seen.entry(report.at.port).or_default().push(report.outcome);
        }
        assert!(seen[&up].iter().all(|o| o.is_ok()), "{seen:?}");
        assert!(
            seen[&down].iter().all(|o| *o == Err(Failure::Refused)),
            "{seen:?}"
        );
        // A changed spec restarts the task under a new generation, so reports of the
        // old one are stale; the same spec keeps the task.
        let old = Report {
            at: at(up),
            generation: checker.tasks[&at(up)].generation,
            outcome: Ok(()),
            latency: Duration::ZERO,
            done: std::time::Instant::now(),
        };
        assert!(checker.is_current(&old));
        checker.sync([(at(up), spec(up, 150))].into());
        assert_eq!(checker.len(), 1, "the other backend's task stopped");
        assert!(!checker.is_current(&old));
        let generation = checker.tasks[&at(up)].generation;
        checker.sync([(at(up), spec(up, 150))].into());
        assert_eq!(checker.tasks[&at(up)].generation, generation);
        drop(listener);
    }
}
