//! One health probe over the network: a TCP connect, an HTTP/1.0 GET whose status
//! must fall in the expected range, or a UDP datagram answered (`probe_udp`). The whole probe (connect included) is bounded by
//! the timeout, and a failure names its reason for the log.
use std::{
    io::ErrorKind,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
};

use super::machine::{Failure, Outcome};
use crate::model::config::{probe_payload, HealthConfig, ProbeType, StatusRange};

/// What to send to a backend, where, and how often.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSpec {
    pub target: SocketAddr,
    pub kind: ProbeKind,
    pub interval: Duration,
    pub timeout: Duration,
    /// For a direct-server-return backend: the probe goes to the VIP (`target`) through
    /// the backend's tunnel, the path clients' packets take.
    pub via: Option<ProbeVia>,
}

/// How a probe to a VIP reaches one DSR backend: its socket carries the backend's mark,
/// which the probe tunnel program (`lb_common::probe_tunnel`) sends on to that backend,
/// and is bound to the node's own address, which the backend answers directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeVia {
    pub mark: u32,
    pub source: IpAddr,
}

impl ProbeVia {
    /// A DSR backend the node has no tunnel to (no route, no mark left): its probe fails
    /// as unreachable without sending anything, as a client's packets would not reach it
    /// either.
    pub const UNROUTED: ProbeVia = ProbeVia {
        mark: 0,
        source: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    };
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeKind {
    Tcp,
    Http {
        path: String,
        host: String,
        expect: StatusRange,
    },
    /// A datagram `send`, answered (with `expect` somewhere in the reply, if given).
    Udp {
        send: Vec<u8>,
        expect: Option<Vec<u8>>,
    },
}

impl ProbeSpec {
    /// The probe of the backend at `address:port` under `health`.
    pub fn new(health: &HealthConfig, address: IpAddr, port: u16) -> Self {
        let probe_port = health.port.unwrap_or(port);
        let kind = match health.kind {
            ProbeType::Tcp => ProbeKind::Tcp,
            ProbeType::Http => ProbeKind::Http {
                path: health.path().to_string(),
                host: health.host.clone().unwrap_or_else(|| {
                    // RFC 9110 7.2: an IPv6 literal in Host is written in brackets.
                    let host = match address {
                        IpAddr::V4(v4) => v4.to_string(),
                        IpAddr::V6(v6) => format!("[{v6}]"),
                    };
                    if probe_port == 80 {
                        host
                    } else {
                        format!("{host}:{probe_port}")
                    }
                }),
                expect: health.expect_status(),
            },
            // Validation proved both payloads parse.
            ProbeType::Udp => ProbeKind::Udp {
                send: payload(health.send.as_deref()).unwrap_or_default(),
                expect: payload(health.expect.as_deref()),
            },
        };
        Self {
            target: SocketAddr::new(address, probe_port),
            kind,
            interval: health.interval,
            timeout: health.timeout,
            via: None,
        }
    }
}

/// The bytes of a UDP probe's `send` or `expect`, if set and well formed.
fn payload(text: Option<&str>) -> Option<Vec<u8>> {
    probe_payload(text?).ok()
}

/// Runs one probe.
pub async fn probe(spec: &ProbeSpec) -> Outcome {
    match tokio::time::timeout(spec.timeout, run(spec)).await {
        Ok(outcome) => outcome,
        Err(_) => Err(Failure::Timeout),
    }
}

async fn run(spec: &ProbeSpec) -> Outcome {
    if let ProbeKind::Udp { send, expect } = &spec.kind {
        let from = match spec.via {
            None => None,
            Some(ProbeVia::UNROUTED) => return Err(Failure::Unreachable),
            Some(via) => Some((via.source, via.mark)),
        };
        return super::probe_udp::run(spec.target, from, send, expect.as_deref()).await;
    }
    let mut stream = match spec.via {
        None => TcpStream::connect(spec.target).await,
        Some(ProbeVia::UNROUTED) => return Err(Failure::Unreachable),
        Some(via) => connect_via(spec.target, via).await,
    }
    .map_err(connect_failure)?;
    match &spec.kind {
        // Connected: the backend's kernel accepts on the port. Dropping the stream
        // closes it with a FIN.
        ProbeKind::Tcp | ProbeKind::Udp { .. } => Ok(()),
        ProbeKind::Http { path, host, expect } => {
            let request = format!(
                "GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: lbd-health-check\r\nAccept: */*\r\nConnection: close\r\n\r\n"
            );
            stream
                .write_all(request.as_bytes())
                .await
                .map_err(|e| io_failure("sending the request", e))?;
            let status = read_status(&mut stream).await?;
            if expect.contains(status) {
                Ok(())
            } else {
                Err(Failure::Status(status))
            }
        }
    }
}

/// Connects from `via.source` with `via.mark` on the socket.
async fn connect_via(target: SocketAddr, via: ProbeVia) -> std::io::Result<TcpStream> {
    let socket = match via.source {
        IpAddr::V4(_) => TcpSocket::new_v4()?,
        IpAddr::V6(_) => TcpSocket::new_v6()?,
    };
    super::socket_mark::set_mark(&socket, via.mark)?;
    socket.bind(SocketAddr::new(via.source, 0))?;
    socket.connect(target).await
}

/// Reads up to the end of the status line and returns the status code.
async fn read_status(stream: &mut TcpStream) -> Result<u16, Failure> {
    const MAX_STATUS_LINE: usize = 1024;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    let line_end = loop {
        if let Some(end) = buf.windows(2).position(|w| w == b"\r\n") {
            break end;
        }
        if buf.len() > MAX_STATUS_LINE {
            return Err(Failure::Other("status line too long".into()));
        }
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| io_failure("reading the status line", e))?;
        if n == 0 {
            return Err(Failure::Other(
                "connection closed before a status line".into(),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let line = String::from_utf8_lossy(&buf[..line_end]);
    let mut words = line.split_whitespace();
    let version = words.next().unwrap_or("");
    let code = words.next().and_then(|c| c.parse::<u16>().ok());
    match code {
        Some(code) if version.starts_with("HTTP/") && StatusRange::HTTP.contains(code) => Ok(code),
        _ => Err(Failure::Other(format!("not an HTTP status line: {line:?}"))),
    }
}

fn connect_failure(e: std::io::Error) -> Failure {
    match e.kind() {
        ErrorKind::ConnectionRefused => Failure::Refused,
        ErrorKind::TimedOut => Failure::Timeout,
        ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable => Failure::Unreachable,
        _ => Failure::Other(format!("connect: {e}")),
    }
}

fn io_failure(what: &str, e: std::io::Error) -> Failure {
    match e.kind() {
        ErrorKind::ConnectionReset => Failure::Other(format!("reset while {what}")),
        _ => Failure::Other(format!("{what}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddrV4;

    use tokio::net::TcpListener;

    use super::*;

    /// A probe that must get its answer: a timeout no loaded machine reaches, so only
    /// the answer decides the outcome.
    fn spec(port: u16, kind: ProbeKind) -> ProbeSpec {
        ProbeSpec {
            target: SocketAddrV4::new(Ipv4Addr::LOCALHOST, port).into(),
            kind,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(30),
            via: None,
        }
    }

    fn http(expect: &str) -> ProbeKind {
        let (min, max) = expect.split_once('-').unwrap();
        ProbeKind::Http {
            path: "/healthz".into(),
            host: "web.example".into(),
            expect: StatusRange {
                min: min.parse().unwrap(),
                max: max.parse().unwrap(),
            },
        }
    }

    /// A one-shot server on 127.0.0.1 that answers the first connection with `reply`
    /// (or nothing, holding it open) and hands back what it received.
    async fn server(reply: Option<&'static str>) -> (u16, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            let mut chunk = [0u8; 1024];
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&chunk[..n]),
                }
            }
            match reply {
                Some(reply) => {
                    let _ = s.write_all(reply.as_bytes()).await;
                }
                // Silent for longer than any probe waits (the task ends with the test).
                None => tokio::time::sleep(Duration::from_secs(3600)).await,
            }
            String::from_utf8_lossy(&got).into_owned()
        });
        (port, task)
    }

    /// A port with nothing listening on it.
    async fn closed_port() -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap().port()
    }

    #[tokio::test]
    async fn a_probe_without_a_tunnel_fails_as_unreachable_even_with_a_listener() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let unrouted = ProbeSpec {
            via: Some(ProbeVia::UNROUTED),
            ..spec(port, ProbeKind::Tcp)
        };
        assert_eq!(probe(&unrouted).await, Err(Failure::Unreachable));
    }

