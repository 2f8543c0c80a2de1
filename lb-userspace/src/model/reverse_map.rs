//! What the reverse map must hold (see `lb_common::reverse`): for every backend of a
//! `stateless_return` service in the plan (draining and retiring ones too, whose
//! connections still answer), its address:port -> the service's VIP:port. Every node
//! computes the same map from the same config. IPv4 backends go in the IPv4 map, IPv6
//! ones in the IPv6 map (`lb_common::reverse6`), by the same rules.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
};

use lb_common::{
    reverse::{ReverseKey, ReverseTarget},
    reverse6::{ReverseKey6, ReverseTarget6},
};

use crate::model::{
    config::Config,
    family::{addr6, ServiceMapKey},
    plan::{Plan, PlannedBackend, PlannedService},
};

/// The IPv4 reverse map of `plan` for `config`. An address:port that two planned
/// services both hold (validation refuses that for a `stateless_return` service, but a
/// backend retiring from one service while another takes it is planned in both) is left
/// out: its replies cannot be told apart, so none is translated by the map.
pub fn reverse_entries(config: &Config, plan: &Plan) -> BTreeMap<ReverseKey, ReverseTarget> {
    entries_by(config, plan, |service, b| {
        let (ServiceMapKey::V4(vip), IpAddr::V4(address)) = (&service.key, b.at.address) else {
            return None;
        };
        let key = ReverseKey {
            addr: u32::from_ne_bytes(address.octets()),
            port: b.at.port.to_be(),
            proto: vip.proto,
            family: vip.family,
        };
        let target = ReverseTarget {
            vip: vip.addr,
            vport: vip.port,
            _pad: 0,
            service: service.id,
            backend: b.id,
        };
        Some((key, target))
    })
}

/// The IPv6 reverse map of `plan` for `config`, by the rules of [`reverse_entries`].
pub fn reverse_entries6(config: &Config, plan: &Plan) -> BTreeMap<ReverseKey6, ReverseTarget6> {
    entries_by(config, plan, |service, b| {
        let (ServiceMapKey::V6(vip), IpAddr::V6(address)) = (&service.key, b.at.address) else {
            return None;
        };
        let key = ReverseKey6 {
            addr: addr6(address),
            port: b.at.port.to_be(),
            proto: vip.proto,
            family: vip.family,
        };
        let target = ReverseTarget6 {
            vip: vip.addr,
            vport: vip.port,
            _pad: 0,
            service: service.id,
            backend: b.id,
        };
        Some((key, target))
    })
}

