//! The tier tests' load, from the client namespace: new connections at a steady rate
//! (one GET each, answered and closed by the backend) and long-lived connections that
//! each echo a line every 100 ms, on a thread of their own so one stalled connection
//! does not delay the others. Connections time out after a few seconds, so a
//! retransmitted SYN (1 s) or segment still counts as a success. Every loop ends by
//! itself within its limit; stopped on drop.
use std::{
    net::Ipv4Addr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::{
    client::{hold, http_get},
    netns,
};

/// A connection (or one echo) that takes longer than this failed.
pub const CONN_TIMEOUT: Duration = Duration::from_secs(4);
pub const ECHO_EVERY: Duration = Duration::from_millis(100);

/// A new connection that was answered: its source port and backend.
#[derive(Clone, Debug)]
pub struct NewConn {
    pub sport: u16,
    pub backend: String,
}

/// A long-lived connection's record.
#[derive(Clone, Debug)]
pub struct LongLived {
    pub sport: u16,
    pub backend: String,
    pub echoes: usize,
    /// Longest time between two answered echoes.
    pub longest_gap: Duration,
    /// How it broke, if it did.
    pub broken: Option<String>,
}

#[derive(Default)]
struct Shared {
    answered: Vec<NewConn>,
    failed: Vec<String>,
    long_lived: Vec<LongLived>,
}

/// What the load saw (see [`TierLoad::figures`]).
#[derive(Clone, Debug)]
pub struct Figures {
    pub attempted: usize,
    pub answered: Vec<NewConn>,
    pub failed: Vec<String>,
    pub long_lived: Vec<LongLived>,
}

impl Figures {
    pub fn broken(&self) -> Vec<&LongLived> {
        self.long_lived
            .iter()
            .filter(|l| l.broken.is_some())
            .collect()
    }

    pub fn longest_gap(&self) -> Duration {
        self.long_lived
            .iter()
            .map(|l| l.longest_gap)
            .max()
            .unwrap_or_default()
    }

    pub fn echoes(&self) -> usize {
        self.long_lived.iter().map(|l| l.echoes).sum()
    }

    /// One line of figures for the test's output.
    pub fn line(&self, label: &str) -> String {
        format!(
            "{label}: new connections attempted {}, failed {}; long-lived {} ({} echoes), broken {}; longest echo gap {} ms",
            self.attempted,
            self.failed.len(),
            self.long_lived.len(),
            self.echoes(),
            self.broken().len(),
            self.longest_gap().as_millis()
        )
    }

    /// Panics unless no new connection failed and no long-lived one broke, naming the
    /// first few of each.
    pub fn assert_none_failed(&self, label: &str) {
        let broken: Vec<_> = self
            .broken()
            .iter()
            .take(5)
            .map(|l| l.broken.clone())
            .collect();
        assert!(
            self.failed.is_empty() && broken.is_empty(),
            "{}\nfailed: {:?}\nbroken: {broken:?}",
            self.line(label),
            &self.failed[..self.failed.len().min(5)]
        );
    }
}

/// See the module docs.
pub struct TierLoad {
    stop: Arc<AtomicBool>,
    shared: Arc<Mutex<Shared>>,
    threads: Vec<JoinHandle<()>>,
}

impl TierLoad {
    /// Opens `long_lived` connections to `vip:port` from namespace `ns` (panics if one
    /// cannot be opened), then runs them and `rate` new connections a second, for at
    /// most `limit`.
    pub fn start(
        ns: &str,
        vip: Ipv4Addr,
        port: u16,
        long_lived: usize,
        rate: u32,
        limit: Duration,
    ) -> TierLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Mutex::new(Shared::default()));
        let mut threads = Vec::new();
        let ends = Instant::now() + limit;
        for n in 0..long_lived {
            let mut conn = netns::run_in(ns, || hold(vip, port, CONN_TIMEOUT))
                .unwrap_or_else(|e| panic!("long-lived connection #{n}: {e}"));
            let slot = {
                let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
                s.long_lived.push(LongLived {
                    sport: conn.local.port(),
                    backend: conn.backend.clone(),
                    echoes: 0,
                    longest_gap: Duration::ZERO,
                    broken: None,
                });
                s.long_lived.len() - 1
            };
            let (stop, shared) = (stop.clone(), shared.clone());
            threads.push(netns::spawn_in(ns, move || {
                let mut last = Instant::now();
                let mut i = 0usize;
                while !stop.load(Ordering::SeqCst) && Instant::now() < ends {
                    std::thread::sleep(ECHO_EVERY);
                    let msg = format!("ping {n}.{i}\n");
                    i += 1;
                    let result = conn.echo(&msg, CONN_TIMEOUT);
                    let now = Instant::now();
                    let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
                    let rec = &mut s.long_lived[slot];
                    match result {
                        Ok(reply) if reply == msg => {
                            rec.echoes += 1;
                            rec.longest_gap = rec.longest_gap.max(now - last);
                            last = now;
                        }
                        Ok(reply) => {
                            rec.broken = Some(format!("sent {msg:?}, got {reply:?}"));
                            return;
                        }
                        Err(e) => {
                            rec.broken = Some(e);
                            return;
                        }
                    }
                }
                conn.close();
            }));
        }
        let (stop2, shared2) = (stop.clone(), shared.clone());
        let period = Duration::from_secs(1) / rate.max(1);
        threads.push(netns::spawn_in(ns, move || {
            let started = Instant::now();
            let mut k = 0u32;
            while !stop2.load(Ordering::SeqCst) && Instant::now() < ends {
                let due = started + period * k;
                k += 1;
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let result = http_get(vip, port, CONN_TIMEOUT);
                let mut s = shared2.lock().unwrap_or_else(|e| e.into_inner());
                match result {
                    Ok(r) => s.answered.push(NewConn {
                        sport: r.local.port(),
                        backend: r.backend,
                    }),
                    Err(e) => s.failed.push(e),
                }
            }
        }));
        TierLoad {
            stop,
            shared,
            threads,
        }
    }

    /// What happened so far.
    pub fn figures(&self) -> Figures {
        let s = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        Figures {
            attempted: s.answered.len() + s.failed.len(),
            answered: s.answered.clone(),
            failed: s.failed.clone(),
            long_lived: s.long_lived.clone(),
        }
    }

    /// Waits (at most `limit`) until `n` more new connections were attempted: traffic
    /// ran through whatever state the test is in, however slow the machine.
    pub fn wait_attempts(&self, n: usize, limit: Duration) {
        let want = self.figures().attempted + n;
        let deadline = Instant::now() + limit;
        while self.figures().attempted < want {
            assert!(
                Instant::now() < deadline,
                "the load attempted fewer than {n} connections in {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops every loop (each within one connection timeout) and returns the figures.
    pub fn stop(mut self) -> Figures {
        self.halt();
        self.figures()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for TierLoad {
    fn drop(&mut self) {
        self.halt();
    }
}
