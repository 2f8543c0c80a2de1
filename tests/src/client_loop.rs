//! A client that keeps opening connections through the VIP on a background thread, one
//! after the other, and records when each started, how it ended and which backend
//! answered: the load of the fault tests. Bounded in time; stopped on drop.
use std::{
    net::IpAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime},
};

use crate::{
    client::{http_get_checked, FailureKind, GetError},
    netns,
};

/// The pause between two attempts.
const PACE: Duration = Duration::from_millis(2);

/// One connection attempt.
#[derive(Clone, Debug)]
pub struct Attempt {
    /// Wall-clock start (compared with lbd's log timestamps).
    pub start: SystemTime,
    pub end: SystemTime,
    /// The backend's name, or how it failed.
    pub result: Result<String, GetError>,
}

impl Attempt {
    pub fn backend(&self) -> Option<&str> {
        self.result.as_ref().ok().map(String::as_str)
    }

    pub fn failure(&self) -> Option<FailureKind> {
        self.result.as_ref().err().map(|e| e.kind)
    }
}

/// See the module docs.
pub struct ClientLoop {
    stop: Arc<AtomicBool>,
    attempts: Arc<Mutex<Vec<Attempt>>>,
    thread: Option<JoinHandle<()>>,
}

impl ClientLoop {
    /// Starts connecting from namespace `ns` to `vip:port`, each connection bounded by
    /// `per_conn`, the whole loop by `max_total`.
    pub fn start(
        ns: &str,
        vip: impl Into<IpAddr>,
        port: u16,
        per_conn: Duration,
        max_total: Duration,
    ) -> ClientLoop {
        let vip = vip.into();
        let stop = Arc::new(AtomicBool::new(false));
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, attempts) = (stop.clone(), attempts.clone());
            netns::spawn_in(ns, move || {
                let deadline = Instant::now() + max_total;
                while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                    let start = SystemTime::now();
                    let result = http_get_checked(vip, port, per_conn).map(|r| r.backend);
                    let attempt = Attempt {
                        start,
                        end: SystemTime::now(),
                        result,
                    };
                    attempts
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(attempt);
                    // A few hundred connections a second are plenty; a loop flat out
                    // would starve the probes and servers the test is judging.
                    std::thread::sleep(PACE);
                }
            })
        };
        ClientLoop {
            stop,
            attempts,
            thread: Some(thread),
        }
    }

    /// The attempts so far.
    pub fn attempts(&self) -> Vec<Attempt> {
        self.attempts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Stops after the attempt in progress and returns every attempt.
    pub fn stop(mut self) -> Vec<Attempt> {
        self.halt();
        self.attempts()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ClientLoop {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Attempts started in `[from, to)`.
pub fn started_between(attempts: &[Attempt], from: SystemTime, to: SystemTime) -> Vec<&Attempt> {
    attempts
        .iter()
        .filter(|a| a.start >= from && a.start < to)
        .collect()
}

/// The share of `attempts` answered by `backend`.
pub fn share_of(attempts: &[&Attempt], backend: &str) -> f64 {
    if attempts.is_empty() {
        return 0.0;
    }
    attempts
        .iter()
        .filter(|a| a.backend() == Some(backend))
        .count() as f64
        / attempts.len() as f64
}
