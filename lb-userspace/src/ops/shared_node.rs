//! The node's drain and announcements on [`SharedRuntime`]: the API drains and undrains
//! (persisted in the state file, see `state_file::Store::persist_drain`), lbd's loop
//! publishes what it announces, and `GET /v1/node` reads both (and BIRD).
use std::{
    path::Path,
    sync::atomic::Ordering,
    time::{SystemTime, UNIX_EPOCH},
};

use log::{error, info};

use super::SharedRuntime;
use crate::{
    dataplane::Dataplane,
    model::desired::state_file::{StateFileError, Store},
    ops::{
        bird,
        node_view::{BirdView, NodeView, VipView},
    },
};

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl<D: Dataplane> SharedRuntime<D> {
    /// Drains the node through the API (`true`) or undrains it; persisted before it takes
    /// effect (lbd's loop withdraws at its next tick). Returns whether anything changed.
    /// Undraining leaves the config file's `announce.drained` as it is.
    pub fn set_drained(&self, drained: bool) -> Result<bool, StateFileError> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let config = inner.runtime.config();
        let since = match (drained, config.announce.drained_since) {
            (true, Some(_)) | (false, None) => return Ok(false),
            (true, None) => Some(unix_now()),
            (false, Some(_)) => None,
        };
        if inner.store.path() != config.state_file {
            inner.store = Store::new(&config.state_file);
        }
        if let Err(e) = inner.store.persist_drain(&config.services, since) {
            self.persist_failures.fetch_add(1, Ordering::Relaxed);
            error!("persisting the node drain: {e}; the drain was not changed");
            return Err(e);
        }
        inner.runtime.config_mut().announce.drained_since = since;
        if drained {
            info!("node drained through the API: every VIP is withdrawn");
        } else {
            info!("node undrained through the API");
        }
        Ok(true)
    }

    /// lbd's loop: the VIPs in range, as decided and as found on `lo`.
    pub fn publish_vips(&self, vips: Vec<VipView>) {
        *self.vips.lock().unwrap_or_else(|e| e.into_inner()) = vips;
    }

    /// The node as lbd's loop last published it, with BIRD's view when `bird_socket` is
    /// set (blocking: up to [`bird::TIMEOUT`] per query).
    pub fn node(&self) -> NodeView {
        let announce = self.lock().runtime.config().announce.clone();
        let mut vips = self.vips.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let bird = announce
            .bird_socket
            .as_deref()
            .map(|socket| bird_view(socket, &mut vips));
        NodeView {
            drained: announce.drained_why().is_some(),
            drained_by_config: announce.drained,
            drained_since: announce.drained_since,
            vips,
            bird,
        }
    }
}

/// Asks BIRD for its sessions and for each VIP's route; the first failure is reported
/// and BIRD is asked nothing more (it would time out again).
fn bird_view(socket: &Path, vips: &mut [VipView]) -> BirdView {
    let mut view = BirdView {
        socket: socket.display().to_string(),
        reachable: false,
        error: None,
        protocols: Vec::new(),
        bfd_sessions: Vec::new(),
    };
    match bird::sessions(socket) {
        Ok((protocols, bfd)) => {
            view.reachable = true;
            view.protocols = protocols;
            view.bfd_sessions = bfd;
        }
        Err(e) => {
            view.error = Some(format!("{e:#}"));
            return view;
        }
    }
    for v in vips.iter_mut() {
        match bird::route_on_lo(socket, v.vip) {
            Ok(found) => v.in_bird = Some(found),
            Err(e) => {
                view.error = Some(format!("asking BIRD for {}/32: {e:#}", v.vip));
                break;
            }
        }
    }
    view
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::{
        control::{runtime::Runtime, tables::Controller},
        dataplane::FakeDataplane,
        model::{
            config::{self, BackendConfig, BackendState},
            desired::{self, edit::Edit, state_file},
        },
    };

    #[test]
    fn a_drain_is_persisted_and_kept_across_journal_records_compactions_and_a_restart() {
        let dir = std::env::temp_dir().join(format!("lbd-node-drain-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let state = dir.join("state.yaml");
        let text = format!(
            "node: {{ zone: az-a }}\ninterfaces: [eth0]\ncluster: {{ ring_size: 1009 }}\n\
             state_file: {}\nannounce: {{ vip_ranges: [10.0.0.0/24] }}\n\
             services:\n  - {{ name: web, vip: 10.0.0.100, port: 80 }}\n",
            state.display()
        );
        let start = |c: config::Config| {
            let controller = Controller::new(FakeDataplane::new(1009, 1), 1009);
            SharedRuntime::new(Runtime::start(c, controller, Instant::now()).unwrap().0)
        };
        let rt = start(config::parse(&text).unwrap());
        assert!(!rt.node().drained);

        assert!(rt.set_drained(true).unwrap());
        assert!(
            !rt.set_drained(true).unwrap(),
            "already drained: nothing written"
        );
        let since = rt.desired().announce.drained_since.expect("drained");
        let node = rt.node();
        assert!(node.drained && !node.drained_by_config);
        assert_eq!(node.drained_since, Some(since));
        assert_eq!(
            rt.desired().announce.drained_why(),
            Some("the node is drained (lbctl node drain)")
        );
        let saved = state_file::read(&state).unwrap().unwrap();
        assert_eq!(saved.drained_since, Some(since));

        // A backend change (a journal record), then enough to compact: still there.
        for i in 0..40u8 {
            rt.change(&Edit::AddBackend {
                service: "web".into(),
                backend: BackendConfig {
                    address: std::net::Ipv4Addr::new(10, 1, 0, 10 + i).into(),
                    port: 8080,
                    zone: "az-a".into(),
                    weight: 1,
                    state: BackendState::Active,
                },
            })
            .unwrap();
        }
        let saved = state_file::read(&state).unwrap().unwrap();
        assert_eq!(saved.services[0].backends.len(), 40);
        assert_eq!(saved.drained_since, Some(since));

        // A restart reads it back with the state file's services.
        let (restarted, _) = desired::with_state_file(config::parse(&text).unwrap()).unwrap();
        assert_eq!(restarted.announce.drained_since, Some(since));
        let rt = start(restarted);
        assert!(rt.node().drained);

        assert!(rt.set_drained(false).unwrap());
        assert_eq!(
            state_file::read(&state).unwrap().unwrap().drained_since,
            None
        );
        let (again, _) = desired::with_state_file(config::parse(&text).unwrap()).unwrap();
        assert_eq!(again.announce.drained_since, None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
