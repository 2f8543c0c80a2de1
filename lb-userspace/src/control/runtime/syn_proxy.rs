//! `syn_proxy: auto` in the runtime: each tick reads every auto service's SYN count (the
//! SYNs its backends got plus those the proxy answered) and switches its proxy as
//! [`AutoSwitch`] decides, with a log line at each switch; the switch's state is part of
//! the overlay the controller applies (see `plan::service_flags`).
use std::time::Instant;

use anyhow::Context as _;
use log::warn;

use super::Runtime;
use crate::{
    dataplane::Dataplane,
    model::{config::SynProxyMode, syn_proxy_auto::AutoSwitch},
};

impl<D: Dataplane> Runtime<D> {
    /// Takes a reading for each auto service; returns those whose proxy switched.
    pub(super) fn sample_syn_proxy(&mut self, now: Instant) -> anyhow::Result<Vec<String>> {
        let mut switched = Vec::new();
        let Some(plan) = self.controller.plan() else {
            return Ok(switched);
        };
        let dp = self.controller.dataplane();
        for s in &self.config.services {
            if s.syn_proxy != SynProxyMode::Auto {
                continue;
            }
            let Some(service) = plan.services.iter().find(|p| p.name == s.name) else {
                continue;
            };
            let mut total = dp
                .syn_proxy_syns(service.id)
                .with_context(|| format!("reading service {}'s proxied SYNs", s.name))?;
            for id in &service.backends {
                let signals = dp
                    .backend_signals(*id)
                    .with_context(|| format!("reading the SYNs of backend {id} of {}", s.name))?;
                total += signals.syns;
            }
            let state = self.syn_proxy.entry(s.name.clone()).or_default();
            let Some(on) = state.observe(&s.syn_proxy_auto, total, now) else {
                continue;
            };
            let (rate, auto) = (state.rate, &s.syn_proxy_auto);
            if on {
                warn!(
                    "service {}: {rate:.0} SYNs/s, above syn_proxy_auto.on_above ({}): SYN proxy on",
                    s.name, auto.on_above
                );
                self.overlay.syn_proxy_on.insert(s.name.clone());
            } else {
                warn!(
                    "service {}: under syn_proxy_auto.off_below ({}) SYNs/s for {:?}: SYN proxy off",
                    s.name, auto.off_below, auto.hold
                );
                self.overlay.syn_proxy_on.remove(&s.name);
            }
            switched.push(s.name.clone());
        }
        let auto = |name: &String| {
            self.config
                .services
                .iter()
                .any(|s| &s.name == name && s.syn_proxy == SynProxyMode::Auto)
        };
        self.syn_proxy.retain(|name, _| auto(name));
        self.overlay.syn_proxy_on.retain(|name| auto(name));
        Ok(switched)
    }

    /// The auto SYN proxies' switches, by service.
    pub fn syn_proxy_switches(&self) -> &std::collections::BTreeMap<String, AutoSwitch> {
        &self.syn_proxy
    }
}
