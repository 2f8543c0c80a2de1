//! Reading BIRD's control socket (`announce.bird_socket`): one connection per query,
//! every read and write bounded by [`TIMEOUT`], so a hung BIRD delays lbd's answer by
//! at most that. lbd only sends `show` commands; it never changes BIRD.
use std::{
    io::{Read as _, Write as _},
    net::IpAddr,
    os::unix::net::UnixStream,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};

use crate::model::bird_reply::{self, BfdSession, Line, Protocol};

/// Bound of one whole query (connect, greeting, command, reply).
pub const TIMEOUT: Duration = Duration::from_secs(1);

/// Largest reply read (a `show route` of one /32 or the protocol list is a few KiB).
const MAX_REPLY: usize = 1 << 20;

/// Sends `command` and returns the reply's lines (BIRD's error as an error).
pub fn query(socket: &Path, command: &str) -> anyhow::Result<Vec<Line>> {
    let deadline = Instant::now() + TIMEOUT;
    let mut stream = UnixStream::connect(socket)
        .with_context(|| format!("connecting to BIRD at {}", socket.display()))?;
    let mut text = String::new();
    read_until(&mut stream, &mut text, deadline, |t| t.contains('\n'))
        .context("reading BIRD's greeting")?;
    let (greeting, rest) = text.split_once('\n').expect("read up to a newline");
    bird_reply::greeting(greeting).context("BIRD's greeting")?;
    let mut reply = rest.to_string();
    stream.set_write_timeout(Some(remaining(deadline)?))?;
    stream
        .write_all(format!("{command}\n").as_bytes())
        .with_context(|| format!("sending `{command}` to BIRD"))?;
    read_until(&mut stream, &mut reply, deadline, bird_reply::is_complete)
        .with_context(|| format!("reading BIRD's reply to `{command}`"))?;
    Ok(bird_reply::parse(&reply)?)
}

fn remaining(deadline: Instant) -> anyhow::Result<Duration> {
    match deadline.checked_duration_since(Instant::now()) {
        Some(left) if !left.is_zero() => Ok(left),
        _ => bail!("no answer within {TIMEOUT:?}"),
    }
}

fn read_until(
    stream: &mut UnixStream,
    text: &mut String,
    deadline: Instant,
    done: impl Fn(&str) -> bool,
) -> anyhow::Result<()> {
    let mut buf = [0u8; 8192];
    while !done(text) {
        stream.set_read_timeout(Some(remaining(deadline)?))?;
        let n = match stream.read(&mut buf) {
            Ok(0) => bail!("BIRD closed the connection"),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                bail!("no answer within {TIMEOUT:?}")
            }
            Err(e) => return Err(e.into()),
        };
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
        if text.len() > MAX_REPLY {
            bail!("the reply is larger than {MAX_REPLY} bytes");
        }
    }
    Ok(())
}

/// `show protocols` and `show bfd sessions` (the latter empty when BIRD runs no BFD).
pub fn sessions(socket: &Path) -> anyhow::Result<(Vec<Protocol>, Vec<BfdSession>)> {
    let protocols = bird_reply::protocols(&query(socket, "show protocols")?);
    let bfd = match query(socket, "show bfd sessions") {
        Ok(lines) => bird_reply::bfd_sessions(&lines),
        // 9001/8xxx: no BFD protocol configured.
        Err(e) if e.downcast_ref::<bird_reply::ReplyError>().is_some() => Vec::new(),
        Err(e) => return Err(e),
    };
    Ok((protocols, bfd))
}

/// Whether BIRD has `vip`'s host route (/32, /128) out of `lo` (see
/// [`bird_reply::route_on_lo`]).
pub fn route_on_lo(socket: &Path, vip: IpAddr) -> anyhow::Result<bool> {
    let host = if vip.is_ipv6() { 128 } else { 32 };
    let reply = match query(socket, &format!("show route {vip}/{host}")) {
        Ok(lines) => Ok(lines),
        Err(e) => match e.downcast::<bird_reply::ReplyError>() {
            Ok(reply) => Err(reply),
            Err(e) => return Err(e),
        },
    };
    Ok(bird_reply::route_on_lo(reply)?)
}
