use axum::{
    extract::{Path, State},
    Json,
};

use super::{change, DataPath, Shared};
use crate::{
    model::config::{BackendState, ServiceConfig},
    model::desired::edit::{Edit, EditError},
    ops::api::{body::JsonBody, error::ApiError},
    ops::views::{ChangeResult, ServiceSummary},
};

pub async fn list<D: DataPath>(State(rt): State<Shared<D>>) -> Json<Vec<ServiceSummary>> {
    let config = rt.desired();
    Json(
        config
            .services
            .iter()
            .map(|s| ServiceSummary {
                name: s.name.clone(),
                vip: s.vip,
                port: s.port,
                policy: s.policy,
                backends: s.backends.len(),
                draining: s
                    .backends
                    .iter()
                    .filter(|b| b.state == BackendState::Draining)
                    .count(),
                drained_zones: s.drained_zones.clone(),
            })
            .collect(),
    )
}

pub async fn show<D: DataPath>(
    State(rt): State<Shared<D>>,
    Path(name): Path<String>,
) -> Result<Json<ServiceConfig>, ApiError> {
    rt.desired()
        .services
        .into_iter()
        .find(|s| s.name == name)
        .map(Json)
        .ok_or_else(|| EditError::UnknownService(name).into())
}

pub async fn add<D: DataPath>(
    State(rt): State<Shared<D>>,
    JsonBody(service): JsonBody<ServiceConfig>,
) -> Result<Json<ChangeResult>, ApiError> {
    change(rt, Edit::AddService(service)).await
}

pub async fn remove<D: DataPath>(
    State(rt): State<Shared<D>>,
    Path(name): Path<String>,
) -> Result<Json<ChangeResult>, ApiError> {
    change(rt, Edit::RemoveService(name)).await
}
