//! The client side: HTTP/1.0 GETs and long-lived `HOLD` connections made from
//! inside a namespace (normally the lab's client namespace), against
//! [`crate::BackendServer`]s reached through the load balancer.
//!
//! Every operation is bounded by the timeouts passed in.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::netns;

/// One answered GET.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The `backend=` name the server reported.
    pub backend: String,
    /// The client address and port the backend saw (`peer=`).
    pub peer_seen_by_backend: SocketAddr,
    /// The client socket's own address.
    pub local: SocketAddr,
    /// The client socket's peer address (the VIP and port connected to).
    pub remote: SocketAddr,
}

/// Result of [`burst`].
#[derive(Clone, Debug, Default)]
pub struct BurstResult {
    /// Connections answered correctly.
    pub ok: usize,
    /// One message per failed connection (plus one if the burst's time limit
    /// stopped it early).
    pub failed: Vec<String>,
    /// Answered connections per backend name.
    pub per_backend: BTreeMap<String, usize>,
    /// Every reply, in order.
    pub replies: Vec<Reply>,
    /// Connections attempted (less than asked if the time limit hit).
    pub attempted: usize,
}

impl BurstResult {
    /// Number of distinct backends that answered.
    pub fn backends_seen(&self) -> usize {
        self.per_backend.len()
    }

    /// Panics unless every one of the `count` connections asked for was answered (none
    /// failed, none left out by the time limit), naming the first failures.
    #[track_caller]
    pub fn assert_all_answered(&self, count: usize) {
        assert!(
            self.failed.is_empty() && self.ok == count,
            "{} of {count} connections answered; failures: {:?}",
            self.ok,
            &self.failed[..self.failed.len().min(5)]
        );
    }
}

/// How a connection failed, as a fault test must tell them apart: a refusal (the SYN
/// reached a host where nothing listens) is not a reset of an accepted connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// The connect was answered with a RST (nothing listens there).
    Refused,
    /// An accepted connection was reset or closed before the full reply.
    Reset,
    /// No answer within the time limit (e.g. SYNs dropped).
    Timeout,
    /// Anything else (unreachable, malformed reply, ...).
    Other,
}

/// A failed GET: what kind of failure, and the full message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetError {
    pub kind: FailureKind,
    pub message: String,
}

impl std::fmt::Display for GetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

fn io_kind(e: &std::io::Error) -> FailureKind {
    match e.kind() {
        ErrorKind::ConnectionRefused => FailureKind::Refused,
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe => {
            FailureKind::Reset
        }
        ErrorKind::TimedOut | ErrorKind::WouldBlock => FailureKind::Timeout,
        _ => FailureKind::Other,
    }
}

/// Connects from namespace `ns` to `vip:port`, sends
/// `GET / HTTP/1.0\r\nHost: VIP\r\n\r\n`, reads to EOF and parses the
/// backend's answer. `timeout` bounds the whole exchange.
pub fn http_get_via(
    ns: &str,
    vip: impl Into<IpAddr>,
    port: u16,
    timeout: Duration,
) -> Result<Reply, String> {
    let vip = vip.into();
    netns::try_run_in(ns, || http_get(vip, port, timeout))?
}

/// Like [`http_get_via`] but in the calling thread's namespace.
pub fn http_get(vip: impl Into<IpAddr>, port: u16, timeout: Duration) -> Result<Reply, String> {
    http_get_checked(vip, port, timeout).map_err(|e| e.message)
}

