//! Probes of direct-server-return backends go through the backend's tunnel (see
//! `lb_common::probe_tunnel`): each such backend keeps one mark for as long as it is
//! probed ([`ProbeMarks`]), and its probe is redirected to the VIP through that mark
//! ([`tunnelled`]), of either family: an IPv6 backend's to its IPv6 VIP. Pure: the route
//! to each backend is asked of the caller.
use std::{collections::BTreeMap, net::IpAddr};

use lb_common::{
    ipv6::addr6_wire,
    probe_tunnel::{probe_mark, ProbeTunnel, ProbeTunnel6, MAX_PROBE_TUNNELS},
};

use super::probe::{ProbeSpec, ProbeVia};
use crate::model::plan::BackendRef;

/// How one DSR backend is reached: its service's mode (`lb_common::encap`'s
/// `BACKEND_F_*` bit), VIP and GUE port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunnelTarget {
    pub mode: u8,
    pub vip: IpAddr,
    pub gue_port: u16,
}

/// The node's way to a backend: its source address and the NIC toward it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteToBackend {
    pub source: IpAddr,
    pub ifindex: u32,
}

/// What the tunnel program needs (mark -> backend), one map per family.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TunnelMaps {
    pub v4: BTreeMap<u32, ProbeTunnel>,
    pub v6: BTreeMap<u32, ProbeTunnel6>,
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
/// backend's mark and the node's source. Returns the maps the tunnel program needs. A
/// backend without a mark or a route, or whose VIP, address and route are not of one
/// family (the tunnels carry a packet in its own family), gets [`ProbeVia::UNROUTED`],
/// which fails (probing its own address would call healthy a backend clients cannot
/// reach); `failed` names it.
pub fn tunnelled(
    specs: &mut BTreeMap<BackendRef, ProbeSpec>,
    targets: &BTreeMap<BackendRef, TunnelTarget>,
    marks: &BTreeMap<BackendRef, u32>,
    mut route: impl FnMut(IpAddr) -> Option<RouteToBackend>,
    failed: &mut Vec<BackendRef>,
) -> TunnelMaps {
    let mut tunnels = TunnelMaps::default();
    for (at, spec) in specs.iter_mut() {
        let Some(target) = targets.get(at) else {
            continue;
        };
        spec.target.set_ip(target.vip);
        let way = marks
            .get(at)
            .and_then(|mark| Some((*mark, route(at.address)?)));
        let written = way.is_some_and(|(mark, way)| {
            let (ifindex, gue_port, mode) = (way.ifindex, target.gue_port.to_be(), target.mode);
            match (target.vip, at.address, way.source) {
                (IpAddr::V4(_), IpAddr::V4(backend), IpAddr::V4(source)) => {
                    tunnels.v4.insert(
                        mark,
                        ProbeTunnel {
                            backend: u32::from_ne_bytes(backend.octets()),
                            source: u32::from_ne_bytes(source.octets()),
                            ifindex,
                            gue_port,
                            mode,
                            _pad: 0,
                        },
                    );
                    true
                }
                (IpAddr::V6(_), IpAddr::V6(backend), IpAddr::V6(source)) => {
                    tunnels.v6.insert(
                        mark,
                        ProbeTunnel6 {
                            backend: addr6_wire(backend.octets()),
                            source: addr6_wire(source.octets()),
                            ifindex,
                            gue_port,
                            mode,
                            _pad: 0,
                        },
                    );
                    true
                }
                _ => false,
            }
        });
        match way {
            Some((mark, way)) if written => {
                spec.via = Some(ProbeVia {
                    mark,
                    source: way.source,
                })
            }
            _ => {
                failed.push(at.clone());
                spec.via = Some(ProbeVia::UNROUTED);
            }
        }
    }
    tunnels
}

