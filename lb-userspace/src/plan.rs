//! Desired state -> what the kernel maps must hold: dense service and backend ids,
//! backend slots, and each service's Maglev table. Pure, so it is tested without a kernel.
//!
//! Ids are stable across re-plans: an entity that stays keeps its id (its counters and
//! its flows' pinned backend stay meaningful); a new one takes the lowest free id.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use lb_common::{
    backend::{Backend, BACKEND_F_PRESENT},
    net::{ipv4_wire, port_wire, FAMILY_IPV4, PROTO_TCP},
    service::{
        ServiceKey, POLICY_LEAST_CONN, POLICY_MAGLEV, POLICY_ROUND_ROBIN, POLICY_SOURCE_HASH,
        SERVICE_F_NAT,
    },
};

use crate::{
    config::{Config, ForwardingMode, Policy, Protocol, ServiceConfig},
    maglev::{self, MaglevBackend},
    policy_table::{self, TableBackend},
};

/// Identity of a backend within a service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackendRef {
    pub service: String,
    pub address: Ipv4Addr,
    pub port: u16,
}

/// Id assignments carried from one plan to the next.
#[derive(Debug, Clone, Default)]
pub struct Ids {
    pub services: BTreeMap<String, u32>,
    pub backends: BTreeMap<BackendRef, u32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PlannedService {
    pub name: String,
    pub id: u32,
    pub key: ServiceKey,
    pub policy: u32,
    pub flags: u32,
    /// Backend ids of this service, in config order.
    pub backends: Vec<u32>,
    /// Maglev table (every policy falls back to it for non-SYN packets without a flow).
    pub ring: Vec<u32>,
    /// Round-robin schedule or least-connections candidates; empty for hash policies.
    pub table: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PlannedBackend {
    pub id: u32,
    pub at: BackendRef,
    pub zone: String,
    pub weight: u32,
    pub value: Backend,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub services: Vec<PlannedService>,
    pub backends: Vec<PlannedBackend>,
}

fn lowest_free(used: &BTreeSet<u32>) -> u32 {
    (0..).find(|id| !used.contains(id)).unwrap_or(u32::MAX)
}

/// Keeps the ids of entities that stay, gives new ones the lowest free ids, and drops
/// the ids of entities that are gone.
pub fn assign_ids(config: &Config, previous: &Ids) -> Ids {
    let mut ids = Ids::default();
    let mut used_services = BTreeSet::new();
    let mut used_backends = BTreeSet::new();
    for s in &config.services {
        if let Some(id) = previous.services.get(&s.name) {
            ids.services.insert(s.name.clone(), *id);
            used_services.insert(*id);
        }
        for b in &s.backends {
            let at = BackendRef {
                service: s.name.clone(),
                address: b.address,
                port: b.port,
            };
            if let Some(id) = previous.backends.get(&at) {
                ids.backends.insert(at, *id);
                used_backends.insert(*id);
            }
        }
    }
    for s in &config.services {
        ids.services.entry(s.name.clone()).or_insert_with(|| {
            let id = lowest_free(&used_services);
            used_services.insert(id);
            id
        });
        for b in &s.backends {
            let at = BackendRef {
                service: s.name.clone(),
                address: b.address,
                port: b.port,
            };
            ids.backends.entry(at).or_insert_with(|| {
                let id = lowest_free(&used_backends);
                used_backends.insert(id);
                id
            });
        }
    }
    ids
}

/// The services-map key of a configured service.
pub fn service_key(s: &ServiceConfig) -> ServiceKey {
    let Protocol::Tcp = s.protocol;
    ServiceKey {
        addr: ipv4_wire(s.vip.octets()),
        port: port_wire(s.port),
        proto: PROTO_TCP,
        family: FAMILY_IPV4,
    }
}

/// The full kernel-side picture of `config`, with ids from `ids` (see [`assign_ids`]).
pub fn plan(config: &Config, ids: &Ids) -> Plan {
    let mut services = Vec::new();
    let mut backends = Vec::new();
    for s in &config.services {
        let service_id = ids.services[&s.name];
        let mut members = Vec::new();
        let mut maglev_input = Vec::new();
        let mut table_input = Vec::new();
        for b in &s.backends {
            let at = BackendRef {
                service: s.name.clone(),
                address: b.address,
                port: b.port,
            };
            let id = ids.backends[&at];
            members.push(id);
            maglev_input.push(MaglevBackend {
                identity: format!("{}:{}", b.address, b.port),
                weight: b.weight,
                id,
            });
            table_input.push(TableBackend {
                id,
                weight: b.weight as u64 * 1000,
            });
            backends.push(PlannedBackend {
                id,
                at,
                zone: b.zone.clone(),
                weight: b.weight,
                value: Backend {
                    addr: ipv4_wire(b.address.octets()),
                    port: port_wire(b.port),
                    family: FAMILY_IPV4,
                    flags: BACKEND_F_PRESENT,
                    weight_milli: b.weight * 1000,
                    service: service_id,
                },
            });
        }
        let ForwardingMode::Nat = s.mode;
        let (policy, table) = match s.policy {
            Policy::Maglev => (POLICY_MAGLEV, Vec::new()),
            Policy::SourceHash => (POLICY_SOURCE_HASH, Vec::new()),
            Policy::RoundRobin => (POLICY_ROUND_ROBIN, policy_table::round_robin(&table_input)),
            Policy::LeastConn => (POLICY_LEAST_CONN, policy_table::least_conn(&table_input)),
        };
        services.push(PlannedService {
            name: s.name.clone(),
            id: service_id,
            key: service_key(s),
            policy,
            flags: SERVICE_F_NAT,
            backends: members,
            ring: maglev::build(&maglev_input, config.cluster.ring_size),
            table,
        });
    }
    Plan { services, backends }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    fn config(backends: &[&str]) -> Config {
        let list: Vec<String> = backends
            .iter()
            .map(|a| format!("{{ address: {a}, port: 8080, zone: az-a }}"))
            .collect();
        config::parse(&format!(
            "node: {{ zone: az-a }}\ninterfaces: [eth0]\ncluster: {{ ring_size: 1009 }}\n\
             services:\n  - {{ name: web, vip: 10.0.0.100, port: 80, backends: [{}] }}\n",
            list.join(", ")
        ))
        .unwrap()
    }

    #[test]
    fn ids_survive_replans_and_freed_ids_are_reused_lowest_first() {
        let first = assign_ids(
            &config(&["10.1.0.11", "10.1.0.12", "10.1.0.13"]),
            &Ids::default(),
        );
        let second = assign_ids(&config(&["10.1.0.11", "10.1.0.13"]), &first);
        let third = assign_ids(&config(&["10.1.0.14", "10.1.0.11", "10.1.0.13"]), &second);
        let id = |ids: &Ids, a: &str| {
            ids.backends[&BackendRef {
                service: "web".into(),
                address: a.parse().unwrap(),
                port: 8080,
            }]
        };
        assert_eq!(id(&first, "10.1.0.13"), 2);
        assert_eq!(id(&second, "10.1.0.13"), 2);
        assert_eq!(id(&third, "10.1.0.14"), 1, "lowest freed id is reused");
        assert_eq!(third.services["web"], 0);
    }

    #[test]
    fn plan_holds_wire_order_values_and_a_full_ring() {
        let c = config(&["10.1.0.11", "10.1.0.12"]);
        let p = plan(&c, &assign_ids(&c, &Ids::default()));
        let s = &p.services[0];
        assert_eq!(s.key.addr.to_ne_bytes(), [10, 0, 0, 100]);
        assert_eq!(s.key.port.to_ne_bytes(), [0, 80]);
        assert_eq!(s.ring.len(), 1009);
        assert!(s.ring.iter().all(|id| s.backends.contains(id)));
        assert_eq!(p.backends[1].value.addr.to_ne_bytes(), [10, 1, 0, 12]);
        assert_eq!(p.backends[1].value.port.to_ne_bytes(), [0x1f, 0x90]);
    }
}
