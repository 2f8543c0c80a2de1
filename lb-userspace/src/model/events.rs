//! Lifecycle events: what an autoscaler, a backend's own shutdown script or an operator
//! acts on (a backend turned healthy or unhealthy, started draining, has no flows left,
//! was deregistered; a zone was drained or undrained). The fleet notes them as they
//! happen; `crate::ops::events` numbers them, keeps the last ones and streams them.
use serde::{Deserialize, Serialize};

use crate::model::plan::BackendRef;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The backend's verdict turned healthy.
    BackendHealthy,
    /// The backend's verdict turned unhealthy (probes, passive ejection or flapping).
    BackendUnhealthy,
    /// The backend takes no new flows: set to draining, or removed (its flows may
    /// continue for the deregistration delay).
    BackendDraining,
    /// A draining (or removed) backend has no flow left: the last one ended (or, when the
    /// deregistration delay passed first, its remaining flows were purged). Safe to
    /// terminate. Once per drain.
    BackendDrained,
    /// A removed backend left the tables after its deregistration delay.
    BackendDeregistered,
    /// A zone was added to a service's `drained_zones`.
    ZoneDrained,
    /// A zone was taken out of a service's `drained_zones`.
    ZoneUndrained,
}

impl EventKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::BackendHealthy => "backend_healthy",
            Self::BackendUnhealthy => "backend_unhealthy",
            Self::BackendDraining => "backend_draining",
            Self::BackendDrained => "backend_drained",
            Self::BackendDeregistered => "backend_deregistered",
            Self::ZoneDrained => "zone_drained",
            Self::ZoneUndrained => "zone_undrained",
        }
    }
}

/// One event as the fleet notes it (numbered and stamped when it is published).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub service: String,
    /// `address:port`, for backend events.
    pub backend: Option<String>,
    pub zone: String,
    /// Why, in words (`consecutive successful probes`, `no flows left`, ...).
    pub detail: String,
}

impl Event {
    pub fn backend(kind: EventKind, at: &BackendRef, zone: &str, detail: String) -> Self {
        Self {
            kind,
            service: at.service.clone(),
            backend: Some(std::net::SocketAddr::new(at.address, at.port).to_string()),
            zone: zone.to_string(),
            detail,
        }
    }

    pub fn zone(kind: EventKind, service: &str, zone: &str) -> Self {
        Self {
            kind,
            service: service.to_string(),
            backend: None,
            zone: zone.to_string(),
            detail: String::new(),
        }
    }
}

/// The zone events of a change of a service's `drained_zones` from `before` to `after`:
/// drained zones first, each list in the order the zones are written.
pub fn zone_changes(service: &str, before: &[String], after: &[String]) -> Vec<Event> {
    let drained = after
        .iter()
        .filter(|z| !before.contains(z))
        .map(|z| Event::zone(EventKind::ZoneDrained, service, z));
    let undrained = before
        .iter()
        .filter(|z| !after.contains(z))
        .map(|z| Event::zone(EventKind::ZoneUndrained, service, z));
    drained.chain(undrained).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zones(list: &[&str]) -> Vec<String> {
        list.iter().map(|z| z.to_string()).collect()
    }

    #[test]
    fn zone_changes_name_each_zone_drained_and_undrained_once() {
        let events = zone_changes("web", &zones(&["az-a", "az-b"]), &zones(&["az-b", "az-c"]));
        let got: Vec<(EventKind, &str)> =
            events.iter().map(|e| (e.kind, e.zone.as_str())).collect();
        assert_eq!(
            got,
            [
                (EventKind::ZoneDrained, "az-c"),
                (EventKind::ZoneUndrained, "az-a")
            ]
        );
        assert!(zone_changes("web", &zones(&["az-a"]), &zones(&["az-a"])).is_empty());
    }

    #[test]
    fn kinds_serialize_as_their_names() {
        for kind in [
            EventKind::BackendHealthy,
            EventKind::BackendUnhealthy,
            EventKind::BackendDraining,
            EventKind::BackendDrained,
            EventKind::BackendDeregistered,
            EventKind::ZoneDrained,
            EventKind::ZoneUndrained,
        ] {
            assert_eq!(
                serde_json::to_string(&kind).unwrap(),
                format!("\"{}\"", kind.name())
            );
        }
    }
}
