//! A tiny TCP backend that tells the client who it is and whom it saw.
//!
//! Every connection gets, after the request headers (`\r\n\r\n`), end of
//! input, 200 ms without data or 1 s in total — whichever comes first:
//!
//! ```text
//! HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n
//! backend=<name> peer=<client ip>:<client port>\n
//! ```
//!
//! (an IPv6 client address in brackets) and is then closed. A connection whose first bytes are `HOLD` is a
//! long-lived one instead: the server answers `held backend=<name>\n` at once,
//! then echoes every further byte until the client closes (or the server is
//! dropped).
//!
//! Each connection runs on its own short-lived thread with read/write
//! timeouts; the accept loop polls so that drop stops it within ~50 ms.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::netns;

const POLL_INTERVAL_MS: i32 = 50;
const QUIET: Duration = Duration::from_millis(200);
const REQUEST_LIMIT: Duration = Duration::from_secs(1);
const IO_TIMEOUT: Duration = Duration::from_secs(2);
const HOLD_POLL: Duration = Duration::from_millis(100);

#[derive(Default)]
struct Stats {
    served: AtomicU64,
    peers: Mutex<Vec<SocketAddr>>,
    active: AtomicUsize,
    held: AtomicUsize,
}

/// See the module docs. Stops (and closes held connections) on drop.
pub struct BackendServer {
    ns: String,
    name: String,
    addr: IpAddr,
    port: u16,
    stop: Arc<AtomicBool>,
    stats: Arc<Stats>,
    accept_thread: Option<JoinHandle<()>>,
}

