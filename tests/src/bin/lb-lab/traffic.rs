//! Background traffic for the story: one thread in the client namespace opening short
//! HTTP connections through the VIP, counting answers per backend and failures, until
//! stopped or until its time limit (every load loop here ends by itself).
use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use lb_tests::{client::http_get, netns, VIP, VIP_PORT};

#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub per_backend: BTreeMap<String, u64>,
    pub failed: u64,
}

pub struct Traffic {
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
    thread: Option<JoinHandle<()>>,
}

impl Traffic {
    /// Starts about `per_second` connections a second from `ns`, for at most `limit`.
    pub fn start(ns: &str, per_second: u32, limit: Duration) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Mutex::new(Tally::default()));
        let (s, t) = (stop.clone(), tally.clone());
        let pause = Duration::from_secs(1) / per_second.max(1);
        let thread = netns::spawn_in(ns, move || {
            let started = Instant::now();
            while !s.load(Ordering::SeqCst) && started.elapsed() < limit {
                let result = http_get(VIP, VIP_PORT, Duration::from_millis(500));
                let mut tally = t.lock().unwrap_or_else(|e| e.into_inner());
                match result {
                    Ok(reply) => *tally.per_backend.entry(reply.backend).or_default() += 1,
                    Err(_) => tally.failed += 1,
                }
                drop(tally);
                std::thread::sleep(pause);
            }
        });
        Traffic {
            stop,
            tally,
            thread: Some(thread),
        }
    }

    pub fn tally(&self) -> Tally {
        self.tally.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
