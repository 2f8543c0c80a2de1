//! UDP flows of a backend that turned unhealthy are moved off it. A TCP flow stays on its
//! backend, and its client's next connection (a new SYN) is placed afresh; a UDP client
//! has no handshake and may keep one 5-tuple for as long as it sends, so its flow entry
//! would keep it on a dead backend until it fell silent for the UDP timeout. Deleting the
//! backend's flow entries sends each flow's next datagram by the table, which no longer
//! holds the backend (see `lb-ebpf/src/udp_to_backend.rs`).
use log::{info, warn};

use super::Runtime;
use crate::{
    control::health::machine::Health,
    dataplane::Dataplane,
    model::{config::Protocol, plan::BackendRef},
};

impl<D: Dataplane> Runtime<D> {
    /// After a probe changed `at`'s health: if it is a UDP service's backend and now
    /// unhealthy, its flow entries are deleted.
    pub(super) fn move_udp_flows_off(&mut self, at: &BackendRef) {
        let udp = self
            .fleet
            .service(&at.service)
            .is_some_and(|s| s.protocol == Protocol::Udp);
        if !udp || self.fleet.health(at) != Some(Health::Unhealthy) {
            return;
        }
        match self.controller.purge_flows(at) {
            Ok(n) => info!("backend {at}: unhealthy; its {n} UDP flows go by the table again"),
            Err(e) => warn!("backend {at}: unhealthy, its UDP flows stay on it: {e:#}"),
        }
    }
}
