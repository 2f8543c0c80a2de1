use axum::{
    extract::{Path, State},
    Json,
};

use super::{change, DataPath, Shared};
use crate::{
    model::config::{BackendState, ServiceConfig},
    model::desired::edit::{Edit, EditError},
    ops::api::{blocking, body::JsonBody, error::ApiError},
    ops::views::{ChangeResult, ServiceSummary},
};

pub async fn list<D: DataPath>(
    State(rt): State<Shared<D>>,
) -> Result<Json<Vec<ServiceSummary>>, ApiError> {
    let (config, digests) = blocking(move || (rt.desired(), rt.digests())).await?;
    let digest_of = |name: &str| digests.iter().find(|d| d.service == name);
    Ok(Json(
        config
            .services
            .iter()
            .map(|s| ServiceSummary {
                name: s.name.clone(),
                vip: s.vip,
                port: s.port,
                protocol: s.protocol,
                policy: s.policy,
                backends: s.backends.len(),
                draining: s
                    .backends
                    .iter()
                    .filter(|b| b.state == BackendState::Draining)
                    .count(),
                drained_zones: s.drained_zones.clone(),
                table_digest: digest_of(&s.name).map(|d| d.table),
                config_digest: digest_of(&s.name).map(|d| d.config),
            })
            .collect(),
    ))
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

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Instant};

    use super::*;
    use crate::{
        control::{runtime::Runtime, tables::Controller},
        dataplane::FakeDataplane,
        model::config,
        ops::shared::SharedRuntime,
    };

    /// The service list carries the digests `/metrics` exports, for `lbctl service list`.
    #[test]
    fn the_service_list_shows_each_services_digests() {
        let c = config::parse(
            "node: { zone: az-a }\ninterfaces: [eth0]\ncluster: { ring_size: 13 }\n\
             services: [ { name: web, vip: 10.0.0.100, port: 80, \
             backends: [ { address: 10.1.0.11, port: 8080, zone: az-a } ] }, \
             { name: api, vip: 10.0.0.101, port: 80 } ]\n",
        )
        .unwrap();
        let controller = Controller::new(FakeDataplane::new(13, 1), 13);
        let (runtime, _) = Runtime::start(c, controller, Instant::now()).unwrap();
        let rt = Arc::new(SharedRuntime::new(runtime));
        let digests = rt.digests();
        let tokio = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let Json(list) = tokio.block_on(list(State(rt))).unwrap();
        assert_eq!(list.len(), 2);
        for (summary, digest) in list.iter().zip(&digests) {
            assert_eq!(summary.name, digest.service);
            assert_eq!(summary.table_digest, Some(digest.table));
            assert_eq!(summary.config_digest, Some(digest.config));
        }
        assert_ne!(list[0].table_digest, list[1].table_digest);
    }
}
