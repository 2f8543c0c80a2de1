//! Probes of direct-server-return backends go through the backend's tunnel (see
//! `lb_common::probe_tunnel`): each such backend keeps one mark for as long as it is
//! probed ([`ProbeMarks`]), and its probe is redirected to the VIP through that mark
//! ([`tunnelled`]). Pure: the route to each backend is asked of the caller.
use std::{collections::BTreeMap, net::Ipv4Addr};

use lb_common::probe_tunnel::{probe_mark, ProbeTunnel, MAX_PROBE_TUNNELS};

use super::probe::{ProbeSpec, ProbeVia};
use crate::model::plan::BackendRef;

/// How one DSR backend is reached: its service's mode (`lb_common::encap`'s
/// `BACKEND_F_*` bit), VIP and GUE port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunnelTarget {
    pub mode: u8,
    pub vip: Ipv4Addr,
    pub gue_port: u16,
}

/// The node's way to a backend: its source address and the NIC toward it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteToBackend {
    pub source: Ipv4Addr,
    pub ifindex: u32,
}

/// The mark of each tunnelled probe, stable while its backend stays.
#[derive(Debug, Default)]
pub struct ProbeMarks {
    marks: BTreeMap<BackendRef, u16>,
}

impl ProbeMarks {
    /// Keeps the index of every backend still in `wanted`, gives each new one the lowest
    /// free index, forgets the rest. Backends beyond [`MAX_PROBE_TUNNELS`] get none.
    pub fn assign<'a>(
        &mut self,
        wanted: impl IntoIterator<Item = &'a BackendRef>,
    ) -> BTreeMap<BackendRef, u32> {
        let wanted: Vec<&BackendRef> = wanted.into_iter().collect();
        self.marks.retain(|at, _| wanted.contains(&at));
        let mut used: Vec<u16> = self.marks.values().copied().collect();
        used.sort_unstable();
        let mut next = 0u32;
        for at in wanted {
            if self.marks.contains_key(at) {
                continue;
            }
            while used.binary_search(&(next as u16)).is_ok() && next < MAX_PROBE_TUNNELS {
                next += 1;
            }
            if next >= MAX_PROBE_TUNNELS {
                break;
            }
            self.marks.insert(at.clone(), next as u16);
            next += 1;
        }
        self.marks
            .iter()
            .map(|(at, index)| (at.clone(), probe_mark(*index)))
            .collect()
    }
}

/// Turns the probe of each backend in `targets` into a probe of its VIP through its
/// tunnel: same kind, port, interval and timeout, the target's VIP as destination, the
/// backend's mark and the node's source. Returns the map the tunnel program needs (mark
/// -> backend). A backend without a mark or a route gets [`ProbeVia::UNROUTED`], which
/// fails (probing its own address would call healthy a backend clients cannot reach);
/// `failed` names it.
pub fn tunnelled(
    specs: &mut BTreeMap<BackendRef, ProbeSpec>,
    targets: &BTreeMap<BackendRef, TunnelTarget>,
    marks: &BTreeMap<BackendRef, u32>,
    mut route: impl FnMut(Ipv4Addr) -> Option<RouteToBackend>,
    failed: &mut Vec<BackendRef>,
) -> BTreeMap<u32, ProbeTunnel> {
    let mut tunnels = BTreeMap::new();
    for (at, spec) in specs.iter_mut() {
        let Some(target) = targets.get(at) else {
            continue;
        };
        spec.target.set_ip(target.vip.into());
        // The tunnels carry IPv4 (validation gives a DSR service IPv4 backends only).
        let backend = match at.address {
            std::net::IpAddr::V4(v4) => Some(v4),
            std::net::IpAddr::V6(_) => None,
        };
        let (Some(mark), Some(backend), Some(way)) =
            (marks.get(at), backend, backend.and_then(&mut route))
        else {
            failed.push(at.clone());
            spec.via = Some(ProbeVia::UNROUTED);
            continue;
        };
        spec.via = Some(ProbeVia {
            mark: *mark,
            source: way.source,
        });
        tunnels.insert(
            *mark,
            ProbeTunnel {
                backend: u32::from_ne_bytes(backend.octets()),
                source: u32::from_ne_bytes(way.source.octets()),
                ifindex: way.ifindex,
                gue_port: target.gue_port.to_be(),
                mode: target.mode,
                _pad: 0,
            },
        );
    }
    tunnels
}