/// Like [`http_get`], with the kind of failure.
pub fn http_get_checked(
    vip: impl Into<IpAddr>,
    port: u16,
    timeout: Duration,
) -> Result<Reply, GetError> {
    let target = SocketAddr::new(vip.into(), port);
    let deadline = Instant::now() + timeout;
    let io = |what: String, e: std::io::Error| GetError {
        kind: io_kind(&e),
        message: format!("{what}: {e}"),
    };
    let mut stream = TcpStream::connect_timeout(&target, timeout.max(Duration::from_millis(1)))
        .map_err(|e| io(format!("connect {target}"), e))?;
    let local = stream
        .local_addr()
        .map_err(|e| io(format!("{target}: local_addr"), e))?;
    let remote = stream
        .peer_addr()
        .map_err(|e| io(format!("{target} (from {local}): peer_addr"), e))?;
    let ctx = |msg: String| format!("{local} -> {target}: {msg}");
    let _ = stream.set_nodelay(true);
    stream
        .set_write_timeout(Some(remaining(deadline)))
        .map_err(|e| io(ctx("set_write_timeout".into()), e))?;
    stream
        .write_all(format!("GET / HTTP/1.0\r\nHost: {}\r\n\r\n", host(target)).as_bytes())
        .map_err(|e| io(ctx("sending request".into()), e))?;

    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let left = remaining(deadline);
        if left.is_zero() {
            return Err(GetError {
                kind: FailureKind::Timeout,
                message: ctx(format!(
                    "no EOF within {timeout:?}; got {:?}",
                    String::from_utf8_lossy(&buf)
                )),
            });
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(|e| io(ctx("set_read_timeout".into()), e))?;
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(e) => {
                return Err(io(
                    ctx(format!(
                        "reading reply (got {:?})",
                        String::from_utf8_lossy(&buf)
                    )),
                    e,
                ))
            }
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let (backend, peer) = parse_reply(&text).map_err(|e| GetError {
        // An accepted connection closed without the whole reply.
        kind: if buf.is_empty() {
            FailureKind::Reset
        } else {
            FailureKind::Other
        },
        message: ctx(e),
    })?;
    Ok(Reply {
        backend,
        peer_seen_by_backend: peer,
        local,
        remote,
    })
}

/// The `Host` header's form of the target's address (an IPv6 one in brackets).
fn host(target: SocketAddr) -> String {
    match target {
        SocketAddr::V4(a) => a.ip().to_string(),
        SocketAddr::V6(a) => format!("[{}]", a.ip()),
    }
}

fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// Parses a [`crate::BackendServer`] answer into (backend name, peer seen).
pub fn parse_reply(text: &str) -> Result<(String, SocketAddr), String> {
    let status = text.lines().next().unwrap_or("");
    if !status.starts_with("HTTP/1.0 200") {
        return Err(format!("unexpected reply {text:?}"));
    }
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .ok_or_else(|| format!("reply without header end: {text:?}"))?;
    let mut backend = None;
    let mut peer = None;
    for word in body.split_whitespace() {
        if let Some(v) = word.strip_prefix("backend=") {
            backend = Some(v.to_string());
        } else if let Some(v) = word.strip_prefix("peer=") {
            peer = Some(
                v.parse::<SocketAddr>()
                    .map_err(|e| format!("bad peer {v:?} in {body:?}: {e}"))?,
            );
        }
    }
    match (backend, peer) {
        (Some(b), Some(p)) => Ok((b, p)),
        _ => Err(format!("reply body without backend=/peer=: {body:?}")),
    }
}

/// Makes up to `count` sequential GETs (see [`http_get_via`]) from ONE thread
/// in namespace `ns`, each bounded by `timeout_per_conn`; stops early once
/// `max_total` has elapsed (recorded as one extra entry in `failed`).
pub fn burst(
    ns: &str,
    vip: impl Into<IpAddr>,
    port: u16,
    count: usize,
    timeout_per_conn: Duration,
    max_total: Duration,
) -> BurstResult {
    let vip = vip.into();
    let run = || {
        let start = Instant::now();
        let mut r = BurstResult::default();
        for i in 0..count {
            if start.elapsed() >= max_total {
                r.failed.push(format!(
                    "burst stopped by its {max_total:?} limit after {i} of {count} connections"
                ));
                break;
            }
            r.attempted += 1;
            match http_get(vip, port, timeout_per_conn) {
                Ok(reply) => {
                    r.ok += 1;
                    *r.per_backend.entry(reply.backend.clone()).or_default() += 1;
                    r.replies.push(reply);
                }
                Err(e) => r.failed.push(format!("#{i}: {e}")),
            }
        }
        r
    };
    match netns::try_run_in(ns, run) {
        Ok(r) => r,
        Err(e) => BurstResult {
            failed: vec![e],
            ..Default::default()
        },
    }
}

/// A long-lived connection to a [`crate::BackendServer`] (`HOLD` mode): the
/// backend answered `held backend=NAME` and now echoes what is sent.
/// Closed on drop.
#[derive(Debug)]
pub struct HeldConn {
    /// The backend that holds the connection.
    pub backend: String,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    stream: TcpStream,
}

/// Opens a `HOLD` connection from namespace `ns` to `vip:port`; `timeout`
/// bounds connecting and reading the `held backend=NAME` line.
pub fn hold_via(
    ns: &str,
    vip: impl Into<IpAddr>,
    port: u16,
    timeout: Duration,
) -> Result<HeldConn, String> {
    let vip = vip.into();
    netns::try_run_in(ns, || hold(vip, port, timeout))?
}

/// Like [`hold_via`] but in the calling thread's namespace.
pub fn hold(vip: impl Into<IpAddr>, port: u16, timeout: Duration) -> Result<HeldConn, String> {
    let target = SocketAddr::new(vip.into(), port);
    let deadline = Instant::now() + timeout;
    let mut stream = TcpStream::connect_timeout(&target, timeout.max(Duration::from_millis(1)))
        .map_err(|e| format!("connect {target}: {e}"))?;
    let local = stream.local_addr().map_err(|e| format!("{target}: {e}"))?;
    let remote = stream.peer_addr().map_err(|e| format!("{target}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(timeout.max(Duration::from_millis(1))));
    stream
        .write_all(b"HOLD\n")
        .map_err(|e| format!("{local} -> {target}: sending HOLD: {e}"))?;
    let line = read_line(&mut stream, deadline)
        .map_err(|e| format!("{local} -> {target}: waiting for `held`: {e}"))?;
    let backend = line
        .trim()
        .strip_prefix("held backend=")
        .ok_or_else(|| format!("{local} -> {target}: unexpected answer {line:?}"))?
        .to_string();
    Ok(HeldConn {
        backend,
        local,
        remote,
        stream,
    })
}

/// Whether a failed read is worth repeating until the caller's deadline: interrupted, or
/// the socket's read timeout (set to the time left) ran out early.
fn read_again(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::Interrupted | ErrorKind::WouldBlock | ErrorKind::TimedOut
    )
}

fn read_line(stream: &mut TcpStream, deadline: Instant) -> Result<String, String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        let left = remaining(deadline);
        if left.is_zero() {
            return Err(format!(
                "timed out; got {:?}",
                String::from_utf8_lossy(&line)
            ));
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(|e| e.to_string())?;
        match stream.read(&mut byte) {
            Ok(0) => return Err(format!("EOF; got {:?}", String::from_utf8_lossy(&line))),
            Ok(_) => {
                line.push(byte[0]);
                if byte[0] == b'\n' {
                    return Ok(String::from_utf8_lossy(&line).into_owned());
                }
            }
            Err(e) if read_again(&e) => continue,
            Err(e) => return Err(format!("{e}; got {:?}", String::from_utf8_lossy(&line))),
        }
    }
}

impl HeldConn {
    /// Sends `msg` and waits (at most `timeout`) for the backend to echo it
    /// back; returns what came back. An error means the connection broke
    /// (reset, closed, or silent).
    pub fn echo(&mut self, msg: &str, timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        let who = format!(
            "{} -> {} (held by {})",
            self.local, self.remote, self.backend
        );
        let _ = self
            .stream
            .set_write_timeout(Some(timeout.max(Duration::from_millis(1))));
        self.stream
            .write_all(msg.as_bytes())
            .map_err(|e| format!("{who}: send: {e}"))?;
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        while got.len() < msg.len() {
            let left = remaining(deadline);
            if left.is_zero() {
                return Err(format!(
                    "{who}: echo timed out after {timeout:?}; got {:?}",
                    String::from_utf8_lossy(&got)
                ));
            }
            self.stream
                .set_read_timeout(Some(left))
                .map_err(|e| format!("{who}: {e}"))?;
            let want = (msg.len() - got.len()).min(chunk.len());
            match self.stream.read(&mut chunk[..want]) {
                Ok(0) => {
                    return Err(format!(
                        "{who}: closed by peer; got {:?}",
                        String::from_utf8_lossy(&got)
                    ))
                }
                Ok(n) => got.extend_from_slice(&chunk[..n]),
                Err(e) if read_again(&e) => continue,
                Err(e) => return Err(format!("{who}: receive: {e}")),
            }
        }
        Ok(String::from_utf8_lossy(&got).into_owned())
    }

    /// The underlying socket (e.g. to set options).
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Closes the connection (FIN).
    pub fn close(self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}
