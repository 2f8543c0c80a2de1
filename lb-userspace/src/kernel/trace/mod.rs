//! The sampled packet trace's userspace side (the data path's is `lb-ebpf/src/trace.rs`,
//! the record `lb_common::trace`). A [`Session`] switches the trace on for one service
//! and receives its records until it is dropped, which switches it off again: a trace
//! cannot outlive the request that asked for it. One task reads the ring buffer for
//! every session; it waits on the ring's descriptor, so while every trace is off (no
//! record is written) it costs nothing.
mod maps;

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
};

use anyhow::Context as _;
use aya::maps::{MapData, RingBuf};
use lb_common::trace::TraceRecord;
use log::{error, info};
use tokio::{io::unix::AsyncFd, sync::mpsc};

pub use self::maps::TraceMaps;

/// Records a session's reader may fall behind by before further ones are dropped.
const SESSION_QUEUE: usize = 4096;

/// Every trace session of this `lbd`, and the ring buffer's reader.
pub struct Tracer {
    state: Mutex<State>,
    /// Records read from the ring.
    pub records: AtomicU64,
    /// Records dropped because their session's client read too slowly.
    pub slow_reader_drops: AtomicU64,
    /// Records of a service with no session (its session ended while they were queued).
    pub unclaimed: AtomicU64,
}

struct State {
    maps: TraceMaps,
    /// The open session per service id.
    sessions: HashMap<u32, mpsc::Sender<TraceRecord>>,
}

/// Why a session could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("service {0} is already being traced; one trace per service at a time")]
    Busy(String),
    #[error("switching the trace on: {0:#}")]
    Map(anyhow::Error),
}

impl Tracer {
    /// Takes the trace's maps and starts the ring's reader on the current tokio runtime.
    pub fn start(mut maps: TraceMaps) -> anyhow::Result<Arc<Self>> {
        let ring = maps
            .take_ring()
            .context("the trace ring was already taken")?;
        // SAFETY: the ring owns its descriptor and keeps it open and the same for as long
        // as it lives, which is as long as the AsyncFd that owns it.
        let fd = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .map_err(|e| anyhow::anyhow!("registering the trace ring with the event loop: {e}"))?;
        let tracer = Arc::new(Self {
            state: Mutex::new(State {
                maps,
                sessions: HashMap::new(),
            }),
            records: AtomicU64::new(0),
            slow_reader_drops: AtomicU64::new(0),
            unclaimed: AtomicU64::new(0),
        });
        tokio::spawn(read(tracer.clone(), fd));
        Ok(tracer)
    }

    /// Traces 1 in `every` packets of service `name` (id `service`) until the session
    /// is dropped.
    pub fn open(
        self: &Arc<Self>,
        name: &str,
        service: u32,
        every: u32,
    ) -> Result<Session, OpenError> {
        let mut state = self.state.lock().expect("trace state lock");
        if state.sessions.contains_key(&service) {
            return Err(OpenError::Busy(name.to_string()));
        }
        state
            .maps
            .set_sample(service, every)
            .map_err(OpenError::Map)?;
        let (tx, rx) = mpsc::channel(SESSION_QUEUE);
        state.sessions.insert(service, tx);
        info!("tracing 1 in {every} packets of service {name}");
        Ok(Session {
            tracer: self.clone(),
            name: name.to_string(),
            service,
            records: rx,
            delivered: 0,
            lost_at_start: state.maps.lost().unwrap_or(0),
        })
    }

    /// Records lost to a full ring since the data path was loaded.
    pub fn ring_lost(&self) -> anyhow::Result<u64> {
        self.state.lock().expect("trace state lock").maps.lost()
    }

    /// Services being traced now.
    pub fn sessions(&self) -> usize {
        self.state.lock().expect("trace state lock").sessions.len()
    }

    fn deliver(&self, record: TraceRecord) {
        self.records.fetch_add(1, Ordering::Relaxed);
        let state = self.state.lock().expect("trace state lock");
        match state.sessions.get(&record.service) {
            Some(tx) => {
                if tx.try_send(record).is_err() {
                    self.slow_reader_drops.fetch_add(1, Ordering::Relaxed);
                }
            }
            None => {
                self.unclaimed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// One service's trace; dropping it switches the trace off.
pub struct Session {
    tracer: Arc<Tracer>,
    name: String,
    service: u32,
    records: mpsc::Receiver<TraceRecord>,
    delivered: u64,
    lost_at_start: u64,
}

impl Session {
    /// The next record; `None` never happens while the session lives.
    pub async fn next(&mut self) -> Option<TraceRecord> {
        let r = self.records.recv().await;
        self.delivered += r.is_some() as u64;
        r
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let mut state = self.tracer.state.lock().expect("trace state lock");
        state.sessions.remove(&self.service);
        if let Err(e) = state.maps.set_sample(self.service, 0) {
            // The data path keeps writing records nobody reads: counted as unclaimed.
            error!("switching off the trace of service {}: {e:#}", self.name);
        }
        let lost = state.maps.lost().unwrap_or(0) - self.lost_at_start;
        info!(
            "trace of service {} ended: {} records delivered; {lost} records of any service \
             lost to a full ring meanwhile (lb_trace_records_lost_total)",
            self.name, self.delivered
        );
    }
}

/// Reads the ring whenever the kernel says it has records, for as long as `lbd` runs.
async fn read(tracer: Arc<Tracer>, mut fd: AsyncFd<RingBuf<MapData>>) {
    loop {
        let mut guard = match fd.readable_mut().await {
            Ok(guard) => guard,
            Err(e) => {
                error!("the trace ring cannot be read any more: {e}");
                return;
            }
        };
        let ring = guard.get_inner_mut();
        while let Some(item) = ring.next() {
            if item.len() != size_of::<TraceRecord>() {
                error!("a trace record of {} bytes skipped", item.len());
                continue;
            }
            // SAFETY: TraceRecord is plain integers, and the item is exactly one record.
            let record: TraceRecord = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
            drop(item);
            tracer.deliver(record);
        }
        guard.clear_ready();
    }
}
