//! `GET /v1/explain?client=A:P&vip=V:P[&protocol=udp]`: which backend a new and an
//! existing connection of that tuple (UDP: its next datagram) would take, and why (see
//! `crate::ops::explain`).
use std::{net::SocketAddr, time::Instant};

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

pub async fn explain_tuple<D: DataPath>(
    State(rt): State<Shared<D>>,
    Query(q): Query<ExplainQuery>,
) -> Result<Json<ExplainView>, ApiError> {
    let client = addr("client", q.client.as_deref())?;
    let vip = addr("vip", q.vip.as_deref())?;
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
        ExplainError::MixedFamilies(..) => ApiError::bad_request(e.to_string()),
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
