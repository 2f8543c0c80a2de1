//! A UDP health probe: one datagram to the backend from a connected socket, and a reply
//! within the timeout (holding the expected bytes, if any). A connected UDP socket learns
//! of an ICMP port-unreachable as ECONNREFUSED on its next receive, so a backend where
//! nothing listens fails the probe at once rather than at its timeout.
use std::{
    io::ErrorKind,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use tokio::net::UdpSocket;

use super::machine::{Failure, Outcome};

/// The largest reply looked at: more than any probe's `expect` (512 bytes at most).
const MAX_REPLY: usize = 2048;

/// Sends `send` to `target` and waits for a reply holding `expect` (any reply if none),
/// from a socket bound to `from` (a source address and a socket mark, as `probe` gives a
/// probe through a tunnel) if given. Unbounded here: the caller bounds it by the probe
/// timeout.
pub async fn run(
    target: SocketAddr,
    from: Option<(IpAddr, u32)>,
    send: &[u8],
    expect: Option<&[u8]>,
) -> Outcome {
    let socket = match from {
        None => {
            let any = match target {
                SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            };
            UdpSocket::bind(SocketAddr::new(any, 0)).await
        }
        Some((source, mark)) => bound_via(source, mark).await,
    }
    .map_err(|e| Failure::Other(format!("UDP socket: {e}")))?;
    socket
        .connect(target)
        .await
        .map_err(|e| failure("connect", e))?;
    socket.send(send).await.map_err(|e| failure("send", e))?;
    let mut buf = vec![0u8; MAX_REPLY];
    // Each probe has a socket (a port) of its own: the first reply is this probe's.
    let n = socket
        .recv(&mut buf)
        .await
        .map_err(|e| failure("receive", e))?;
    match expect {
        Some(expect) if !holds(&buf[..n], expect) => Err(Failure::Other(format!(
            "reply of {n} bytes without the expected {} bytes",
            expect.len()
        ))),
        _ => Ok(()),
    }
}

/// Whether `reply` holds `expect` anywhere.
fn holds(reply: &[u8], expect: &[u8]) -> bool {
    reply.windows(expect.len()).any(|w| w == expect)
}

/// A socket bound to `source` with `mark`, as `probe::connect_via` makes for TCP.
async fn bound_via(source: IpAddr, mark: u32) -> std::io::Result<UdpSocket> {
    let socket = UdpSocket::bind(SocketAddr::from((source, 0))).await?;
    super::socket_mark::set_mark(&socket, mark)?;
    Ok(socket)
}

fn failure(what: &str, e: std::io::Error) -> Failure {
    match e.kind() {
        // The ICMP port-unreachable of a port where nothing listens.
        ErrorKind::ConnectionRefused => Failure::Refused,
        ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable => Failure::Unreachable,
        _ => Failure::Other(format!("{what}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A one-shot UDP server on 127.0.0.1 that answers the first datagram with `reply`
    /// and hands back what it received.
    async fn server(reply: &'static [u8]) -> (u16, tokio::task::JoinHandle<Vec<u8>>) {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = socket.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let (n, peer) = socket.recv_from(&mut buf).await.unwrap();
            socket.send_to(reply, peer).await.unwrap();
            buf[..n].to_vec()
        });
        (port, task)
    }

    fn at(port: u16) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, port))
    }

    #[tokio::test]
    async fn a_reply_passes_and_the_payload_is_sent_as_given() {
        let (port, got) = server(b"pong").await;
        assert_eq!(run(at(port), None, b"\x00ping", None).await, Ok(()));
        assert_eq!(got.await.unwrap(), b"\x00ping");
        let (port, _) = server(b"xx pong xx").await;
        assert_eq!(run(at(port), None, b"ping", Some(b"pong")).await, Ok(()));
    }

    #[tokio::test]
    async fn a_reply_without_the_expected_bytes_fails() {
        let (port, _) = server(b"nope").await;
        assert!(matches!(
            run(at(port), None, b"ping", Some(b"pong")).await,
            Err(Failure::Other(why)) if why.contains("without the expected 4 bytes")
        ));
    }

    #[tokio::test]
    async fn a_closed_port_fails_as_refused_at_once_not_at_the_timeout() {
        let closed = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let outcome =
            tokio::time::timeout(Duration::from_secs(30), run(at(port), None, b"x", None))
                .await
                .expect("the port-unreachable ends the probe");
        assert_eq!(outcome, Err(Failure::Refused));
    }

    #[tokio::test]
    async fn an_ipv6_backend_is_probed_from_an_ipv6_socket() {
        let socket = UdpSocket::bind("[::1]:0").await.unwrap();
        let target = socket.local_addr().unwrap();
        let answer = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            let (_, peer) = socket.recv_from(&mut buf).await.unwrap();
            socket.send_to(b"pong", peer).await.unwrap();
        });
        assert_eq!(run(target, None, b"ping", Some(b"pong")).await, Ok(()));
        answer.await.unwrap();
        // Nothing listens there now: the ICMPv6 port-unreachable fails it at once.
        let outcome = tokio::time::timeout(Duration::from_secs(30), run(target, None, b"x", None))
            .await
            .expect("the port-unreachable ends the probe");
        assert_eq!(outcome, Err(Failure::Refused));
    }

    #[test]
    fn expected_bytes_are_found_anywhere_in_the_reply() {
        assert!(holds(b"abcdef", b"cde"));
        assert!(holds(b"abc", b"abc"));
        assert!(!holds(b"ab", b"abc"));
        assert!(!holds(b"abcdef", b"ce"));
    }
}
