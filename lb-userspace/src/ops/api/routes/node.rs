//! `GET /v1/node`, `POST /v1/node/drain`, `POST /v1/node/undrain`: the node's
//! announcements, drain and BIRD's view (see `crate::ops::node_view`).
use axum::{extract::State, http::StatusCode, Json};

use super::{blocking, DataPath, Shared};
use crate::ops::{
    api::error::ApiError,
    node_view::{DrainResult, NodeView},
};

pub async fn status<D: DataPath>(State(rt): State<Shared<D>>) -> Result<Json<NodeView>, ApiError> {
    Ok(Json(blocking(move || rt.node()).await?))
}

async fn set<D: DataPath>(rt: Shared<D>, drained: bool) -> Result<Json<DrainResult>, ApiError> {
    let result = blocking(move || {
        if !drained && rt.desired().announce.drained {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "the config file drains this node (announce.drained: true): set it to false \
                 and reload (SIGHUP); nothing was changed",
            ));
        }
        let changed = rt
            .set_drained(drained)
            .map_err(|e| ApiError::internal(format!("persisting the node drain: {e}")))?;
        Ok(DrainResult {
            changed,
            node: rt.node(),
        })
    })
    .await??;
    Ok(Json(result))
}

pub async fn drain<D: DataPath>(
    State(rt): State<Shared<D>>,
) -> Result<Json<DrainResult>, ApiError> {
    set(rt, true).await
}

pub async fn undrain<D: DataPath>(
    State(rt): State<Shared<D>>,
) -> Result<Json<DrainResult>, ApiError> {
    set(rt, false).await
}
