//! `lbctl`'s side of the admin API: HTTP/1.1 over lbd's unix socket, one connection per
//! request. Errors say what to do: lbd not running, socket not accessible, or the API's
//! own message for a refused request.
use std::{
    io::ErrorKind,
    path::{Path, PathBuf},
};

use http_body_util::{BodyExt, Full};
use hyper::{
    body::Bytes,
    header::{CONTENT_TYPE, HOST},
    Method, Request,
};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;

use crate::api::views::ErrorBody;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("lbd is not running: nothing listens on {0} (start lbd, or give its api.socket with --socket or LBD_SOCKET)")]
    NotRunning(PathBuf),
    #[error("permission denied on {0}: lbd's admin socket is owner-only; run lbctl as lbd's user (root)")]
    PermissionDenied(PathBuf),
    #[error("connecting to {0}: {1}")]
    Connect(PathBuf, std::io::Error),
    #[error("{message} (HTTP {status})")]
    Api { status: u16, message: String },
    #[error("talking to lbd on {0}: {1}")]
    Protocol(PathBuf, String),
}

pub struct Client {
    socket: PathBuf,
    runtime: tokio::runtime::Runtime,
}

impl Client {
    pub fn new(socket: &Path) -> std::io::Result<Self> {
        Ok(Self {
            socket: socket.to_path_buf(),
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
        let bytes = self.runtime.block_on(self.exchange(method, path, body))?;
        serde_json::from_slice(&bytes).map_err(|e| self.protocol(format!("unexpected answer: {e}")))
    }

    fn protocol(&self, message: impl Into<String>) -> ClientError {
        ClientError::Protocol(self.socket.clone(), message.into())
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Bytes, ClientError> {
        let stream = UnixStream::connect(&self.socket)
            .await
            .map_err(|e| match e.kind() {
                ErrorKind::NotFound | ErrorKind::ConnectionRefused => {
                    ClientError::NotRunning(self.socket.clone())
                }
                ErrorKind::PermissionDenied => ClientError::PermissionDenied(self.socket.clone()),
                _ => ClientError::Connect(self.socket.clone(), e),
            })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.protocol(e.to_string()))?;
        tokio::spawn(connection);
        let body = match body {
            Some(v) => Full::new(Bytes::from(v.to_string())),
            None => Full::new(Bytes::new()),
        };
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, "lbd")
            .header(CONTENT_TYPE, "application/json")
            .body(body)
            .map_err(|e| self.protocol(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| self.protocol(e.to_string()))?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| self.protocol(e.to_string()))?
            .to_bytes();
        if !status.is_success() {
            let message = serde_json::from_slice::<ErrorBody>(&bytes)
                .map(|e| e.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).trim().to_string());
            return Err(ClientError::Api {
                status: status.as_u16(),
                message,
            });
        }
        Ok(bytes)
    }
}
