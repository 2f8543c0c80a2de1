//! `lbctl`'s side of the admin API: HTTP/1.1 over lbd's unix socket, or over its TCP
//! listener with a bearer token, one connection per request. Errors say what to do: lbd
//! not running, socket not accessible, lbd not answering in time, or the API's own
//! message for a refused request. Every request is bounded: a stopped or overloaded lbd
//! must not hang a script.
use std::{fmt, io::ErrorKind, path::PathBuf, time::Duration};

use http_body_util::{BodyExt, Full};
use hyper::{
    body::Bytes,
    header::{AUTHORIZATION, CONTENT_TYPE, HOST},
    Method, Request,
};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpStream, UnixStream},
    time::Instant,
};

use crate::{model::config::duration, ops::views::ErrorBody};

/// Where lbd's admin API answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// Its unix socket (`api.socket`): the socket's permissions are the authentication.
    Socket(PathBuf),
    /// Its TCP listener (`api.listen`), `HOST:PORT`, where every request carries a token.
    Http { addr: String, token: String },
}

impl Endpoint {
    /// `http://HOST:PORT` (with the token) or a socket path.
    pub fn parse(s: &str, token: Option<&str>) -> Result<Self, String> {
        let Some(rest) = s.strip_prefix("http://") else {
            if s.contains("://") {
                return Err(format!("`{s}`: expected a socket path or http://HOST:PORT"));
            }
            return Ok(Self::Socket(PathBuf::from(s)));
        };
        let addr = rest.trim_end_matches('/');
        let port_ok = addr
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !port_ok || addr.contains('/') {
            return Err(format!("`{s}`: expected http://HOST:PORT"));
        }
        let token = token.ok_or_else(|| {
            format!("`{s}` needs a token: give lbd's api token file with --token-file or LBD_TOKEN_FILE")
        })?;
        Ok(Self::Http {
            addr: addr.to_string(),
            token: token.to_string(),
        })
    }

    /// What to change when nothing answers there.
    fn hint(&self) -> &'static str {
        match self {
            Self::Socket(_) => {
                "start lbd, or give its api.socket with --socket or LBD_SOCKET, or its api.listen with --api"
            }
            Self::Http { .. } => "start lbd, or check its api.listen and --api or LBD_API",
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Socket(path) => write!(f, "{}", path.display()),
            Self::Http { addr, .. } => write!(f, "http://{addr}"),
        }
    }
}

/// Reads a token file as lbd does (see `model::config::token_in`).
pub fn read_token(path: &std::path::Path) -> anyhow::Result<String> {
    use anyhow::Context;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the token file {}", path.display()))?;
    let token = crate::model::config::token_in(&text)
        .map_err(|why| anyhow::anyhow!("the token file {} {why}", path.display()))?;
    Ok(token.to_string())
}

/// A connected stream to lbd, of either kind.
trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("lbd is not running: nothing listens on {0} ({hint})", hint = .0.hint())]
    NotRunning(Endpoint),
    #[error("permission denied on {0}: lbd's admin socket is owner-only; run lbctl as lbd's user (root)")]
    PermissionDenied(Endpoint),
    #[error("connecting to {0}: {1}")]
    Connect(Endpoint, std::io::Error),
    #[error("{message} (HTTP {status})")]
    Api { status: u16, message: String },
    #[error("talking to lbd on {0}: {1}")]
    Protocol(Endpoint, String),
    #[error(
        "lbd did not {what} on {endpoint} within {} ({flag}): it may be stopped or overloaded",
        duration::format(*after)
    )]
    Timeout {
        endpoint: Endpoint,
        /// `accept the connection` or `answer`.
        what: &'static str,
        after: Duration,
        /// The flag and variable that set it.
        flag: &'static str,
    },
}

/// How long `lbctl` waits for lbd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// To connect (lbd's accept queue may be full while it is overloaded).
    pub connect: Duration,
    /// For the whole request, connecting included.
    pub request: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            request: Duration::from_secs(30),
        }
    }
}

pub struct Client {
    endpoint: Endpoint,
    timeouts: Timeouts,
    runtime: tokio::runtime::Runtime,
}

impl Client {
    pub fn new(endpoint: &Endpoint, timeouts: Timeouts) -> std::io::Result<Self> {
        Ok(Self {
            endpoint: endpoint.clone(),
            timeouts,
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
        })
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call(Method::GET, path, None)
    }

    pub fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<T, ClientError> {
        self.call(method, path, body)
    }

    fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<T, ClientError> {
        let request = self.timeouts.request;
        let bytes = self
            .runtime
            .block_on(async {
                tokio::time::timeout(request, self.exchange(method, path, body)).await
            })
            .map_err(|_| ClientError::Timeout {
                endpoint: self.endpoint.clone(),
                what: "answer",
                after: request,
                flag: "--timeout, LBCTL_TIMEOUT",
            })??;
        serde_json::from_slice(&bytes).map_err(|e| self.protocol(format!("unexpected answer: {e}")))
    }

    fn protocol(&self, message: impl Into<String>) -> ClientError {
        ClientError::Protocol(self.endpoint.clone(), message.into())
    }

