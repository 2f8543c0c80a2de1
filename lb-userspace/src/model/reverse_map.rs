//! What the reverse map must hold (see `lb_common::reverse`): for every backend of a
//! `stateless_return` service in the plan (draining and retiring ones too, whose
//! connections still answer), its address:port -> the service's VIP:port. Every node
//! computes the same map from the same config.
use std::collections::{BTreeMap, BTreeSet, HashMap};

use lb_common::reverse::{ReverseKey, ReverseTarget};

use crate::model::{config::Config, plan::Plan};

/// The reverse map of `plan` for `config`. An address:port that two planned services
/// both hold (validation refuses that for a `stateless_return` service, but a backend
/// retiring from one service while another takes it is planned in both) is left out:
/// its replies cannot be told apart, so none is translated by the map.
pub fn reverse_entries(config: &Config, plan: &Plan) -> BTreeMap<ReverseKey, ReverseTarget> {
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
        // The reverse map is IPv4 only (validation refuses `stateless_return` for an
        // IPv6 service), and an IPv6 backend's replies never match an IPv4 key.
        let (Some(vip), std::net::IpAddr::V4(address)) = (service.key.v4(), b.at.address) else {
            continue;
        };
        let key = ReverseKey {
            addr: u32::from_ne_bytes(address.octets()),
            port: b.at.port.to_be(),
            proto: vip.proto,
            family: vip.family,
        };
        if !seen.insert(key) {
            ambiguous.insert(key);
        }
        if stateless.contains(service.name.as_str()) {
            entries.insert(
                key,
                ReverseTarget {
                    vip: vip.addr,
                    vport: vip.port,
                    _pad: 0,
                    service: service.id,
                    backend: b.id,
                },
            );
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
}
