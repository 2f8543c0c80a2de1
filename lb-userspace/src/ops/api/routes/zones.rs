use std::collections::BTreeMap;

use axum::{
    extract::{Path, Query, State},
    Json,
};
use serde::Deserialize;

use super::{change, DataPath, Shared};
use crate::{
    model::desired::edit::Edit,
    ops::api::error::ApiError,
    ops::views::{ChangeResult, ZoneView},
};

pub async fn list<D: DataPath>(State(rt): State<Shared<D>>) -> Json<Vec<ZoneView>> {
    let config = rt.desired();
    let mut zones: BTreeMap<String, ZoneView> = BTreeMap::new();
    let local = config.node.zone.as_str();
    // The node's own zone is listed even without backends: it is where traffic stays
    // when cross-zone balancing is off.
    zone_entry(&mut zones, local, local);
    for s in &config.services {
        for b in &s.backends {
            let z = zone_entry(&mut zones, &b.zone, local);
            z.backends += 1;
            if !z.services.contains(&s.name) {
                z.services.push(s.name.clone());
            }
        }
        for zone in &s.drained_zones {
            zone_entry(&mut zones, zone, local)
                .drained_in
                .push(s.name.clone());
        }
    }
    Json(zones.into_values().collect())
}

fn zone_entry<'z>(
    zones: &'z mut BTreeMap<String, ZoneView>,
    zone: &str,
    local: &str,
) -> &'z mut ZoneView {
    zones.entry(zone.to_string()).or_insert_with(|| ZoneView {
        zone: zone.to_string(),
        local: zone == local,
        backends: 0,
        services: Vec::new(),
        drained_in: Vec::new(),
    })
}

#[derive(Deserialize)]
pub struct ZoneQuery {
    service: Option<String>,
}

async fn set<D: DataPath>(
    rt: Shared<D>,
    zone: String,
    service: Option<String>,
    drained: bool,
) -> Result<Json<ChangeResult>, ApiError> {
    change(
        rt,
        Edit::SetZoneDrained {
            zone,
            service,
            drained,
        },
    )
    .await
}

pub async fn drain<D: DataPath>(
    State(rt): State<Shared<D>>,
    Path(zone): Path<String>,
    Query(q): Query<ZoneQuery>,
) -> Result<Json<ChangeResult>, ApiError> {
    set(rt, zone, q.service, true).await
}

pub async fn undrain<D: DataPath>(
    State(rt): State<Shared<D>>,
    Path(zone): Path<String>,
    Query(q): Query<ZoneQuery>,
) -> Result<Json<ChangeResult>, ApiError> {
    set(rt, zone, q.service, false).await
}
