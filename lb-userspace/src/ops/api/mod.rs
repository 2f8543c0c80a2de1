//! The admin API: HTTP + JSON under `/v1/`, served on the owner-only unix socket and,
//! when configured, on TCP behind a bearer token. Handlers only translate HTTP to calls
//! on [`Runtime`](crate::control::runtime::Runtime); what a change does lives in `crate::model::desired::edit`.
//!
//! | method and path | what |
//! | --- | --- |
//! | `GET /v1/services` | services, with backend counts |
//! | `POST /v1/services` | add a service (body: a service as in the config file) |
//! | `GET /v1/services/{service}` | one service as in the config file |
//! | `DELETE /v1/services/{service}` | remove a service |
//! | `GET /v1/backends[?service=S]` | backends |
//! | `POST /v1/services/{service}/backends` | add a backend (body: as in the config file) |
//! | `DELETE /v1/services/{service}/backends/{addr:port}` | remove a backend |
//! | `POST /v1/services/{service}/backends/{addr:port}/drain` and `/undrain` | backend state |
//! | `PUT /v1/services/{service}/backends/{addr:port}/weight` | body `{"weight": N}` |
//! | `GET`, `POST /v1/services/{service}/filter` | edge rules with their counts; add or remove one |
//! | `GET /v1/limited[?limit=N]` | the sources a SYN rate limit dropped most |
//! | `GET /v1/zones` | zones, and where they are drained |
//! | `POST /v1/zones/{zone}/drain[?service=S]` and `/undrain` | zone drain |
//! | `GET /v1/health` | per-backend health as lbd knows it |
//! | `GET /v1/stats` | counters and rates per service, backend, zone |
//! | `GET /v1/config` | the whole desired state |
//! | `GET /v1/explain?client=A:P&vip=V:P` | which backend a new and an existing connection of that tuple take, and why |
//! | `POST /v1/services/{service}/trace` | body `{"sample": N, "duration": "30s"}`: the service's packets, one JSON line each, while the trace lasts (see `crate::kernel::trace`) |
//! | `POST /v1/apply[?dry_run=true]` | declarative: body `{"services": [...]}` or a whole config |
//! | `GET /v1/node` | the node's VIPs (announced, on `lo`, in BIRD, why), its drain, BIRD's sessions |
//! | `POST /v1/node/drain` and `/undrain` | withdraw every VIP, persisted in the state file |
//! | `GET /v1/events[?since=SEQ][&service=S][&follow=1]` | lifecycle events, one JSON line each (route in `crate::ops::events::route`) |
pub mod body;
#[cfg(test)]
mod body_props;
pub mod error;
pub mod listen;
mod routes;
pub mod scope;
#[cfg(test)]
mod tests;
pub mod tokens;

use axum::{
    extract::DefaultBodyLimit,
    http::{Method, Uri},
    routing::{get, post, put},
    Router,
};

use self::{body::MAX_BODY, error::ApiError};
use crate::ops::shared::{DataPath, Shared};

/// The admin API; `explain` also reads the data path's maps.
pub fn router<D: DataPath>(runtime: Shared<D>) -> Router {
    use routes::*;
    let backend = "/v1/services/{service}/backends/{backend}";
    Router::new()
        .route(
            "/v1/services",
            get(services::list::<D>).post(services::add::<D>),
        )
        .route(
            "/v1/services/{service}",
            get(services::show::<D>).delete(services::remove::<D>),
        )
        .route("/v1/backends", get(backends::list::<D>))
        .route("/v1/services/{service}/backends", post(backends::add::<D>))
        .route(backend, axum::routing::delete(backends::remove::<D>))
        .route(&format!("{backend}/drain"), post(backends::drain::<D>))
        .route(&format!("{backend}/undrain"), post(backends::undrain::<D>))
        .route(&format!("{backend}/weight"), put(backends::set_weight::<D>))
        .route(
            "/v1/services/{service}/filter",
            get(filter::show::<D>).post(filter::set::<D>),
        )
        .route("/v1/limited", get(filter::limited::<D>))
        .route("/v1/zones", get(zones::list::<D>))
        .route("/v1/zones/{zone}/drain", post(zones::drain::<D>))
        .route("/v1/zones/{zone}/undrain", post(zones::undrain::<D>))
        .route("/v1/health", get(info::health::<D>))
        .route("/v1/stats", get(info::stats::<D>))
        .route("/v1/config", get(info::config::<D>))
        .route("/v1/explain", get(explain::explain_tuple::<D>))
        .route("/v1/apply", post(info::apply::<D>))
        .route("/v1/node", get(node::status::<D>))
        .route("/v1/node/drain", post(node::drain::<D>))
        .route("/v1/node/undrain", post(node::undrain::<D>))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(runtime)
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::NOT_FOUND,
        format!("no such endpoint: {method} {}", uri.path()),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", uri.path()),
    )
}

/// Runs blocking work (the runtime's lock, map reads and writes, fsync) off the async
/// threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("request worker failed: {e}")))
}