#[cfg(test)]
mod tests {
    use std::{net::SocketAddrV4, time::Duration};

    use lb_common::encap::{BACKEND_F_GUE, BACKEND_F_IPIP};

    use super::*;
    use crate::control::health::probe::ProbeKind;

    fn at(service: &str, last: u8) -> BackendRef {
        BackendRef {
            service: service.into(),
            address: Ipv4Addr::new(10, 1, 0, last).into(),
            port: 80,
        }
    }

    #[test]
    fn marks_stay_with_their_backend_and_freed_ones_are_reused() {
        let mut marks = ProbeMarks::default();
        let (a, b, c) = (at("s", 1), at("s", 2), at("s", 3));
        let first = marks.assign([&a, &b]);
        assert_eq!(first[&a], probe_mark(0));
        assert_eq!(first[&b], probe_mark(1));
        let second = marks.assign([&b, &c]);
        assert_eq!(second.len(), 2);
        assert_eq!(second[&b], probe_mark(1), "b keeps its mark");
        assert_eq!(second[&c], probe_mark(0), "c takes the one a freed");
    }

    #[test]
    fn a_dsr_probe_goes_to_the_vip_through_its_mark_and_nat_probes_stay() {
        let spec = |last: u8| ProbeSpec {
            target: SocketAddrV4::new(Ipv4Addr::new(10, 1, 0, last), 8080).into(),
            kind: ProbeKind::Tcp,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            via: None,
        };
        let (nat, ipip, gue, unrouted) = (at("n", 1), at("d", 2), at("g", 3), at("d", 4));
        let mut specs: BTreeMap<_, _> = [
            (nat.clone(), spec(1)),
            (ipip.clone(), spec(2)),
            (gue.clone(), spec(3)),
            (unrouted.clone(), spec(4)),
        ]
        .into();
        let vip = Ipv4Addr::new(10, 0, 0, 100);
        let targets: BTreeMap<_, _> = [
            (
                ipip.clone(),
                TunnelTarget {
                    mode: BACKEND_F_IPIP,
                    vip,
                    gue_port: 6080,
                },
            ),
            (
                gue.clone(),
                TunnelTarget {
                    mode: BACKEND_F_GUE,
                    vip,
                    gue_port: 7000,
                },
            ),
            (
                unrouted.clone(),
                TunnelTarget {
                    mode: BACKEND_F_IPIP,
                    vip,
                    gue_port: 6080,
                },
            ),
        ]
        .into();
        let marks = ProbeMarks::default().assign(targets.keys());
        let source = Ipv4Addr::new(10, 1, 0, 254);
        let route =
            |to: Ipv4Addr| (to.octets()[3] != 4).then_some(RouteToBackend { source, ifindex: 7 });
        let mut failed = Vec::new();
        let tunnels = tunnelled(&mut specs, &targets, &marks, route, &mut failed);
        assert_eq!(failed, std::slice::from_ref(&unrouted));
        assert_eq!(specs[&unrouted].via, Some(ProbeVia::UNROUTED));
        assert_eq!(specs[&nat], spec(1));
        assert_eq!(specs[&ipip].target, SocketAddrV4::new(vip, 8080).into());
        assert_eq!(
            specs[&ipip].via,
            Some(ProbeVia {
                mark: marks[&ipip],
                source
            })
        );
        assert_eq!(tunnels.len(), 2);
        assert_eq!(
            tunnels[&marks[&gue]],
            ProbeTunnel {
                backend: u32::from_ne_bytes([10, 1, 0, 3]),
                source: u32::from_ne_bytes([10, 1, 0, 254]),
                ifindex: 7,
                gue_port: 7000u16.to_be(),
                mode: BACKEND_F_GUE,
                _pad: 0,
            }
        );
    }
}