    #[tokio::test]
    async fn tcp_probe_succeeds_on_a_listener_and_is_refused_without() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        assert_eq!(probe(&spec(port, ProbeKind::Tcp)).await, Ok(()));
        drop(listener);
        assert_eq!(
            probe(&spec(closed_port().await, ProbeKind::Tcp)).await,
            Err(Failure::Refused)
        );
    }

    #[tokio::test]
    async fn http_probe_sends_path_and_host_and_checks_the_status() {
        let (port, request) = server(Some("HTTP/1.1 204 No Content\r\n\r\n")).await;
        assert_eq!(probe(&spec(port, http("200-399"))).await, Ok(()));
        let request = request.await.unwrap();
        assert!(
            request.starts_with("GET /healthz HTTP/1.0\r\n")
                && request.contains("\r\nHost: web.example\r\n"),
            "{request:?}"
        );
        let (port, _) = server(Some("HTTP/1.0 503 Service Unavailable\r\n\r\n")).await;
        assert_eq!(
            probe(&spec(port, http("200-399"))).await,
            Err(Failure::Status(503))
        );
        let (port, _) = server(Some("HTTP/1.0 503 Service Unavailable\r\n\r\n")).await;
        assert_eq!(probe(&spec(port, http("500-599"))).await, Ok(()));
    }

    #[tokio::test]
    async fn http_probe_fails_on_silence_garbage_and_early_close() {
        let (port, _) = server(None).await;
        let silent = ProbeSpec {
            timeout: Duration::from_millis(300),
            ..spec(port, http("200-399"))
        };
        assert_eq!(probe(&silent).await, Err(Failure::Timeout));
        let (port, _) = server(Some("SSH-2.0-OpenSSH\r\n")).await;
        assert!(matches!(
            probe(&spec(port, http("200-399"))).await,
            Err(Failure::Other(why)) if why.contains("not an HTTP status line")
        ));
        let (port, _) = server(Some("")).await;
        assert!(matches!(
            probe(&spec(port, http("200-399"))).await,
            Err(Failure::Other(why)) if why.contains("closed before a status line")
        ));
    }

    #[test]
    fn specs_default_to_the_backend_port_and_address() {
        let mut h = HealthConfig::default();
        let addr = Ipv4Addr::new(10, 1, 0, 11);
        assert_eq!(ProbeSpec::new(&h, addr.into(), 8080).target.port(), 8080);
        h.kind = ProbeType::Http;
        h.port = Some(9090);
        let s = ProbeSpec::new(&h, addr.into(), 8080);
        assert_eq!(s.target, SocketAddrV4::new(addr, 9090).into());
        assert_eq!(
            s.kind,
            ProbeKind::Http {
                path: "/".into(),
                host: "10.1.0.11:9090".into(),
                expect: StatusRange { min: 200, max: 399 }
            }
        );
    }

    #[test]
    fn an_ipv6_backends_default_host_is_its_address_in_brackets() {
        let h = HealthConfig {
            kind: ProbeType::Http,
            ..HealthConfig::default()
        };
        let addr: IpAddr = "2001:db8::11".parse().unwrap();
        let host = |port| match ProbeSpec::new(&h, addr, port).kind {
            ProbeKind::Http { host, .. } => host,
            other => panic!("{other:?}"),
        };
        assert_eq!(host(8080), "[2001:db8::11]:8080");
        assert_eq!(host(80), "[2001:db8::11]");
        assert_eq!(
            ProbeSpec::new(&h, addr, 8080).target,
            "[2001:db8::11]:8080".parse().unwrap()
        );
    }

    #[tokio::test]
    async fn a_tcp_probe_connects_to_an_ipv6_backend() {
        let listener = TcpListener::bind("[::1]:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let spec = ProbeSpec {
            target: SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)),
            ..spec(port, ProbeKind::Tcp)
        };
        assert_eq!(probe(&spec).await, Ok(()));
        drop(listener);
        assert_eq!(probe(&spec).await, Err(Failure::Refused));
    }
}