    /// POSTs `body` to `path` and passes each line of the answer to `each` as it comes,
    /// for a streamed answer that lbd ends within `lasts`: the answer must begin within
    /// the request timeout, and end within `lasts` plus the request timeout.
    pub fn stream_lines(
        &self,
        path: &str,
        body: &serde_json::Value,
        lasts: Duration,
        each: impl FnMut(&[u8]) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        self.stream(Method::POST, path, Some(body), lasts, each)
    }

    /// [`Client::stream_lines`] of a GET (`GET /v1/events?follow=1`).
    pub fn stream_get_lines(
        &self,
        path: &str,
        lasts: Duration,
        each: impl FnMut(&[u8]) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        self.stream(Method::GET, path, None, lasts, each)
    }

    fn stream(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
        lasts: Duration,
        mut each: impl FnMut(&[u8]) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let request = self.timeouts.request;
        let answer_timeout = |after| ClientError::Timeout {
            endpoint: self.endpoint.clone(),
            what: "answer",
            after,
            flag: "--timeout, LBCTL_TIMEOUT",
        };
        self.runtime.block_on(async {
            let response = tokio::time::timeout(request, self.respond(method, path, body))
                .await
                .map_err(|_| answer_timeout(request))??;
            if !response.status().is_success() {
                let status = response.status();
                let bytes = tokio::time::timeout(request, response.into_body().collect())
                    .await
                    .map_err(|_| answer_timeout(request))?
                    .map_err(|e| self.protocol(e.to_string()))?
                    .to_bytes();
                return Err(api_error(status, &bytes).into());
            }
            let deadline = Instant::now() + lasts + request;
            let mut body = response.into_body();
            let mut pending = Vec::new();
            loop {
                let frame = tokio::time::timeout_at(deadline, body.frame())
                    .await
                    .map_err(|_| answer_timeout(lasts + request))?;
                let Some(frame) = frame else { break };
                let frame = frame.map_err(|e| self.protocol(e.to_string()))?;
                if let Some(data) = frame.data_ref() {
                    pending.extend_from_slice(data);
                    while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                        let line: Vec<u8> = pending.drain(..=end).collect();
                        each(&line[..end])?;
                    }
                }
            }
            if !pending.is_empty() {
                return Err(self.protocol("the answer ended inside a line").into());
            }
            Ok(())
        })
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Bytes, ClientError> {
        let response = self.respond(method, path, body).await?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| self.protocol(e.to_string()))?
            .to_bytes();
        if !status.is_success() {
            return Err(api_error(status, &bytes));
        }
        Ok(bytes)
    }

    /// Sends the request; the answer's head has arrived when this returns.
    async fn respond(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, ClientError> {
        let stream = self.connect().await?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.protocol(e.to_string()))?;
        tokio::spawn(connection);
        let body = match body {
            Some(v) => Full::new(Bytes::from(v.to_string())),
            None => Full::new(Bytes::new()),
        };
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, "lbd")
            .header(CONTENT_TYPE, "application/json");
        if let Endpoint::Http { token, .. } = &self.endpoint {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request
            .body(body)
            .map_err(|e| self.protocol(e.to_string()))?;
        sender
            .send_request(request)
            .await
            .map_err(|e| self.protocol(e.to_string()))
    }

    /// Connects; a full accept queue (EAGAIN on a unix socket) is retried until the
    /// connect timeout.
    async fn connect(&self) -> Result<Box<dyn Stream>, ClientError> {
        let deadline = Instant::now() + self.timeouts.connect;
        loop {
            let attempt = tokio::time::timeout_at(deadline, async {
                match &self.endpoint {
                    Endpoint::Socket(path) => UnixStream::connect(path)
                        .await
                        .map(|s| Box::new(s) as Box<dyn Stream>),
                    Endpoint::Http { addr, .. } => TcpStream::connect(addr.as_str())
                        .await
                        .map(|s| Box::new(s) as Box<dyn Stream>),
                }
            });
            let e = match attempt.await {
                Ok(Ok(stream)) => return Ok(stream),
                Ok(Err(e)) => e,
                Err(_) => return Err(self.connect_timeout()),
            };
            return Err(match e.kind() {
                ErrorKind::NotFound | ErrorKind::ConnectionRefused => {
                    ClientError::NotRunning(self.endpoint.clone())
                }
                ErrorKind::PermissionDenied => ClientError::PermissionDenied(self.endpoint.clone()),
                ErrorKind::WouldBlock => {
                    if Instant::now() + CONNECT_RETRY >= deadline {
                        return Err(self.connect_timeout());
                    }
                    tokio::time::sleep(CONNECT_RETRY).await;
                    continue;
                }
                _ => ClientError::Connect(self.endpoint.clone(), e),
            });
        }
    }

    fn connect_timeout(&self) -> ClientError {
        ClientError::Timeout {
            endpoint: self.endpoint.clone(),
            what: "accept the connection",
            after: self.timeouts.connect,
            flag: "--connect-timeout, LBCTL_CONNECT_TIMEOUT",
        }
    }
}