impl BackendServer {
    /// Binds `addr:port` inside namespace `ns` and serves until dropped.
    /// Panics if the listener cannot be set up.
    #[track_caller]
    pub fn start(ns: &str, addr: impl Into<IpAddr>, port: u16, name: &str) -> BackendServer {
        BackendServer::try_start(ns, addr, port, name).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`BackendServer::start`] returning errors. `port` 0 picks a free port
    /// (see [`BackendServer::port`]).
    pub fn try_start(
        ns: &str,
        addr: impl Into<IpAddr>,
        port: u16,
        name: &str,
    ) -> Result<BackendServer, String> {
        let addr = addr.into();
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Stats::default());
        let (tx, rx) = mpsc::channel::<Result<u16, String>>();
        let what = format!(
            "backend {name} on {} in netns {ns}",
            SocketAddr::new(addr, port)
        );
        let spawn_err = format!("{what}: spawning thread");
        let thread = {
            let (stop, stats, name, what) =
                (stop.clone(), stats.clone(), name.to_string(), what.clone());
            let ns2 = ns.to_string();
            thread::Builder::new()
                .name(format!("backend-{name}"))
                .spawn(move || {
                    let listener = match netns::try_run_in(&ns2, || {
                        TcpListener::bind(SocketAddr::new(addr, port))
                    }) {
                        Ok(Ok(l)) => l,
                        Ok(Err(e)) => {
                            let _ = tx.send(Err(format!("{what}: bind: {e}")));
                            return;
                        }
                        Err(e) => {
                            let _ = tx.send(Err(format!("{what}: {e}")));
                            return;
                        }
                    };
                    let bound = listener.local_addr().map(|a| a.port()).unwrap_or(port);
                    if let Err(e) = listener.set_nonblocking(true) {
                        let _ = tx.send(Err(format!("{what}: set_nonblocking: {e}")));
                        return;
                    }
                    let _ = tx.send(Ok(bound));
                    accept_loop(listener, &name, &stop, &stats);
                })
                .map_err(|e| format!("{spawn_err}: {e}"))?
        };
        let port = match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                stop.store(true, Ordering::SeqCst);
                return Err(format!("{what}: listener did not come up within 10s"));
            }
        };
        Ok(BackendServer {
            ns: ns.to_string(),
            name: name.to_string(),
            addr,
            port,
            stop,
            stats,
            accept_thread: Some(thread),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn ns(&self) -> &str {
        &self.ns
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Connections accepted so far (counted before the reply is sent, so a
    /// client that got its reply is always counted).
    pub fn served(&self) -> u64 {
        self.stats.served.load(Ordering::SeqCst)
    }

    /// Source IPv4 address of every accepted connection, in order.
    pub fn peers(&self) -> Vec<Ipv4Addr> {
        self.peer_addrs()
            .into_iter()
            .filter_map(|a| match a {
                SocketAddr::V4(v4) => Some(*v4.ip()),
                SocketAddr::V6(v6) => v6.ip().to_ipv4_mapped(),
            })
            .collect()
    }

    /// Source address and port of every accepted connection, in order.
    pub fn peer_addrs(&self) -> Vec<SocketAddr> {
        self.stats
            .peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Connections currently open (being answered or held).
    pub fn active(&self) -> usize {
        self.stats.active.load(Ordering::SeqCst)
    }

    /// `HOLD` connections currently open.
    pub fn held(&self) -> usize {
        self.stats.held.load(Ordering::SeqCst)
    }

    /// Tells the server to stop without waiting (drop waits): servers told first stop
    /// side by side, each within its accept poll.
    pub fn begin_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Resets `served` and `peers`.
    pub fn reset_counts(&self) {
        let mut p = self.stats.peers.lock().unwrap_or_else(|e| e.into_inner());
        p.clear();
        self.stats.served.store(0, Ordering::SeqCst);
    }
}

impl Drop for BackendServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.accept_thread.take() {
            let _ = t.join();
        }
        // Handlers notice the flag within HOLD_POLL, or finish within their
        // own time limits.
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.stats.active.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
    }
}

fn accept_loop(listener: TcpListener, name: &str, stop: &Arc<AtomicBool>, stats: &Arc<Stats>) {
    let fd = listener.as_raw_fd();
    while !stop.load(Ordering::SeqCst) {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, POLL_INTERVAL_MS) };
        if n <= 0 {
            continue;
        }
        loop {
            match listener.accept() {
                Ok((stream, peer)) => {
                    stats.served.fetch_add(1, Ordering::SeqCst);
                    stats
                        .peers
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(peer);
                    stats.active.fetch_add(1, Ordering::SeqCst);
                    let guard = ActiveGuard(stats.clone());
                    let (name, stop, stats2) = (name.to_string(), stop.clone(), stats.clone());
                    let spawned =
                        thread::Builder::new()
                            .name("backend-conn".into())
                            .spawn(move || {
                                let _guard = guard;
                                serve(stream, peer, &name, &stop, &stats2);
                            });
                    if spawned.is_err() {
                        // Thread limit: the closure (stream, guard) was dropped.
                        thread::sleep(Duration::from_millis(10));
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => {
                    // e.g. EMFILE or ECONNABORTED: back off briefly.
                    thread::sleep(Duration::from_millis(10));
                    break;
                }
            }
        }
    }
}

struct ActiveGuard(Arc<Stats>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn serve(mut stream: TcpStream, peer: SocketAddr, name: &str, stop: &AtomicBool, stats: &Stats) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_read_timeout(Some(QUIET));

    let start = Instant::now();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.starts_with(b"HOLD") {
                    stats.held.fetch_add(1, Ordering::SeqCst);
                    hold(stream, &buf, name, stop);
                    stats.held.fetch_sub(1, Ordering::SeqCst);
                    return;
                }
                if find(&buf, b"\r\n\r\n").is_some() || buf.len() > 64 * 1024 {
                    break;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if is_timeout(&e) => break,
            Err(_) => return,
        }
        if start.elapsed() >= REQUEST_LIMIT {
            break;
        }
    }

    let reply = format!(
        "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nbackend={name} peer={peer}\n"
    );
    if stream.write_all(reply.as_bytes()).is_err() {
        return;
    }
    let _ = stream.flush();
    // Send FIN, then drain until the client closes (bounded) so unread input
    // never turns our close into a RST that could destroy the reply.
    let _ = stream.shutdown(Shutdown::Write);
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
}

fn hold(mut stream: TcpStream, first: &[u8], name: &str, stop: &AtomicBool) {
    if stream
        .write_all(format!("held backend={name}\n").as_bytes())
        .is_err()
    {
        return;
    }
    // Bytes after the HOLD line are echoed like everything that follows.
    if let Some(nl) = first.iter().position(|&b| b == b'\n') {
        let rest = &first[nl + 1..];
        if !rest.is_empty() && stream.write_all(rest).is_err() {
            return;
        }
    }
    let _ = stream.set_read_timeout(Some(HOLD_POLL));
    let mut chunk = [0u8; 4096];
    while !stop.load(Ordering::SeqCst) {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                if stream.write_all(&chunk[..n]).is_err() {
                    break;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted || is_timeout(&e) => continue,
            Err(_) => break,
        }
    }
    let _ = stream.shutdown(Shutdown::Both);
}
