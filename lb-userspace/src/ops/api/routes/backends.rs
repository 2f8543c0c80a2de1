use std::collections::BTreeMap;

use axum::{
    extract::{Path, Query, State},
    Json,
};
use serde::Deserialize;

use super::{change, DataPath, Shared};
use crate::{
    model::config::{BackendConfig, BackendState},
    model::desired::edit::{BackendAddr, Edit, EditError, WeightBody},
    model::weights::RING_WEIGHT_SCALE,
    ops::api::{body::JsonBody, error::ApiError},
    ops::views::{BackendView, ChangeResult},
};

#[derive(Deserialize)]
pub struct ListQuery {
    service: Option<String>,
}

pub async fn list<D: DataPath>(
    State(rt): State<Shared<D>>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<BackendView>>, ApiError> {
    // The weights the data path holds, as last applied.
    let (config, weights) = rt.with(|runtime| {
        let weights: BTreeMap<(String, BackendAddr), f64> = runtime
            .controller()
            .plan()
            .map(|p| {
                p.backends
                    .iter()
                    .map(|b| {
                        let at = BackendAddr {
                            address: b.at.address,
                            port: b.at.port,
                        };
                        (
                            (b.at.service.clone(), at),
                            b.value.weight_milli as f64 / RING_WEIGHT_SCALE,
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        (runtime.config().clone(), weights)
    });
    if let Some(name) = &q.service {
        if !config.services.iter().any(|s| &s.name == name) {
            return Err(EditError::UnknownService(name.clone()).into());
        }
    }
    let mut out = Vec::new();
    for s in &config.services {
        if q.service.as_ref().is_some_and(|name| name != &s.name) {
            continue;
        }
        for b in &s.backends {
            let at = BackendAddr::from(b);
            let effective_weight = weights.get(&(s.name.clone(), at)).copied().unwrap_or(0.0);
            out.push(BackendView {
                service: s.name.clone(),
                address: b.address,
                port: b.port,
                zone: b.zone.clone(),
                weight: b.weight,
                state: b.state,
                effective_weight,
                zone_drained: s.drained_zones.contains(&b.zone),
            });
        }
    }
    Ok(Json(out))
}

fn backend_addr(text: &str) -> Result<BackendAddr, ApiError> {
    text.parse()
        .map_err(|e: String| ApiError::bad_request(format!("backend: {e}")))
}

pub async fn add<D: DataPath>(
    State(rt): State<Shared<D>>,
    Path(service): Path<String>,
    JsonBody(backend): JsonBody<BackendConfig>,
) -> Result<Json<ChangeResult>, ApiError> {
    change(rt, Edit::AddBackend { service, backend }).await
}

pub async fn remove<D: DataPath>(
    State(rt): State<Shared<D>>,
    Path((service, backend)): Path<(String, String)>,
) -> Result<Json<ChangeResult>, ApiError> {
    let backend = backend_addr(&backend)?;
    change(rt, Edit::RemoveBackend { service, backend }).await
}

async fn set_state<D: DataPath>(
    rt: Shared<D>,
    service: String,
    backend: &str,
    state: BackendState,
) -> Result<Json<ChangeResult>, ApiError> {
    let backend = backend_addr(backend)?;
    change(
        rt,
        Edit::SetBackendState {
            service,
            backend,
            state,
        },
    )
    .await
}

pub async fn drain<D: DataPath>(
    State(rt): State<Shared<D>>,
    Path((service, backend)): Path<(String, String)>,
) -> Result<Json<ChangeResult>, ApiError> {
    set_state(rt, service, &backend, BackendState::Draining).await
}

pub async fn undrain<D: DataPath>(
    State(rt): State<Shared<D>>,
    Path((service, backend)): Path<(String, String)>,
) -> Result<Json<ChangeResult>, ApiError> {
    set_state(rt, service, &backend, BackendState::Active).await
}

pub async fn set_weight<D: DataPath>(
    State(rt): State<Shared<D>>,
    Path((service, backend)): Path<(String, String)>,
    JsonBody(body): JsonBody<WeightBody>,
) -> Result<Json<ChangeResult>, ApiError> {
    let backend = backend_addr(&backend)?;
    change(
        rt,
        Edit::SetWeight {
            service,
            backend,
            weight: body.weight,
        },
    )
    .await
}
