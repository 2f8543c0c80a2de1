//! The probes lbd runs: the runtime's, with each direct-server-return backend's sent to
//! its VIP through its tunnel (see `crate::control::health::tunnel`). The tunnel program
//! is loaded and attached (tc egress of every configured NIC and of `lo`, where a probe
//! to a VIP held on this node starts, and where the probes' own route sends the others,
//! and of the IPv6 probes' dummy device: see `crate::kernel::probe_route`) only once a
//! service needs it.
use std::collections::{BTreeMap, BTreeSet};

use lb_common::encap::{BACKEND_F_DSR_L2, BACKEND_F_GUE, BACKEND_F_IPIP};
use log::{error, warn};

use crate::{
    control::health::{
        probe::ProbeSpec,
        tunnel::{tunnelled, ProbeMarks, RouteToBackend, TunnelMaps, TunnelTarget},
    },
    dataplane::Dataplane,
    kernel::{
        probe_route::{accepts_local, ProbeRoute},
        probe_tunnel::{route_to_ip, ProbeTunnels},
    },
    model::{
        config::{AnnounceConfig, Config, ForwardingMode},
        plan::BackendRef,
    },
    ops::shared::SharedRuntime,
};

#[derive(Default)]
pub(super) struct Probes {
    tunnels: Option<ProbeTunnels>,
    /// Installed with the tunnels; removed when lbd stops.
    route: Option<ProbeRoute>,
    marks: ProbeMarks,
    /// Marks written to the tunnel map.
    written: BTreeSet<u32>,
    /// Backends reported without a tunnel (each logged once until it has one).
    unrouted: BTreeSet<BackendRef>,
    /// NICs reported as dropping the answers to probes of an announced VIP (each logged
    /// once).
    martian_nics: BTreeSet<u32>,
}

/// The tunnel (`lb_common::encap`'s `BACKEND_F_*` bit) of a forwarding mode; none for
/// NAT, whose probes go to the backend's own address.
fn tunnel_mode(mode: ForwardingMode) -> Option<u8> {
    match mode {
        ForwardingMode::Nat => None,
        ForwardingMode::DsrL2 => Some(BACKEND_F_DSR_L2),
        ForwardingMode::Ipip => Some(BACKEND_F_IPIP),
        ForwardingMode::Gue => Some(BACKEND_F_GUE),
    }
}

fn targets_of(config: &Config) -> BTreeMap<BackendRef, TunnelTarget> {
    let mut targets = BTreeMap::new();
    for s in &config.services {
        let Some(mode) = tunnel_mode(s.mode) else {
            continue;
        };
        let vip = s.vip;
        for b in &s.backends {
            let at = BackendRef {
                service: s.name.clone(),
                address: b.address,
                port: b.port,
            };
            targets.insert(
                at,
                TunnelTarget {
                    mode,
                    vip,
                    gue_port: config.cluster.gue_port,
                },
            );
        }
    }
    targets
}

impl Probes {
    /// The probes the checker must run now.
    pub(super) fn specs<D: Dataplane>(
        &mut self,
        shared: &SharedRuntime<D>,
    ) -> BTreeMap<BackendRef, ProbeSpec> {
        let (mut specs, targets, interfaces, announce) = shared.with(|rt| {
            (
                rt.probe_specs(),
                targets_of(rt.config()),
                rt.config().interfaces.clone(),
                rt.config().announce.clone(),
            )
        });
        if targets.is_empty() && self.written.is_empty() {
            return specs;
        }
        let marks = self.marks.assign(targets.keys());
        let mut failed = Vec::new();
        let route = |to| match route_to_ip(to) {
            Ok((source, ifindex)) => Some(RouteToBackend { source, ifindex }),
            Err(e) => {
                warn!("no tunnel for probes to {to}: {e:#}");
                None
            }
        };
        let tunnels = tunnelled(&mut specs, &targets, &marks, route, &mut failed);
        for at in &failed {
            if self.unrouted.insert(at.clone()) {
                error!(
                    "{} {}:{}: no way to the backend's tunnel; its probes fail until there is one",
                    at.service, at.address, at.port
                );
            }
        }
        self.unrouted.retain(|at| failed.contains(at));
        if let Err(e) = self.write(&tunnels, &interfaces) {
            error!("writing the probe tunnels: {e:#}; DSR probes fail until it succeeds");
        }
        self.report_martian_answers(&announce, &targets);
        specs
    }

    /// Logs, once per NIC, a NIC toward a DSR backend of a VIP this node may announce on
    /// `lo` that drops the probes' answers (from the VIP: a local source) for want of
    /// `accept_local`.
    fn report_martian_answers(
        &mut self,
        announce: &AnnounceConfig,
        targets: &BTreeMap<BackendRef, TunnelTarget>,
    ) {
        for (at, target) in targets {
            if !announce.in_range(target.vip) {
                continue;
            }
            // IPv6 has no martian check of a local source (no accept_local).
            let backend @ std::net::IpAddr::V4(_) = at.address else {
                continue;
            };
            let Ok((_, ifindex)) = route_to_ip(backend) else {
                continue;
            };
            if self.martian_nics.contains(&ifindex) {
                continue;
            }
            match accepts_local(ifindex) {
                Ok(true) => {}
                Ok(false) => {
                    self.martian_nics.insert(ifindex);
                    error!(
                        "{} {}:{}: probes go to VIP {} through the tunnel and are answered from it, but the NIC toward the backend (index {ifindex}) has accept_local=0: while this node announces the VIP on lo the kernel drops the answers as martians and the backend is probed unhealthy; set net.ipv4.conf.<NIC>.accept_local=1",
                        at.service, at.address, at.port, target.vip
                    );
                }
                Err(e) => warn!("checking accept_local toward {}: {e:#}", at.address),
            }
        }
    }

    fn write(&mut self, tunnels: &TunnelMaps, interfaces: &[String]) -> anyhow::Result<()> {
        let program = match &mut self.tunnels {
            Some(p) => p,
            None => {
                if self.route.is_none() {
                    self.route = Some(ProbeRoute::install()?);
                }
                let mut p = ProbeTunnels::load()?;
                for nic in interfaces.iter().map(String::as_str).chain(["lo"]) {
                    p.attach_egress(nic)?;
                }
                self.tunnels.insert(p)
            }
        };
        // IPv6 probes need a route of their own, to a device made for it (see
        // `probe_route`): made for the first IPv6 DSR backend only.
        if !tunnels.v6.is_empty() {
            if let Some(device) = self.route.as_mut().and_then(ProbeRoute::ensure_ipv6) {
                program.attach_egress(device)?;
            }
        }
        for (mark, tunnel) in &tunnels.v4 {
            program.set(*mark, tunnel)?;
        }
        for (mark, tunnel) in &tunnels.v6 {
            program.set6(*mark, tunnel)?;
        }
        let now: BTreeSet<u32> = tunnels
            .v4
            .keys()
            .chain(tunnels.v6.keys())
            .copied()
            .collect();
        for stale in self.written.difference(&now) {
            program.remove(*stale)?;
        }
        self.written = now;
        Ok(())
    }
}
