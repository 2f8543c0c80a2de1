//! `POST /v1/services/{service}/trace` with `{"sample": N, "duration": "30s"}` (both
//! optional): traces 1 in N packets of the service and answers with one JSON object per
//! traced packet ([`TraceLine`](super::view::TraceLine), newline-delimited) until the duration ends, the client
//! goes away or `lbd` stops; the trace is off again then. One trace per service at once.
use std::{collections::BTreeMap, convert::Infallible, sync::Arc, time::Duration};

use axum::{
    body::{Body, Bytes},
    extract::{Path, State},
    http::{header::CONTENT_TYPE, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
    Router,
};
use futures_util::stream;
use serde::Deserialize;
use tokio::{sync::watch, time::Instant};

use super::view::{line, BackendNames};
use crate::{
    kernel::trace::{OpenError, Session, Tracer},
    model::config::duration,
    ops::api::{blocking, body::JsonBody, error::ApiError},
    ops::shared::{DataPath, Shared},
};

/// The longest trace one request may ask for: a forgotten trace ends by itself.
pub const MAX_DURATION: Duration = Duration::from_secs(600);
/// How long a trace runs when the request does not say.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(30);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceRequest {
    /// Trace 1 in this many packets (default 1: every packet).
    pub sample: Option<u32>,
    /// How long, e.g. `30s` (default 30s, at most 10m).
    pub duration: Option<String>,
}

/// The sampling and duration a request asks for, or an error naming the field.
pub fn limits(req: &TraceRequest) -> Result<(u32, Duration), ApiError> {
    let sample = req.sample.unwrap_or(1);
    if sample == 0 {
        return Err(ApiError::bad_request(
            "sample: must be at least 1 (trace 1 in N packets); a trace ends with its request",
        ));
    }
    let how_long = match &req.duration {
        Some(text) => {
            duration::parse(text).map_err(|e| ApiError::bad_request(format!("duration: {e}")))?
        }
        None => DEFAULT_DURATION,
    };
    if how_long.is_zero() || how_long > MAX_DURATION {
        return Err(ApiError::bad_request(format!(
            "duration: {} is out of range (more than 0, at most {})",
            duration::format(how_long),
            duration::format(MAX_DURATION)
        )));
    }
    Ok((sample, how_long))
}

struct TraceState<D: DataPath> {
    runtime: Shared<D>,
    tracer: Arc<Tracer>,
    /// Turns true when `lbd` stops: every trace ends then.
    stopped: watch::Receiver<bool>,
}

impl<D: DataPath> Clone for TraceState<D> {
    fn clone(&self) -> Self {
        Self {
            runtime: self.runtime.clone(),
            tracer: self.tracer.clone(),
            stopped: self.stopped.clone(),
        }
    }
}

/// The trace route, to merge into the admin API's router.
pub fn router<D: DataPath>(
    runtime: Shared<D>,
    tracer: Arc<Tracer>,
    stopped: watch::Receiver<bool>,
) -> Router {
    Router::new()
        .route("/v1/services/{service}/trace", post(trace::<D>))
        .with_state(TraceState {
            runtime,
            tracer,
            stopped,
        })
}

async fn trace<D: DataPath>(
    State(state): State<TraceState<D>>,
    Path(service): Path<String>,
    JsonBody(req): JsonBody<TraceRequest>,
) -> Result<Response, ApiError> {
    let (sample, how_long) = limits(&req)?;
    let name = service.clone();
    let found = blocking(move || {
        state.runtime.with(|runtime| {
            let plan = runtime.controller().plan()?;
            let s = plan.services.iter().find(|s| s.name == name)?;
            let names: BackendNames = plan
                .backends
                .iter()
                .filter(|b| b.at.service == name)
                .map(|b| {
                    (
                        b.id,
                        std::net::SocketAddr::new(b.at.address, b.at.port).to_string(),
                    )
                })
                .collect::<BTreeMap<_, _>>();
            Some((s.id, names))
        })
    })
    .await?;
    let Some((id, backends)) = found else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no service {service}"),
        ));
    };
    let session = state
        .tracer
        .open(&service, id, sample)
        .map_err(|e| match e {
            OpenError::Busy(_) => ApiError::new(StatusCode::CONFLICT, e.to_string()),
            OpenError::Map(_) => {
                log::error!("trace of {service}: {e}");
                ApiError::internal(e.to_string())
            }
        })?;
    let until = Instant::now() + how_long;
    let lines = stream::unfold(
        (session, state.stopped, service, backends),
        move |(mut session, mut stopped, service, backends)| async move {
            let record = next_record(&mut session, &mut stopped, until).await?;
            let mut text = serde_json::to_vec(&line(&record, &service, &backends))
                .expect("trace lines serialize");
            text.push(b'\n');
            Some((
                Ok::<_, Infallible>(Bytes::from(text)),
                (session, stopped, service, backends),
            ))
        },
    );
    Ok((
        [(CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response())
}

/// The session's next record, or `None` once the trace is over.
async fn next_record(
    session: &mut Session,
    stopped: &mut watch::Receiver<bool>,
    until: Instant,
) -> Option<lb_common::trace::TraceRecord> {
    if *stopped.borrow() {
        return None;
    }
    tokio::select! {
        r = session.next() => r,
        _ = tokio::time::sleep_until(until) => None,
        _ = stopped.changed() => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(sample: Option<u32>, duration: Option<&str>) -> TraceRequest {
        TraceRequest {
            sample,
            duration: duration.map(str::to_string),
        }
    }

    #[test]
    fn sampling_and_duration_default_and_are_bounded_naming_the_field() {
        assert_eq!(limits(&req(None, None)).unwrap(), (1, DEFAULT_DURATION));
        assert_eq!(
            limits(&req(Some(100), Some("2m"))).unwrap(),
            (100, Duration::from_secs(120))
        );
        let refused = |r: TraceRequest| limits(&r).unwrap_err().message;
        assert!(refused(req(Some(0), None)).starts_with("sample: "));
        assert!(refused(req(None, Some("11m"))).starts_with("duration: 11m is out of range"));
        assert!(refused(req(None, Some("0s"))).starts_with("duration: "));
        assert!(refused(req(None, Some("30"))).starts_with("duration: `30` needs a unit"));
    }
}
