//! One connection's phase (waiting for a request, or answering one), the deadline that
//! phase sets, and the reads that move it along.
use std::{
    io,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Instant,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::Notify,
};

use super::table::{EvictionRank, Waiting};
use crate::model::config::ConnectionLimits;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for a request since `since` (accept, or the end of the last answer);
    /// `head_from` is when its first byte came.
    Waiting {
        since: Instant,
        head_from: Option<Instant>,
    },
    /// Answering `requests` requests: no deadline (a handler bounds its own work).
    Busy { requests: u32 },
}

/// Why lbd closed a connection on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeout {
    /// A request's header did not arrive whole within `header_timeout`.
    Header,
    /// No request within `idle_timeout`.
    Idle,
}

/// When the connection in `phase` is to be closed, and why.
pub fn deadline(phase: Phase, limits: &ConnectionLimits) -> Option<(Instant, Timeout)> {
    match phase {
        Phase::Waiting {
            head_from: Some(from),
            ..
        } => Some((from + limits.header_timeout, Timeout::Header)),
        Phase::Waiting { since, .. } => Some((since + limits.idle_timeout, Timeout::Idle)),
        Phase::Busy { .. } => None,
    }
}

/// Shared by the connection's task, its I/O and its requests, and the listener's table.
#[derive(Debug)]
pub struct ConnState {
    phase: Mutex<Phase>,
    /// Wakes the task when the phase changed (its deadline may have moved).
    pub changed: Notify,
    /// Tells the task to close: the connection was evicted to make room.
    pub evict: Notify,
}

impl ConnState {
    pub fn new(now: Instant) -> Arc<Self> {
        Arc::new(Self {
            phase: Mutex::new(Phase::Waiting {
                since: now,
                head_from: None,
            }),
            changed: Notify::new(),
            evict: Notify::new(),
        })
    }

    pub fn phase(&self) -> Phase {
        *self.phase.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update(&self, f: impl FnOnce(&mut Phase)) {
        let mut phase = self.phase.lock().unwrap_or_else(|e| e.into_inner());
        let before = *phase;
        f(&mut phase);
        if *phase != before {
            self.changed.notify_one();
        }
    }

    /// Bytes arrived: while waiting, they are a request's header starting.
    fn on_read(&self, now: Instant) {
        self.update(|p| {
            if let Phase::Waiting {
                head_from: from @ None,
                ..
            } = p
            {
                *from = Some(now);
            }
        });
    }

    /// A request's header is in and its handler runs until the guard is dropped.
    pub fn begin_request(self: &Arc<Self>) -> RequestGuard {
        self.update(|p| {
            *p = match *p {
                Phase::Busy { requests } => Phase::Busy {
                    requests: requests + 1,
                },
                Phase::Waiting { .. } => Phase::Busy { requests: 1 },
            }
        });
        RequestGuard(self.clone())
    }
}

impl Waiting for Arc<ConnState> {
    fn eviction_rank(&self) -> Option<EvictionRank> {
        match self.phase() {
            Phase::Waiting { since, head_from } => Some(EvictionRank {
                request_started: head_from.is_some(),
                since,
            }),
            Phase::Busy { .. } => None,
        }
    }
}

/// Marks the end of a request's handling when dropped (also when it is cancelled).
pub struct RequestGuard(Arc<ConnState>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let now = Instant::now();
        self.0.update(|p| {
            *p = match *p {
                Phase::Busy { requests } if requests > 1 => Phase::Busy {
                    requests: requests - 1,
                },
                _ => Phase::Waiting {
                    since: now,
                    head_from: None,
                },
            }
        });
    }
}

/// A stream whose reads advance the connection's phase.
pub struct Tracked<S> {
    pub stream: S,
    pub state: Arc<ConnState>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.state.on_read(Instant::now());
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_phase_sets_the_deadline() {
        let limits = ConnectionLimits {
            max: 4,
            header_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(30),
        };
        let t0 = Instant::now();
        let state = ConnState::new(t0);
        assert_eq!(
            deadline(state.phase(), &limits),
            Some((t0 + Duration::from_secs(30), Timeout::Idle))
        );
        let t1 = t0 + Duration::from_secs(5);
        state.on_read(t1);
        assert_eq!(
            deadline(state.phase(), &limits),
            Some((t1 + Duration::from_secs(2), Timeout::Header)),
            "a started header has the header timeout, from its first byte"
        );
        state.on_read(t1 + Duration::from_secs(1));
        assert_eq!(
            deadline(state.phase(), &limits).unwrap().0,
            t1 + Duration::from_secs(2),
            "a trickled header does not extend it"
        );
        let a = state.begin_request();
        let b = state.begin_request();
        assert_eq!(deadline(state.phase(), &limits), None, "answering");
        assert_eq!(state.eviction_rank(), None, "never evicted while answering");
        drop(a);
        assert_eq!(deadline(state.phase(), &limits), None);
        drop(b);
        let Phase::Waiting { since, head_from } = state.phase() else {
            panic!("waiting again");
        };
        assert!(since >= t0 && head_from.is_none());
        assert_eq!(
            state.eviction_rank(),
            Some(EvictionRank {
                request_started: false,
                since
            })
        );
    }
}
