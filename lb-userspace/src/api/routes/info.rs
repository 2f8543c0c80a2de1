use axum::{
    extract::{Query, State},
    Json,
};
use serde::Deserialize;

use super::{blocking, DataPath, Shared};
use crate::{
    api::{
        body::JsonBody,
        error::ApiError,
        views::{ChangeResult, HealthView, StatsView},
    },
    config::Config,
    desired::{apply_doc, edit},
    runtime::health_unknown,
};

/// Health as lbd knows it. Until issue 3's probes exist nothing probes a backend, and
/// this says so instead of inventing a result.
pub async fn health<D: DataPath>(State(rt): State<Shared<D>>) -> Json<Vec<HealthView>> {
    let config = rt.desired();
    let mut out = Vec::new();
    for s in &config.services {
        for b in &s.backends {
            out.push(HealthView {
                service: s.name.clone(),
                address: b.address,
                port: b.port,
                zone: b.zone.clone(),
                state: health_unknown(&s.name, &b.into()),
                last_probe: None,
                latency_ms: None,
                reason: "no health checks in this lbd build (health probes come with issue 3)"
                    .into(),
            });
        }
    }
    Json(out)
}

pub async fn stats<D: DataPath>(State(rt): State<Shared<D>>) -> Result<Json<StatsView>, ApiError> {
    let view = blocking(move || rt.stats(&health_unknown)).await?;
    view.map(Json)
        .map_err(|e| ApiError::internal(format!("reading counters: {e:#}")))
}

pub async fn config<D: DataPath>(State(rt): State<Shared<D>>) -> Json<Config> {
    Json(rt.desired())
}

#[derive(Deserialize)]
pub struct ApplyQuery {
    #[serde(default)]
    dry_run: bool,
}

/// Declarative: the document's services replace the running ones, all or nothing.
pub async fn apply<D: DataPath>(
    State(rt): State<Shared<D>>,
    Query(q): Query<ApplyQuery>,
    JsonBody(doc): JsonBody<serde_json::Value>,
) -> Result<Json<ChangeResult>, ApiError> {
    let result = blocking(move || {
        rt.change_with(
            |current| {
                let services = apply_doc::services(current, doc)?;
                edit::apply(current, &edit::Edit::ReplaceServices(services))
            },
            q.dry_run,
        )
    })
    .await??;
    Ok(Json(result))
}