/// The API's refusal of a request, with its own message.
fn api_error(status: hyper::StatusCode, bytes: &[u8]) -> ClientError {
    let message = serde_json::from_slice::<ErrorBody>(bytes)
        .map(|e| e.error)
        .unwrap_or_else(|_| String::from_utf8_lossy(bytes).trim().to_string());
    ClientError::Api {
        status: status.as_u16(),
        message,
    }
}

const CONNECT_RETRY: Duration = Duration::from_millis(50);

#[cfg(test)]
mod tests {
    use std::{os::fd::FromRawFd, path::Path};

    use super::*;

    fn socket_path(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lbctl-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("lbd.sock")
    }

    #[test]
    fn a_socket_that_accepts_and_never_answers_times_out_naming_it() {
        let path = socket_path("mute");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        // Accepts, reads nothing, answers nothing; holds the connection.
        let held = std::thread::spawn(move || listener.accept().map(|(s, _)| s));
        let timeouts = Timeouts {
            connect: Duration::from_secs(5),
            request: Duration::from_millis(300),
        };
        let client = Client::new(&Endpoint::Socket(path.clone()), timeouts).unwrap();
        let e = client.get::<serde_json::Value>("/v1/health").unwrap_err();
        assert!(
            matches!(e, ClientError::Timeout { what: "answer", .. }),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            format!(
                "lbd did not answer on {} within 300ms (--timeout, LBCTL_TIMEOUT): it may be \
                 stopped or overloaded",
                path.display()
            )
        );
        drop(held.join().unwrap());
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn endpoints_are_socket_paths_or_http_with_a_token() {
        assert_eq!(
            Endpoint::parse("/run/lbd/api.sock", None),
            Ok(Endpoint::Socket("/run/lbd/api.sock".into()))
        );
        assert_eq!(
            Endpoint::parse("http://10.0.0.2:9100/", Some("t")),
            Ok(Endpoint::Http {
                addr: "10.0.0.2:9100".into(),
                token: "t".into()
            })
        );
        assert_eq!(
            Endpoint::parse("http://lb-2.example:9100", None),
            Err(
                "`http://lb-2.example:9100` needs a token: give lbd's api token file with \
                 --token-file or LBD_TOKEN_FILE"
                    .into()
            )
        );
        for bad in [
            "http://10.0.0.2",
            "http://:9100",
            "http://h:99999",
            "http://h:1/v1",
            "https://h:1",
        ] {
            assert!(Endpoint::parse(bad, Some("t")).is_err(), "{bad}");
        }
        assert_eq!(
            Endpoint::parse("http://h:1", Some("t"))
                .unwrap()
                .to_string(),
            "http://h:1"
        );
    }

    /// A unix socket address for `path`, and its length.
    fn sockaddr(path: &Path) -> (libc::sockaddr_un, libc::socklen_t) {
        // SAFETY: sockaddr_un is plain data; zeroed is a valid value.
        let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        let bytes = path.as_os_str().as_encoded_bytes();
        for (i, b) in bytes.iter().enumerate() {
            addr.sun_path[i] = *b as libc::c_char;
        }
        let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
        (addr, len as libc::socklen_t)
    }

    /// A non-blocking connect: `None` when the accept queue is full (EAGAIN).
    fn try_connect(path: &Path) -> Option<std::os::fd::OwnedFd> {
        let (addr, len) = sockaddr(path);
        // SAFETY: plain socket calls on a descriptor owned right away.
        unsafe {
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0);
            assert!(fd >= 0);
            let fd = std::os::fd::OwnedFd::from_raw_fd(fd);
            let ptr = &addr as *const libc::sockaddr_un as *const libc::sockaddr;
            use std::os::fd::AsRawFd;
            (libc::connect(fd.as_raw_fd(), ptr, len) == 0).then_some(fd)
        }
    }

    #[test]
    fn a_full_accept_queue_times_out_the_connect() {
        let path = socket_path("full");
        // A socket that never accepts, with the shortest queue, filled up.
        let (addr, len) = sockaddr(&path);
        // SAFETY: plain socket calls on a descriptor owned right away.
        let listener = unsafe {
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
            assert!(fd >= 0);
            let listener = std::os::unix::net::UnixListener::from_raw_fd(fd);
            let ptr = &addr as *const libc::sockaddr_un as *const libc::sockaddr;
            assert_eq!(libc::bind(fd, ptr, len), 0);
            assert_eq!(libc::listen(fd, 0), 0);
            listener
        };
        let queued: Vec<_> = (0..16).map_while(|_| try_connect(&path)).collect();
        assert!(queued.len() < 16, "the queue fills up");
        let timeouts = Timeouts {
            connect: Duration::from_millis(300),
            request: Duration::from_secs(30),
        };
        let client = Client::new(&Endpoint::Socket(path.clone()), timeouts).unwrap();
        let e = client.get::<serde_json::Value>("/v1/health").unwrap_err();
        assert!(
            matches!(
                e,
                ClientError::Timeout {
                    what: "accept the connection",
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(
            e.to_string()
                .contains("within 300ms (--connect-timeout, LBCTL_CONNECT_TIMEOUT)"),
            "{e}"
        );
        drop((listener, queued));
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }
}
