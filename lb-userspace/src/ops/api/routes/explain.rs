//! `GET /v1/explain?client=A:P&vip=V:P[&protocol=udp]`: which backend a new and an
//! existing connection of that tuple (UDP: its next datagram) would take, and why (see
//! `crate::ops::explain`).
use std::{
    net::{SocketAddr, SocketAddrV4},
    time::Instant,
};

use axum::{
    extract::{Query, State},
    http::StatusCode,
    Json,
};
use serde::Deserialize;

use super::super::{blocking, error::ApiError, DataPath, Shared};
use crate::{
    model::config::Protocol,
    ops::explain::{explain_protocol, ExplainError, ExplainView},
};

#[derive(Deserialize)]
pub struct ExplainQuery {
    client: Option<String>,
    vip: Option<String>,
    /// `tcp` (when absent) or `udp`.
    protocol: Option<String>,
}

/// A required `addr:port` query parameter (`[addr]:port` for IPv6), refused naming the
/// field.
fn addr(field: &str, value: Option<&str>) -> Result<SocketAddr, ApiError> {
    let value =
        value.ok_or_else(|| ApiError::bad_request(format!("{field}: missing (addr:port)")))?;
    value.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "{field}: {value:?} is not an IPv4 address and port (addr:port) nor an IPv6 one \
             ([addr]:port)"
        ))
    })
}

/// The tuple as explain follows it: IPv4 only for now (the IPv6 flow path is not in the
/// data path yet, so there is nothing to explain), and both ends of one family.
fn ipv4_tuple(
    client: SocketAddr,
    vip: SocketAddr,
) -> Result<(SocketAddrV4, SocketAddrV4), ApiError> {
    match (client, vip) {
        (SocketAddr::V4(client), SocketAddr::V4(vip)) => Ok((client, vip)),
        (SocketAddr::V6(_), SocketAddr::V6(_)) => Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            format!(
                "IPv6 flows: not yet in the data path, so explain follows IPv4 flows only \
                 ({client} -> {vip})"
            ),
        )),
        _ => Err(ApiError::bad_request(format!(
            "client {client} and vip {vip} are of different address families"
        ))),
    }
}

pub async fn explain_tuple<D: DataPath>(
    State(rt): State<Shared<D>>,
    Query(q): Query<ExplainQuery>,
) -> Result<Json<ExplainView>, ApiError> {
    let client = addr("client", q.client.as_deref())?;
    let vip = addr("vip", q.vip.as_deref())?;
    let (client, vip) = ipv4_tuple(client, vip)?;
    let protocol = match q.protocol.as_deref() {
        None | Some("tcp") => Protocol::Tcp,
        Some("udp") => Protocol::Udp,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "protocol: {other:?} is neither tcp nor udp"
            )))
        }
    };
    let view = blocking(move || {
        rt.with(|runtime| explain_protocol(runtime, client, vip, protocol, Instant::now()))
    })
    .await?;
    view.map(Json).map_err(|e| match e {
        ExplainError::NoService(_) => ApiError::new(StatusCode::NOT_FOUND, e.to_string()),
        ExplainError::NotProgrammed => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        }
        ExplainError::Read(_) => {
            // A map lbd cannot read is a fault of lbd's, not the caller's: logged too.
            log::error!("explain {client} -> {vip}: {e}");
            ApiError::internal(e.to_string())
        }
    })
}
