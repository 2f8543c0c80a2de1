//! The backends of the end-to-end benchmark. Unlike `crate::BackendServer` (a thread per
//! connection, made to observe), this one is made to be cheap per connection, so that
//! the backends do not hide the differences between load balancers: each backend has one
//! listener and a fixed pool of worker threads blocked in `accept()`; a worker serves one
//! connection to its end, then accepts the next.
//!
//! Requests are HTTP/1.1 GETs and the path says what the client measures:
//! - `/close`: a short answer with `Content-Length` and `Connection: close` (so that
//!   wrk reconnects rather than sending its next request); the client closes once it
//!   has read it, and the server closes after the client. So the TIME_WAIT states are the
//!   client's: a server-side TIME_WAIT meeting a reused client port through a NAT
//!   drops the SYN whenever the new connection's timestamps (whose offset Linux derives
//!   from the address pair, VIP or backend) are older (PAWS), and the run would measure
//!   one-second SYN retransmissions instead of the load balancer;
//! - `/keep`: a short answer with `Content-Length`, and the connection stays open for
//!   the next request;
//! - `/bulk`: a header, then 64 KiB chunks until the client goes away (or
//!   [`BULK_LIMIT`] passes).
//!
//! Every socket operation has a timeout, and drop stops the workers (shutting the
//! listener down wakes the ones blocked in `accept()`).
use std::{
    io::{ErrorKind, Read, Write},
    net::{SocketAddrV4, TcpListener, TcpStream},
    os::fd::AsRawFd,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use crate::netns;

const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest a `/bulk` answer streams, whatever the client does.
pub const BULK_LIMIT: Duration = Duration::from_secs(30);
const CHUNK: usize = 64 * 1024;
const BACKLOG: libc::c_int = 4096;

pub struct BenchServer {
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
}

impl BenchServer {
    /// Listens on `addr` inside namespace `ns` with `workers` worker threads.
    pub fn start(ns: &str, addr: SocketAddrV4, name: &str, workers: usize) -> BenchServer {
        let listener = netns::run_in(ns, || TcpListener::bind(addr))
            .unwrap_or_else(|e| panic!("bench backend {name}: bind {addr} in {ns}: {e}"));
        // std's backlog is 128; a burst of new connections must not be refused by it.
        // SAFETY: plain syscall on a valid listening socket.
        unsafe { libc::listen(listener.as_raw_fd(), BACKLOG) };
        let stop = Arc::new(AtomicBool::new(false));
        let body: Arc<str> = format!("backend={name}\n").into();
        let workers = (0..workers)
            .map(|i| {
                let listener = listener.try_clone().expect("cloning the listener");
                let (stop, body) = (stop.clone(), body.clone());
                thread::Builder::new()
                    .name(format!("bench-{name}-{i}"))
                    .spawn(move || accept_loop(&listener, &stop, &body))
                    .expect("spawning a bench backend worker")
            })
            .collect();
        BenchServer {
            listener,
            stop,
            workers,
        }
    }
}

impl Drop for BenchServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // SAFETY: plain syscall; it makes every blocked accept() on this socket return.
        unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR) };
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, stop: &AtomicBool, body: &str) {
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => serve(stream, stop, body),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            // EMFILE and the like: back off rather than spin; also what shutdown gives.
            Err(_) => thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// Reads one request head (up to the blank line) into `buf`, which keeps any bytes that
/// follow it; returns the path, or None when the connection ended or timed out.
fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    let mut chunk = [0u8; 2048];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end + 4);
            return head.split_whitespace().nth(1).map(str::to_string);
        }
        if buf.len() > 16 * 1024 {
            return None;
        }
        match stream.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}

fn serve(mut stream: TcpStream, stop: &AtomicBool, body: &str) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let mut buf = Vec::new();
    while let Some(path) = read_request(&mut stream, &mut buf) {
        match path.as_str() {
            "/keep" => {
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                if stream.write_all(reply.as_bytes()).is_err() {
                    return;
                }
            }
            "/bulk" => return bulk(stream, stop),
            _ => return answer_then_close(stream, body),
        }
    }
}

fn answer_then_close(mut stream: TcpStream, body: &str) {
    let reply = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if stream.write_all(reply.as_bytes()).is_err() {
        return;
    }
    // Wait (bounded by the read timeout) for the client's FIN, then close: passive close.
    let mut sink = [0u8; 512];
    while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
}

fn bulk(mut stream: TcpStream, stop: &AtomicBool) {
    if stream
        .write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return;
    }
    let chunk = vec![0x5au8; CHUNK];
    let started = Instant::now();
    while !stop.load(Ordering::Relaxed) && started.elapsed() < BULK_LIMIT {
        if stream.write_all(&chunk).is_err() {
            return;
        }
    }
}
