//! The client side of the end-to-end benchmark: small blocking load generators, one
//! thread per concurrent connection, run inside the client namespace against one
//! address (a VIP, or a backend for the ceiling).
//!
//! Each stops starting new work at its deadline; every socket operation has a timeout,
//! so a whole run ends within its duration plus [`IO_TIMEOUT`] and a bit. Failures are
//! counted (and the first one kept), never retried in a tight loop.
use std::{
    io::{ErrorKind, Read, Write},
    net::{SocketAddr, SocketAddrV4, TcpStream},
    thread,
    time::{Duration, Instant},
};

use crate::netns;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
pub const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// After a failure a worker waits this long, so that a dead target costs no CPU spin.
const FAILURE_PAUSE: Duration = Duration::from_millis(5);

/// What one load run did.
#[derive(Clone, Debug, Default)]
pub struct LoadResult {
    /// Completed requests (connections for `connections`, requests for `keepalive`,
    /// streams that delivered data for `bulk`).
    pub ok: u64,
    pub failed: u64,
    /// Payload bytes received (bulk).
    pub bytes: u64,
    /// From the first worker's start to the last worker's end.
    pub elapsed: Duration,
    pub first_error: Option<String>,
}

impl LoadResult {
    pub fn per_second(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    pub fn bits_per_second(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.elapsed.as_secs_f64()
    }

    fn merge(&mut self, other: LoadResult) {
        self.ok += other.ok;
        self.failed += other.failed;
        self.bytes += other.bytes;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    fn fail(&mut self, error: String) {
        self.failed += 1;
        self.first_error.get_or_insert(error);
        thread::sleep(FAILURE_PAUSE);
    }
}

/// Runs `workers` copies of `work(deadline)` on threads inside namespace `ns` and adds up
/// what they did.
fn run_workers(
    ns: &str,
    workers: usize,
    duration: Duration,
    work: impl Fn(Instant) -> LoadResult + Sync,
) -> LoadResult {
    netns::run_in(ns, || {
        let start = Instant::now();
        let deadline = start + duration;
        let mut total = LoadResult::default();
        thread::scope(|s| {
            // Threads spawned here inherit the namespace of this one.
            let handles: Vec<_> = (0..workers).map(|_| s.spawn(|| work(deadline))).collect();
            for h in handles {
                total.merge(h.join().expect("load worker panicked"));
            }
        });
        total.elapsed = start.elapsed();
        total
    })
}

fn connect(target: SocketAddrV4) -> Result<TcpStream, String> {
    let stream = TcpStream::connect_timeout(&SocketAddr::V4(target), CONNECT_TIMEOUT)
        .map_err(|e| format!("connect {target}: {e}"))?;
    let _ = stream.set_nodelay(true);
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(IO_TIMEOUT)))
        .map_err(|e| format!("{target}: socket timeouts: {e}"))?;
    Ok(stream)
}

/// New connections per second: each request on its own connection (`/close`); the
/// client closes as soon as it has the answer (see the server's docs for why).
pub fn connections(
    ns: &str,
    target: SocketAddrV4,
    workers: usize,
    duration: Duration,
) -> LoadResult {
    run_workers(ns, workers, duration, |deadline| {
        let mut r = LoadResult::default();
        let mut buf = Vec::with_capacity(256);
        while Instant::now() < deadline {
            let done = connect(target).and_then(|mut s| {
                s.write_all(b"GET /close HTTP/1.1\r\nHost: bench\r\n\r\n")
                    .map_err(|e| e.to_string())
                    .and_then(|()| read_answer(&mut s, &mut buf))
                    .map_err(|e| format!("{target}: {e}"))
            });
            match done {
                Ok(()) => r.ok += 1,
                Err(e) => r.fail(e),
            }
        }
        r
    })
}

/// Reads one `/keep` answer: a head with `Content-Length`, then that many bytes.
fn read_answer(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), String> {
    buf.clear();
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]);
            if !head.starts_with("HTTP/1.1 200 ") {
                return Err(format!("bad reply {head:?}"));
            }
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| format!("no Content-Length in {head:?}"))?;
            if buf.len() >= end + 4 + length {
                return Ok(());
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) => return Err("closed by the server".into()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Requests per second on `workers` long-lived connections, one request in flight on
/// each (`/keep`).
pub fn keepalive(ns: &str, target: SocketAddrV4, workers: usize, duration: Duration) -> LoadResult {
    run_workers(ns, workers, duration, |deadline| {
        let mut r = LoadResult::default();
        let mut conn: Option<TcpStream> = None;
        let mut buf = Vec::with_capacity(256);
        while Instant::now() < deadline {
            let stream = match conn.as_mut() {
                Some(s) => s,
                None => match connect(target) {
                    Ok(s) => conn.insert(s),
                    Err(e) => {
                        r.fail(e);
                        continue;
                    }
                },
            };
            let done = stream
                .write_all(b"GET /keep HTTP/1.1\r\nHost: bench\r\n\r\n")
                .map_err(|e| e.to_string())
                .and_then(|()| read_answer(stream, &mut buf));
            match done {
                Ok(()) => r.ok += 1,
                Err(e) => {
                    conn = None;
                    r.fail(format!("{target} keep-alive: {e}"));
                }
            }
        }
        r
    })
}

/// Bytes per second received on `workers` streams (`/bulk`) until the deadline.
pub fn bulk(ns: &str, target: SocketAddrV4, workers: usize, duration: Duration) -> LoadResult {
    run_workers(ns, workers, duration, |deadline| {
        let mut r = LoadResult::default();
        let mut stream = match connect(target).and_then(|mut s| {
            s.write_all(b"GET /bulk HTTP/1.1\r\nHost: bench\r\n\r\n")
                .map(|()| s)
                .map_err(|e| format!("{target}: {e}"))
        }) {
            Ok(s) => s,
            Err(e) => {
                r.fail(e);
                return r;
            }
        };
        let mut buf = vec![0u8; 256 * 1024];
        while Instant::now() < deadline {
            match stream.read(&mut buf) {
                Ok(0) => {
                    r.fail(format!("{target} bulk: closed by the server"));
                    return r;
                }
                Ok(n) => r.bytes += n as u64,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    r.fail(format!("{target} bulk: {e}"));
                    return r;
                }
            }
        }
        r.ok += 1;
        r
    })
}
