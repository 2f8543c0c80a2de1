//! Serving HTTP on one of lbd's listeners (the admin API's unix socket and TCP port,
//! `/metrics`) within limits, so that no client, however many connections it opens or
//! however slowly it talks, can use up lbd's descriptors (which its health probes need):
//!
//! - at most `max` connections; at the cap, the connection that has waited longest for
//!   a request is closed to make room (a new client always gets in, and holding
//!   connections open gains nothing), and when every one is being answered the new one
//!   is refused;
//! - a connection waiting for a request is closed after `idle_timeout`, a request
//!   header not whole `header_timeout` after its first byte;
//! - each of these is counted per listener ([`stats`]) and logged at most every 10 s.
//!
//! - [`table`]: the open connections and which one makes room (pure).
//! - [`conn`]: a connection's phase and deadline; the reads that advance it.
pub mod conn;
pub mod stats;
pub mod table;

use std::{
    future::Future,
    io,
    sync::{atomic::Ordering::Relaxed, Arc, Mutex},
    time::Instant,
};

use axum::Router;
use hyper::{body::Incoming, server::conn::http1, service::service_fn, Request};
use hyper_util::{rt::TokioIo, service::TowerToHyperService};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, UnixListener},
    sync::watch,
    task::JoinSet,
};

use self::{
    conn::{deadline, ConnState, Tracked},
    stats::ListenerStats,
    table::Table,
};
use crate::model::config::ConnectionLimits;

/// A listening socket.
pub trait Accept: Send + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept(&self) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

impl Accept for TcpListener {
    type Stream = tokio::net::TcpStream;
    async fn accept(&self) -> io::Result<Self::Stream> {
        TcpListener::accept(self).await.map(|(s, _)| s)
    }
}

impl Accept for UnixListener {
    type Stream = tokio::net::UnixStream;
    async fn accept(&self) -> io::Result<Self::Stream> {
        UnixListener::accept(self).await.map(|(s, _)| s)
    }
}

/// Serves `router` on `listener` until `stop` turns true; then stops accepting, lets
/// requests in flight finish and closes idle connections.
pub async fn serve<L: Accept>(
    listener: L,
    router: Router,
    limits: ConnectionLimits,
    stats: Arc<ListenerStats>,
    mut stop: watch::Receiver<bool>,
) {
    let table = Arc::new(Mutex::new(Table::<Arc<ConnState>>::new(
        limits.max as usize,
    )));
    let mut tasks = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            accepted = listener.accept() => accepted,
        };
        while tasks.try_join_next().is_some() {}
        let stream = match accepted {
            Ok(stream) => stream,
            Err(e) => {
                on_accept_error(&stats, e).await;
                continue;
            }
        };
        ListenerStats::count(&stats.accepted);
        let state = ConnState::new(Instant::now());
        let admitted = {
            let mut table = lock(&table);
            let admitted = table.admit(state.clone());
            stats.open.store(table.len() as u64, Relaxed);
            admitted
        };
        let Some(admitted) = admitted else {
            refuse(stream, &stats).await;
            ListenerStats::count(&stats.refused);
            stats.warn_limited(|| {
                format!(
                    "refused a connection: {} open (the cap), all being answered",
                    stats.cap
                )
            });
            continue;
        };
        if let Some(evicted) = admitted.evicted {
            evicted.evict.notify_one();
            ListenerStats::count(&stats.evicted);
            stats.warn_limited(|| {
                format!(
                    "{} connections open (the cap): closed the one waiting longest for a \
                     request to make room for a new one",
                    stats.cap
                )
            });
        }
        let connection = Connection {
            id: admitted.id,
            state,
            table: table.clone(),
            stats: stats.clone(),
            limits: limits.clone(),
        };
        tasks.spawn(connection.serve(stream, router.clone(), stop.clone()));
    }
    drop(listener);
    while tasks.join_next().await.is_some() {}
}

/// Says why before closing, if the socket takes it at once (never waits: a refusal
/// must not hold a descriptor).
async fn refuse<S: AsyncWrite + Unpin>(mut stream: S, stats: &ListenerStats) {
    use tokio::io::AsyncWriteExt as _;
    let body = format!(
        "{{\"error\": \"lbd's {} listener is at its cap of {} connections, all being \
         answered; retry\"}}",
        stats.name, stats.cap
    );
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    // A zero timeout still polls the write once.
    let _ = tokio::time::timeout(
        std::time::Duration::ZERO,
        stream.write_all(response.as_bytes()),
    )
    .await;
}

fn lock<T>(table: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    table.lock().unwrap_or_else(|e| e.into_inner())
}

/// Out of descriptors (or memory) the pending connection stays queued and accept fails
/// again at once: pause instead of spinning.
async fn on_accept_error(stats: &ListenerStats, e: io::Error) {
    ListenerStats::count(&stats.accept_errors);
    stats.warn_limited(|| format!("accepting a connection: {e}"));
    let resource = matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    );
    if resource {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

struct Connection {
    id: u64,
    state: Arc<ConnState>,
    table: Arc<Mutex<Table<Arc<ConnState>>>>,
    stats: Arc<ListenerStats>,
    limits: ConnectionLimits,
}

impl Connection {
    async fn serve<S>(self, stream: S, router: Router, mut stop: watch::Receiver<bool>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let handler = TowerToHyperService::new(router);
        let state = self.state.clone();
        let service = service_fn(move |req: Request<Incoming>| {
            let guard = state.begin_request();
            let response = hyper::service::Service::call(&handler, req);
            async move {
                let response = response.await;
                drop(guard);
                response
            }
        });
        let io = TokioIo::new(Tracked {
            stream,
            state: self.state.clone(),
        });
        let conn = http1::Builder::new().serve_connection(io, service);
        tokio::pin!(conn);
        let mut stopping = false;
        loop {
            let phase = self.state.phase();
            // Stopping: a connection waiting for a request (a half-sent header included,
            // which hyper's graceful shutdown would wait for) closes now.
            if stopping && matches!(phase, conn::Phase::Waiting { .. }) {
                break;
            }
            let due = deadline(phase, &self.limits);
            let sleep = async {
                match due {
                    Some((at, _)) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        log::debug!("{} listener: connection ended: {e}", self.stats.name);
                    }
                    break;
                }
                _ = self.state.changed.notified() => {}
                // Counted when it was chosen; it is already out of the table.
                _ = self.state.evict.notified() => return,
                _ = sleep => {
                    let Some((at, why)) = deadline(self.state.phase(), &self.limits) else {
                        continue;
                    };
                    if at > Instant::now() {
                        continue;
                    }
                    // Evicted in the meantime: counted as such, not as a timeout.
                    if lock(&self.table).remove(self.id) {
                        ListenerStats::count(match why {
                            conn::Timeout::Header => &self.stats.header_timeouts,
                            conn::Timeout::Idle => &self.stats.idle_timeouts,
                        });
                        self.stats.open.store(lock(&self.table).len() as u64, Relaxed);
                    }
                    return;
                }
                _ = stop.wait_for(|s| *s), if !stopping => {
                    // Requests in flight finish first, then the connection closes.
                    conn.as_mut().graceful_shutdown();
                    stopping = true;
                }
            }
        }
        let mut table = lock(&self.table);
        table.remove(self.id);
        self.stats.open.store(table.len() as u64, Relaxed);
    }
}

#[cfg(test)]
mod tests;