/// The reverse map of one family: `entry` gives a planned backend's key and target, or
/// `None` for a backend of the other family (whose replies never match this family's
/// keys).
fn entries_by<K: Ord + Copy, T>(
    config: &Config,
    plan: &Plan,
    entry: impl Fn(&PlannedService, &PlannedBackend) -> Option<(K, T)>,
) -> BTreeMap<K, T> {
    let mut entries = BTreeMap::new();
    if !config.services.iter().any(|s| s.stateless_return) {
        return entries;
    }
    let stateless: BTreeSet<&str> = config
        .services
        .iter()
        .filter(|s| s.stateless_return)
        .map(|s| s.name.as_str())
        .collect();
    let services: HashMap<&str, _> = plan.services.iter().map(|s| (s.name.as_str(), s)).collect();
    let mut ambiguous = BTreeSet::new();
    let mut seen = BTreeSet::new();
    for b in &plan.backends {
        let Some(service) = services.get(b.at.service.as_str()) else {
            continue;
        };
        let Some((key, target)) = entry(service, b) else {
            continue;
        };
        if !seen.insert(key) {
            ambiguous.insert(key);
        }
        if stateless.contains(service.name.as_str()) {
            entries.insert(key, target);
        }
    }
    for key in ambiguous {
        entries.remove(&key);
    }
    entries
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::model::{
        config::parse,
        plan::{assign_ids, plan, Ids, Overlay},
    };

    const CONFIG: &str = r#"
node: { zone: az-a }
interfaces: [eth0]
services:
  - name: web
    vip: 10.0.0.100
    port: 80
    stateless_return: true
    backends:
      - { address: 10.1.0.11, port: 8080, zone: az-a }
      - { address: 10.1.0.12, port: 8080, zone: az-a, state: draining }
  - name: admin
    vip: 10.0.0.101
    port: 8443
    backends:
      - { address: 10.1.0.11, port: 9090, zone: az-a }
"#;

    fn key(addr: Ipv4Addr, port: u16) -> ReverseKey {
        ReverseKey {
            addr: u32::from_ne_bytes(addr.octets()),
            port: port.to_be(),
            proto: 6,
            family: 4,
        }
    }

    fn entries_of(text: &str, overlay: &Overlay) -> (BTreeMap<ReverseKey, ReverseTarget>, Plan) {
        let config = parse(text).unwrap();
        let ids = assign_ids(&config, overlay, &Ids::default());
        let plan = plan(&config, overlay, &ids, None);
        (reverse_entries(&config, &plan), plan)
    }

    #[test]
    fn every_backend_of_a_stateless_return_service_maps_to_its_vip_and_no_other() {
        let (entries, plan) = entries_of(CONFIG, &Overlay::default());
        let web = plan.services.iter().find(|s| s.name == "web").unwrap();
        let id = |addr: Ipv4Addr| {
            plan.backends
                .iter()
                .find(|b| b.at.service == "web" && b.at.address == addr)
                .unwrap()
                .id
        };
        let want: BTreeMap<_, _> = [Ipv4Addr::new(10, 1, 0, 11), Ipv4Addr::new(10, 1, 0, 12)]
            .into_iter()
            .map(|addr| {
                let target = ReverseTarget {
                    vip: u32::from_ne_bytes([10, 0, 0, 100]),
                    vport: 80u16.to_be(),
                    _pad: 0,
                    service: web.id,
                    backend: id(addr),
                };
                (key(addr, 8080), target)
            })
            .collect();
        assert_eq!(entries, want);
        let off = CONFIG.replace("stateless_return: true", "stateless_return: false");
        assert_eq!(entries_of(&off, &Overlay::default()).0, BTreeMap::new());
    }

    #[test]
    fn a_backend_retiring_from_one_service_while_another_takes_it_is_left_out() {
        // `web` lost 10.1.0.12:8080, which still drains there, and `admin` took it.
        let moved = r#"
node: { zone: az-a }
interfaces: [eth0]
services:
  - name: web
    vip: 10.0.0.100
    port: 80
    stateless_return: true
    backends:
      - { address: 10.1.0.11, port: 8080, zone: az-a }
  - name: admin
    vip: 10.0.0.101
    port: 8443
    backends:
      - { address: 10.1.0.12, port: 8080, zone: az-a }
"#;
        let mut overlay = Overlay::default();
        let retiring = crate::model::plan::BackendRef {
            service: "web".into(),
            address: Ipv4Addr::new(10, 1, 0, 12).into(),
            port: 8080,
        };
        overlay.retiring.insert(retiring, "az-a".into());
        let (entries, plan) = entries_of(moved, &overlay);
        assert_eq!(
            plan.backends
                .iter()
                .filter(|b| b.at.address == Ipv4Addr::new(10, 1, 0, 12))
                .count(),
            2,
            "planned in both services"
        );
        assert_eq!(
            entries.keys().copied().collect::<Vec<_>>(),
            vec![key(Ipv4Addr::new(10, 1, 0, 11), 8080)]
        );
    }

    #[test]
    fn an_ipv6_services_backends_go_in_the_ipv6_map_only() {
        let dual = format!(
            "{CONFIG}  - name: web6
    vip: 2001:db8::100
    port: 80
    stateless_return: true
    backends:
      - {{ address: 2001:db8:1::11, port: 8080, zone: az-a }}
"
        );
        let config = parse(&dual).unwrap();
        let ids = assign_ids(&config, &Overlay::default(), &Ids::default());
        let plan = plan(&config, &Overlay::default(), &ids, None);
        let v4 = reverse_entries(&config, &plan);
        let v6 = reverse_entries6(&config, &plan);
        assert_eq!(
            v4.keys().copied().collect::<Vec<_>>(),
            vec![
                key(Ipv4Addr::new(10, 1, 0, 11), 8080),
                key(Ipv4Addr::new(10, 1, 0, 12), 8080)
            ]
        );
        let web6 = plan.services.iter().find(|s| s.name == "web6").unwrap();
        let b = plan
            .backends
            .iter()
            .find(|b| b.at.service == "web6")
            .unwrap();
        let address: std::net::Ipv6Addr = "2001:db8:1::11".parse().unwrap();
        let vip: std::net::Ipv6Addr = "2001:db8::100".parse().unwrap();
        assert_eq!(
            v6.into_iter().collect::<Vec<_>>(),
            vec![(
                ReverseKey6 {
                    addr: addr6(address),
                    port: 8080u16.to_be(),
                    proto: 6,
                    family: 6,
                },
                ReverseTarget6 {
                    vip: addr6(vip),
                    vport: 80u16.to_be(),
                    _pad: 0,
                    service: web6.id,
                    backend: b.id,
                }
            )]
        );
    }
}
