//! UDP through a lab: [`UdpEcho`], a backend that answers each datagram with its name, the
//! address it saw the datagram come from, and the datagram itself; and [`exchange`],
//! clients that each send datagrams from one socket of their own and record where every
//! answer came from. Every wait is bounded; servers stop on drop.
use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use crate::netns;

/// How often a server's receive wakes up to look at its stop flag.
const POLL: Duration = Duration::from_millis(100);

/// See the module docs. Stops on drop.
pub struct UdpEcho {
    name: String,
    stop: Arc<AtomicBool>,
    served: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl UdpEcho {
    /// Binds `addr:port` (UDP) inside namespace `ns` and answers until dropped.
    #[track_caller]
    pub fn start(ns: &str, addr: impl Into<IpAddr>, port: u16, name: &str) -> UdpEcho {
        let at = SocketAddr::new(addr.into(), port);
        let what = format!("UDP echo {name} on {at} in netns {ns}");
        let socket = netns::run_in(ns, || UdpSocket::bind(at))
            .unwrap_or_else(|e| panic!("{what}: bind: {e}"));
        socket
            .set_read_timeout(Some(POLL))
            .unwrap_or_else(|e| panic!("{what}: read timeout: {e}"));
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, served, name) = (stop.clone(), served.clone(), name.to_string());
            thread::Builder::new()
                .name(format!("udp-echo-{name}"))
                .spawn(move || serve(&socket, &name, &stop, &served))
                .unwrap_or_else(|e| panic!("{what}: spawning: {e}"))
        };
        UdpEcho {
            name: name.to_string(),
            stop,
            served,
            thread: Some(thread),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Tells the server to stop without waiting (drop waits): servers told first stop
    /// side by side, each within its receive poll.
    pub fn begin_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Datagrams answered so far.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::SeqCst)
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(socket: &UdpSocket, name: &str, stop: &AtomicBool, served: &AtomicU64) {
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::SeqCst) {
        let Ok((n, peer)) = socket.recv_from(&mut buf) else {
            continue;
        };
        let request = String::from_utf8_lossy(&buf[..n]);
        let answer = format!("{name} {peer} {request}");
        if socket.send_to(answer.as_bytes(), peer).is_ok() {
            served.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// One answer a client got.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// Where the answer came from, as the client's socket saw it.
    pub from: SocketAddr,
    /// The name of the backend that answered.
    pub backend: String,
    /// The client's address as the backend saw it.
    pub seen: SocketAddr,
}

/// What one client got: its own address, an answer per datagram it got one for, and
/// the datagrams that got none within the attempts.
#[derive(Debug, Clone)]
pub struct ClientRecord {
    pub local: SocketAddr,
    pub answers: Vec<Answer>,
    pub unanswered: usize,
}

/// `clients` UDP sockets in namespace `ns`, each bound to a port of its own: a client
/// each, with a 5-tuple of its own.
pub fn open_clients(ns: &str, clients: usize) -> Vec<UdpSocket> {
    open_clients_on(ns, clients, IpAddr::from([0, 0, 0, 0]))
}

/// [`open_clients`] bound to `local` (e.g. `::` for IPv6 clients).
pub fn open_clients_on(ns: &str, clients: usize, local: IpAddr) -> Vec<UdpSocket> {
    netns::run_in(ns, || {
        (0..clients)
            .map(|_| UdpSocket::bind((local, 0)).expect("binding a client socket"))
            .collect()
    })
}

/// Each client of `sockets` sends `datagrams` datagrams one after another to `to`, each
/// sent up to 3 times and waited for `wait` each time; clients run on 10 threads.
/// Whatever is still unsent at `deadline` counts as unanswered. One record per socket,
/// in order.
pub fn exchange(
    sockets: &[UdpSocket],
    to: impl Into<SocketAddr>,
    datagrams: usize,
    wait: Duration,
    deadline: Duration,
) -> Vec<ClientRecord> {
    let to = to.into();
    const THREADS: usize = 10;
    let until = Instant::now() + deadline;
    let per_thread = sockets.len().div_ceil(THREADS).max(1);
    thread::scope(|scope| {
        let handles: Vec<_> = sockets
            .chunks(per_thread)
            .enumerate()
            .map(|(c, chunk)| {
                scope.spawn(move || {
                    chunk
                        .iter()
                        .enumerate()
                        .map(|(j, s)| one_client(c * per_thread + j, s, to, datagrams, wait, until))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a client thread panicked"))
            .collect()
    })
}

fn one_client(
    i: usize,
    socket: &UdpSocket,
    to: SocketAddr,
    datagrams: usize,
    wait: Duration,
    until: Instant,
) -> ClientRecord {
    socket.set_read_timeout(Some(wait)).expect("read timeout");
    let local = socket.local_addr().expect("local address");
    let mut record = ClientRecord {
        local,
        answers: Vec::new(),
        unanswered: 0,
    };
    let mut buf = [0u8; 2048];
    for d in 0..datagrams {
        let request = format!("client {i} datagram {d}");
        let mut got = None;
        for _ in 0..3 {
            if Instant::now() >= until {
                break;
            }
            let _ = socket.send_to(request.as_bytes(), to);
            let wait_until = Instant::now() + wait;
            // Answers to an earlier attempt of another datagram are skipped.
            while got.is_none() && Instant::now() < wait_until {
                let Ok((n, from)) = socket.recv_from(&mut buf) else {
                    break;
                };
                got = parse_answer(&buf[..n], from, &request);
            }
            if got.is_some() {
                break;
            }
        }
        match got {
            Some(answer) => record.answers.push(answer),
            None => record.unanswered += 1,
        }
    }
    record
}

/// An [`UdpEcho`] answer `{name} {peer} {request}` to `request`.
fn parse_answer(bytes: &[u8], from: SocketAddr, request: &str) -> Option<Answer> {
    let text = String::from_utf8_lossy(bytes);
    let (backend, rest) = text.split_once(' ')?;
    let (seen, echoed) = rest.split_once(' ')?;
    if echoed != request {
        return None;
    }
    Some(Answer {
        from,
        backend: backend.to_string(),
        seen: seen.parse().ok()?,
    })
}