#[cfg(test)]
mod tests {
    use std::{
        net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6},
        time::Duration,
    };

    use lb_common::encap::{BACKEND_F_DSR_L2, BACKEND_F_GUE, BACKEND_F_IPIP};

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
                    vip: vip.into(),
                    gue_port: 6080,
                },
            ),
            (
                gue.clone(),
                TunnelTarget {
                    mode: BACKEND_F_GUE,
                    vip: vip.into(),
                    gue_port: 7000,
                },
            ),
            (
                unrouted.clone(),
                TunnelTarget {
                    mode: BACKEND_F_IPIP,
                    vip: vip.into(),
                    gue_port: 6080,
                },
            ),
        ]
        .into();
        let marks = ProbeMarks::default().assign(targets.keys());
        let source = Ipv4Addr::new(10, 1, 0, 254);
        let route = |to: IpAddr| {
            (to != IpAddr::from([10, 1, 0, 4])).then_some(RouteToBackend {
                source: source.into(),
                ifindex: 7,
            })
        };
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
                source: source.into()
            })
        );
        assert_eq!(tunnels.v4.len(), 2);
        assert!(tunnels.v6.is_empty());
        assert_eq!(
            tunnels.v4[&marks[&gue]],
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

    fn at6(service: &str, last: u16) -> BackendRef {
        BackendRef {
            service: service.into(),
            address: Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, last).into(),
            port: 80,
        }
    }

    #[test]
    fn an_ipv6_dsr_probe_goes_to_the_ipv6_vip_through_an_ipv6_tunnel() {
        let spec = |at: &BackendRef| ProbeSpec {
            target: SocketAddr::new(at.address, 8080),
            kind: ProbeKind::Tcp,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            via: None,
        };
        let (gue, l2, mixed, v4_route) = (at6("g", 3), at6("l", 4), at6("m", 5), at6("r", 6));
        let mut specs: BTreeMap<_, _> = [&gue, &l2, &mixed, &v4_route]
            .into_iter()
            .map(|at| (at.clone(), spec(at)))
            .collect();
        let vip6 = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100);
        let target = |mode, vip: IpAddr| TunnelTarget {
            mode,
            vip,
            gue_port: 7000,
        };
        let targets: BTreeMap<_, _> = [
            (gue.clone(), target(BACKEND_F_GUE, vip6.into())),
            (l2.clone(), target(BACKEND_F_DSR_L2, vip6.into())),
            // An IPv4 VIP with an IPv6 backend: no tunnel carries it.
            (
                mixed.clone(),
                target(BACKEND_F_IPIP, Ipv4Addr::new(10, 0, 0, 100).into()),
            ),
            (v4_route.clone(), target(BACKEND_F_IPIP, vip6.into())),
        ]
        .into();
        let marks = ProbeMarks::default().assign(targets.keys());
        let source = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0xfe);
        let route = |to: IpAddr| {
            let source: IpAddr = if to == v4_route.address {
                Ipv4Addr::new(10, 1, 0, 254).into()
            } else {
                source.into()
            };
            Some(RouteToBackend { source, ifindex: 9 })
        };
        let mut failed = Vec::new();
        let tunnels = tunnelled(&mut specs, &targets, &marks, route, &mut failed);
        assert_eq!(failed, vec![mixed.clone(), v4_route.clone()]);
        assert_eq!(specs[&mixed].via, Some(ProbeVia::UNROUTED));
        assert_eq!(specs[&v4_route].via, Some(ProbeVia::UNROUTED));
        assert_eq!(
            specs[&gue].target,
            SocketAddrV6::new(vip6, 8080, 0, 0).into()
        );
        assert_eq!(
            specs[&gue].via,
            Some(ProbeVia {
                mark: marks[&gue],
                source: source.into()
            })
        );
        assert!(tunnels.v4.is_empty());
        assert_eq!(tunnels.v6.len(), 2);
        let words = |o: [u8; 16]| {
            [
                u32::from_ne_bytes([o[0], o[1], o[2], o[3]]),
                u32::from_ne_bytes([o[4], o[5], o[6], o[7]]),
                u32::from_ne_bytes([o[8], o[9], o[10], o[11]]),
                u32::from_ne_bytes([o[12], o[13], o[14], o[15]]),
            ]
        };
        assert_eq!(
            tunnels.v6[&marks[&gue]],
            ProbeTunnel6 {
                backend: words([0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3]),
                source: words([0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xfe]),
                ifindex: 9,
                gue_port: 7000u16.to_be(),
                mode: BACKEND_F_GUE,
                _pad: 0,
            }
        );
        assert_eq!(tunnels.v6[&marks[&l2]].mode, BACKEND_F_DSR_L2);
    }
}
