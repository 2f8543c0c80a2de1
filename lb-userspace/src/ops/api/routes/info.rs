use axum::{
    extract::{Query, State},
    Json,
};
use serde::Deserialize;

use super::{blocking, DataPath, Shared};
use crate::{
    model::config::Config,
    model::desired::{apply_doc, edit},
    ops::api::{body::JsonBody, error::ApiError},
    ops::views::{ChangeResult, HealthView, StatsView},
};

/// Health as lbd knows it: the verdict, the last probe's result and latency, and why.
pub async fn health<D: DataPath>(
    State(rt): State<Shared<D>>,
) -> Result<Json<Vec<HealthView>>, ApiError> {
    Ok(Json(blocking(move || rt.health()).await?))
}

pub async fn stats<D: DataPath>(State(rt): State<Shared<D>>) -> Result<Json<StatsView>, ApiError> {
    let view = blocking(move || rt.stats()).await?;
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
