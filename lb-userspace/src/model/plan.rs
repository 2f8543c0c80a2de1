//! Desired state -> what the kernel maps must hold: dense service and backend ids,
//! backend slots, and each service's Maglev table. Pure, so it is tested without a kernel.
//!
//! Ids are stable across re-plans: an entity that stays keeps its id (its counters and
//! its flows' pinned backend stay meaningful); a new one takes the lowest id that was
//! free in the previous plan too, so an id is never handed to a new backend in the same
//! step that releases it (the controller purges the old one's flows first).
use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, SocketAddr},
};

use lb_common::{
    backend::{Backend, BACKEND_F_PRESENT},
    encap::{BACKEND_F_DSR_L2, BACKEND_F_GUE, BACKEND_F_IPIP, PROTO_UDP},
    ipv6::FAMILY_IPV6,
    net::{ipv4_wire, port_wire, FAMILY_IPV4, PROTO_TCP},
    service::{
        POLICY_LEAST_CONN, POLICY_MAGLEV, POLICY_ROUND_ROBIN, POLICY_SOURCE_HASH, SERVICE_F_DSR,
        SERVICE_F_EDGE, SERVICE_F_NAT, SERVICE_F_RECORD_UNPROVEN, SERVICE_F_STATELESS_SYN,
        SERVICE_F_SYN_PROXY,
    },
};

use crate::{
    model::config::{Config, ForwardingMode, Policy, Protocol, ServiceConfig, SynProxyMode},
    model::family::ServiceMapKey,
    model::maglev::{self, MaglevBackend},
    model::policy_table::{self, TableBackend},
    model::weights,
};

/// Identity of a backend within a service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackendRef {
    pub service: String,
    pub address: IpAddr,
    pub port: u16,
}

impl BackendRef {
    /// The smallest key of service `name`'s backends: keys sort by service first, so a
    /// service's backends are one range of any map keyed by `BackendRef`.
    pub fn first_of(name: &str) -> Self {
        BackendRef {
            service: name.to_string(),
            // IPv4 addresses sort before IPv6 ones.
            address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port: 0,
        }
    }

    /// The entries of `map` that belong to service `name`.
    pub fn of_service<'a, V>(
        map: &'a BTreeMap<BackendRef, V>,
        name: &'a str,
    ) -> impl Iterator<Item = (&'a BackendRef, &'a V)> + 'a {
        map.range(Self::first_of(name)..)
            .take_while(move |(at, _)| at.service == name)
    }
}

impl std::fmt::Display for BackendRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}",
            self.service,
            SocketAddr::new(self.address, self.port)
        )
    }
}

/// Id assignments carried from one plan to the next.
#[derive(Debug, Clone, Default)]
pub struct Ids {
    pub services: BTreeMap<String, u32>,
    pub backends: BTreeMap<BackendRef, u32>,
}

/// What runtime state adds to the config: the ring weight of each backend (effective
/// weights, see `weights`) and backends removed from the config whose flows still drain.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overlay {
    /// Ring weight per backend; a backend not listed gets its configured weight.
    pub ring_weights: BTreeMap<BackendRef, u32>,
    /// Removed backends that keep their slot (and id) but no ring share, by zone.
    pub retiring: BTreeMap<BackendRef, String>,
    /// Services with `syn_proxy: auto` whose proxy is on now.
    pub syn_proxy_on: BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PlannedService {
    pub name: String,
    pub id: u32,
    pub key: ServiceMapKey,
    pub policy: u32,
    pub flags: u32,
    /// Backend ids of this service, in config order, then retiring ones.
    pub backends: Vec<u32>,
    /// What the ring was built from; a re-plan with the same input reuses the ring.
    pub maglev_input: Vec<MaglevBackend>,
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

impl PlannedBackend {
    /// What the IPv6 address array holds at this backend's id: its address if it is an
    /// IPv6 backend.
    pub fn addr6(&self) -> Option<lb_common::ipv6::Addr6> {
        match self.at.address {
            IpAddr::V4(_) => None,
            IpAddr::V6(v6) => Some(crate::model::family::addr6(v6)),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub services: Vec<PlannedService>,
    pub backends: Vec<PlannedBackend>,
}

impl Plan {
    /// The id of a backend in this plan.
    pub fn backend_id(&self, at: &BackendRef) -> Option<u32> {
        self.backends.iter().find(|b| &b.at == at).map(|b| b.id)
    }
}

/// The lowest id not in `used`, searching from `from`: ids are only ever added to
/// `used` while assigning, so no id below the last one handed out frees up, and a
/// cursor makes assigning n ids one pass rather than n scans from 0.
fn lowest_free(used: &BTreeSet<u32>, from: &mut u32) -> u32 {
    while used.contains(from) {
        *from += 1;
    }
    *from
}

/// Every backend of a service the plan holds: configured ones, then retiring ones.
fn members<'a>(config: &'a Config, overlay: &'a Overlay) -> impl Iterator<Item = BackendRef> + 'a {
    config.services.iter().flat_map(move |s| {
        let configured = s.backends.iter().map(move |b| BackendRef {
            service: s.name.clone(),
            address: b.address,
            port: b.port,
        });
        let retiring = overlay
            .retiring
            .keys()
            .filter(move |at| at.service == s.name)
            .cloned();
        configured.chain(retiring)
    })
}

/// Keeps the ids of entities that stay (retiring backends included), gives new ones the
/// lowest ids free in both the previous and the new assignment, and drops the ids of
/// entities that are gone.
pub fn assign_ids(config: &Config, overlay: &Overlay, previous: &Ids) -> Ids {
    let mut ids = Ids::default();
    let mut used_services: BTreeSet<u32> = previous.services.values().copied().collect();
    let mut used_backends: BTreeSet<u32> = previous.backends.values().copied().collect();
    for s in &config.services {
        if let Some(id) = previous.services.get(&s.name) {
            ids.services.insert(s.name.clone(), *id);
        }
    }
    for at in members(config, overlay) {
        if let Some(id) = previous.backends.get(&at) {
            ids.backends.insert(at, *id);
        }
    }
    let mut from = 0;
    for s in &config.services {
        ids.services.entry(s.name.clone()).or_insert_with(|| {
            let id = lowest_free(&used_services, &mut from);
            used_services.insert(id);
            id
        });
    }
    let mut from = 0;
    for at in members(config, overlay) {
        ids.backends.entry(at).or_insert_with(|| {
            let id = lowest_free(&used_backends, &mut from);
            used_backends.insert(id);
            id
        });
    }
    ids
}

/// The backend ids a new backend may take: the lowest id held by no backend (see
/// [`assign_ids`]), kept up to date across [`assign_service_ids`] steps rather than found
/// by a scan of every id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FreeIds {
    /// Free ids below `next`.
    holes: BTreeSet<u32>,
    /// Every id from here up is free.
    next: u32,
}

impl FreeIds {
    /// The ids `ids` leaves free.
    pub fn of(ids: &Ids) -> Self {
        let used: BTreeSet<u32> = ids.backends.values().copied().collect();
        let next = used.last().map_or(0, |id| id + 1);
        Self {
            holes: (0..next).filter(|id| !used.contains(id)).collect(),
            next,
        }
    }

    /// The lowest free id, now held.
    pub fn take(&mut self) -> u32 {
        self.holes.pop_first().unwrap_or_else(|| {
            self.next += 1;
            self.next - 1
        })
    }

    /// Makes `id` free again: only once its flows were purged and its slot freed.
    pub fn release(&mut self, id: u32) {
        if id < self.next {
            self.holes.insert(id);
        }
    }
}

/// [`assign_ids`] for the backends of service `s` alone, in place: other services' ids
/// are left as they are, and a new backend takes the lowest id in `free`, as it would
/// from `assign_ids`. Returns the ids the service's departed backends held: the caller
/// releases them into `free` only after their flows are purged, so that no id is handed
/// out in the step that frees it.
pub fn assign_service_ids(
    s: &ServiceConfig,
    overlay: &Overlay,
    ids: &mut Ids,
    free: &mut FreeIds,
) -> Vec<u32> {
    // Addresses rather than `BackendRef`s: no copy of the service's name per backend.
    let members: Vec<(IpAddr, u16)> = s
        .backends
        .iter()
        .map(|b| (b.address, b.port))
        .chain(
            BackendRef::of_service(&overlay.retiring, &s.name).map(|(at, _)| (at.address, at.port)),
        )
        .collect();
    let wanted: std::collections::HashSet<(IpAddr, u16)> = members.iter().copied().collect();
    let gone: Vec<BackendRef> = BackendRef::of_service(&ids.backends, &s.name)
        .filter(|(at, _)| !wanted.contains(&(at.address, at.port)))
        .map(|(at, _)| at.clone())
        .collect();
    let released = gone
        .iter()
        .filter_map(|at| ids.backends.remove(at))
        .collect();
    let mut probe = BackendRef::first_of(&s.name);
    for (address, port) in members {
        (probe.address, probe.port) = (address, port);
        if !ids.backends.contains_key(&probe) {
            ids.backends.insert(probe.clone(), free.take());
        }
    }
    released
}

/// The services-map key of a configured service, in its VIP's family's map.
pub fn service_key(s: &ServiceConfig) -> ServiceMapKey {
    let proto = match s.protocol {
        Protocol::Tcp => PROTO_TCP,
        Protocol::Udp => PROTO_UDP,
    };
    ServiceMapKey::new(s.vip, s.port, proto)
}

/// A backend slot's value; `weight_milli` 0 means it takes no new flows (unhealthy,
/// draining, retiring), which the data path also uses to re-place a SYN that finds
/// an old entry for it. An IPv6 backend's slot says [`FAMILY_IPV6`] and holds no address
/// (`addr` 0): its address is in the IPv6 address array at the same id.
pub fn backend_value(
    address: IpAddr,
    port: u16,
    weight_milli: u32,
    service: u32,
    mode: ForwardingMode,
) -> Backend {
    let (addr, family) = match address {
        IpAddr::V4(v4) => (ipv4_wire(v4.octets()), FAMILY_IPV4),
        IpAddr::V6(_) => (0, FAMILY_IPV6),
    };
    Backend {
        addr,
        port: port_wire(port),
        family,
        flags: BACKEND_F_PRESENT | mode_flags(mode),
        weight_milli,
        service,
    }
}

/// The `lb_common::encap` bits of a service's forwarding mode, which its backends carry.
pub fn mode_flags(mode: ForwardingMode) -> u8 {
    match mode {
        ForwardingMode::Nat => 0,
        ForwardingMode::DsrL2 => BACKEND_F_DSR_L2,
        ForwardingMode::Ipip => BACKEND_F_IPIP,
        ForwardingMode::Gue => BACKEND_F_GUE,
    }
}

/// A configured backend's effective weight in thousandths (the overlay's unit), its
/// configured `weight` where the overlay says nothing. One unit for the ring, the policy
/// table and the kernel's least-connections comparison.
pub fn ring_weight_milli(overlay: &Overlay, at: &BackendRef, weight: u32) -> u32 {
    overlay
        .ring_weights
        .get(at)
        .copied()
        .unwrap_or(weight * weights::WEIGHT_SCALE)
}

/// A backend's entry in its service's Maglev input.
pub fn maglev_entry(address: IpAddr, port: u16, weight_milli: u32, id: u32) -> MaglevBackend {
    MaglevBackend {
        identity: maglev::identity(address, port),
        weight: weight_milli,
        id,
    }
}

/// A service's policy and flags in the services map, with what runtime state adds: the
/// SYN proxy of a `syn_proxy: auto` service while it is on.
pub fn service_flags(s: &ServiceConfig, overlay: &Overlay) -> (u32, u32) {
    let (policy, flags) = policy_and_flags(s);
    let auto_on = s.syn_proxy == SynProxyMode::Auto && overlay.syn_proxy_on.contains(&s.name);
    let proxy = if auto_on {
        SERVICE_F_SYN_PROXY | SERVICE_F_EDGE
    } else {
        0
    };
    (policy, flags | proxy)
}

/// A service's policy and flags in the services map, from its config alone.
pub fn policy_and_flags(s: &ServiceConfig) -> (u32, u32) {
    // A DSR service's nodes never see a SYN-ACK: the SYN is placed by the hash and
    // records nothing (so a SYN flood fills no flow table), and the client's ACK records
    // the flow on the SYN's backend without the proof no node can have; validation
    // allows only hash policies (see `validate_dsr`).
    if s.mode != ForwardingMode::Nat {
        let policy = match s.policy {
            Policy::SourceHash => POLICY_SOURCE_HASH,
            _ => POLICY_MAGLEV,
        };
        let protected = !s.filter.is_empty() || s.rate_limit.is_some();
        let edge = if protected { SERVICE_F_EDGE } else { 0 };
        return (
            policy,
            SERVICE_F_DSR | SERVICE_F_STATELESS_SYN | SERVICE_F_RECORD_UNPROVEN | edge,
        );
    }
    // A hash policy's SYN needs no record: the client's next packet hashes to the same
    // backend. Round robin and least connections pick afresh each time.
    // In a tier a node sees the SYN-ACK of only some of its handshakes: their ACKs must
    // record flows without that proof (see `SERVICE_F_RECORD_UNPROVEN`).
    let hashed = SERVICE_F_NAT
        | SERVICE_F_STATELESS_SYN
        | if s.stateless_return {
            SERVICE_F_RECORD_UNPROVEN
        } else {
            0
        };
    let (policy, flags) = match s.policy {
        Policy::Maglev => (POLICY_MAGLEV, hashed),
        Policy::SourceHash => (POLICY_SOURCE_HASH, hashed),
        Policy::RoundRobin => (POLICY_ROUND_ROBIN, SERVICE_F_NAT),
        Policy::LeastConn => (POLICY_LEAST_CONN, SERVICE_F_NAT),
    };
    // Only a protected service's new connections take the detour through `lb_edge`,
    // which hands a proxied service's on to `lb_proxy`.
    let proxied = s.syn_proxy == SynProxyMode::On;
    let protected = !s.filter.is_empty() || s.rate_limit.is_some() || proxied;
    let proxy = if proxied { SERVICE_F_SYN_PROXY } else { 0 };
    (
        policy,
        flags | proxy | if protected { SERVICE_F_EDGE } else { 0 },
    )
}

/// Whether a service's policy has a table of its own (a function of every backend's
/// weight), besides the Maglev ring.
pub fn has_policy_table(s: &ServiceConfig) -> bool {
    matches!(s.policy, Policy::RoundRobin | Policy::LeastConn)
}

/// Whether two Maglev inputs build the same ring: equal once weight-0 entries are left
/// out.
fn same_ring_input(a: &[MaglevBackend], b: &[MaglevBackend]) -> bool {
    let positive = |m: &&MaglevBackend| m.weight > 0;
    a.iter().filter(positive).eq(b.iter().filter(positive))
}

/// The full kernel-side picture of `config` with `overlay`, with ids from `ids` (see
/// [`assign_ids`]). Rings of services whose Maglev input equals the one in `previous`
/// are reused rather than rebuilt.
pub fn plan(config: &Config, overlay: &Overlay, ids: &Ids, previous: Option<&Plan>) -> Plan {
    let mut services = Vec::new();
    let mut backends = Vec::new();
    for s in &config.services {
        let old = previous.and_then(|p| p.services.iter().find(|old| old.name == s.name));
        let (service, mut ours) = plan_service(s, config.cluster.ring_size, overlay, ids, old);
        services.push(service);
        backends.append(&mut ours);
    }
    Plan { services, backends }
}

/// One service's part of [`plan`]: its selection tables and its backend slots, in the
/// order `plan` lists them. `previous` is the service as last planned (its ring is
/// reused when the Maglev input is the same).
pub fn plan_service(
    s: &ServiceConfig,
    ring_size: u32,
    overlay: &Overlay,
    ids: &Ids,
    previous: Option<&PlannedService>,
) -> (PlannedService, Vec<PlannedBackend>) {
    let mut backends = Vec::with_capacity(s.backends.len());
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
        let weight_milli = ring_weight_milli(overlay, &at, b.weight);
        maglev_input.push(maglev_entry(b.address, b.port, weight_milli, id));
        table_input.push(TableBackend {
            id,
            weight: weight_milli as u64,
        });
        backends.push(PlannedBackend {
            id,
            at,
            zone: b.zone.clone(),
            weight: b.weight,
            value: backend_value(b.address, b.port, weight_milli, service_id, s.mode),
        });
    }
    for (at, zone) in BackendRef::of_service(&overlay.retiring, &s.name) {
        // Gone from the config, so no ring share; the slot stays for its flows.
        let id = ids.backends[at];
        members.push(id);
        backends.push(PlannedBackend {
            id,
            at: at.clone(),
            zone: zone.clone(),
            weight: 0,
            value: backend_value(at.address, at.port, 0, service_id, s.mode),
        });
    }
    let (policy, flags) = service_flags(s, overlay);
    let table = match s.policy {
        Policy::Maglev | Policy::SourceHash => Vec::new(),
        Policy::RoundRobin => policy_table::round_robin(&table_input),
        Policy::LeastConn => policy_table::least_conn(&table_input),
    };
    // The ring is a function of the backends of positive weight only (see
    // `maglev::build`): a backend added at weight 0 (waiting for its probes) or a
    // weight-0 one removed leaves it as it is.
    let reused = previous
        .filter(|old| same_ring_input(&old.maglev_input, &maglev_input))
        .map(|old| old.ring.clone());
    let ring = reused.unwrap_or_else(|| maglev::build(&maglev_input, ring_size));
    let service = PlannedService {
        name: s.name.clone(),
        id: service_id,
        key: service_key(s),
        policy,
        flags,
        backends: members,
        maglev_input,
        ring,
        table,
    };
    (service, backends)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config;

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

    fn assign(config: &Config, previous: &Ids) -> Ids {
        assign_ids(config, &Overlay::default(), previous)
    }

    fn at(address: &str) -> BackendRef {
        BackendRef {
            service: "web".into(),
            address: address.parse().unwrap(),
            port: 8080,
        }
    }

    fn id(ids: &Ids, address: &str) -> u32 {
        ids.backends[&at(address)]
    }

    #[test]
    fn a_tier_service_of_a_hash_policy_records_unproven_handshakes() {
        let mut s = config(&["10.1.0.11"]).services.remove(0);
        let flags = |s: &ServiceConfig| policy_and_flags(s).1;
        assert_eq!(flags(&s), SERVICE_F_NAT | SERVICE_F_STATELESS_SYN);
        s.stateless_return = true;
        assert_eq!(
            flags(&s),
            SERVICE_F_NAT | SERVICE_F_STATELESS_SYN | SERVICE_F_RECORD_UNPROVEN
        );
        s.policy = Policy::SourceHash;
        assert_ne!(flags(&s) & SERVICE_F_RECORD_UNPROVEN, 0);
        // Round robin records every SYN: there is no handshake to prove.
        s.policy = Policy::RoundRobin;
        assert_eq!(flags(&s), SERVICE_F_NAT);
    }

    #[test]
    fn a_dsr_service_is_hash_placed_records_unproven_handshakes_and_marks_its_backends() {
        let mut s = config(&["10.1.0.11"]).services.remove(0);
        for (mode, bit) in [
            (ForwardingMode::DsrL2, BACKEND_F_DSR_L2),
            (ForwardingMode::Ipip, BACKEND_F_IPIP),
            (ForwardingMode::Gue, BACKEND_F_GUE),
        ] {
            s.mode = mode;
            s.policy = Policy::Maglev;
            assert_eq!(
                policy_and_flags(&s),
                (
                    POLICY_MAGLEV,
                    SERVICE_F_DSR | SERVICE_F_STATELESS_SYN | SERVICE_F_RECORD_UNPROVEN
                ),
                "{mode:?}"
            );
            s.policy = Policy::SourceHash;
            assert_eq!(policy_and_flags(&s).0, POLICY_SOURCE_HASH, "{mode:?}");
            let b = backend_value("10.1.0.11".parse().unwrap(), 80, 1000, 3, mode);
            assert_eq!(b.flags, BACKEND_F_PRESENT | bit, "{mode:?}");
        }
        let nat = backend_value(
            "10.1.0.11".parse().unwrap(),
            80,
            1000,
            3,
            ForwardingMode::Nat,
        );
        assert_eq!(nat.flags, BACKEND_F_PRESENT);
    }

    #[test]
    fn ids_survive_replans_and_freed_ids_are_reused_lowest_first() {
        let first = assign(
            &config(&["10.1.0.11", "10.1.0.12", "10.1.0.13"]),
            &Ids::default(),
        );
        let second = assign(&config(&["10.1.0.11", "10.1.0.13"]), &first);
        let third = assign(&config(&["10.1.0.14", "10.1.0.11", "10.1.0.13"]), &second);
        assert_eq!(id(&first, "10.1.0.13"), 2);
        assert_eq!(id(&second, "10.1.0.13"), 2);
        assert_eq!(id(&third, "10.1.0.14"), 1, "lowest freed id is reused");
        assert_eq!(third.services["web"], 0);
    }

    #[test]
    fn an_id_released_in_one_step_is_not_handed_out_in_the_same_step() {
        let first = assign(&config(&["10.1.0.11", "10.1.0.12"]), &Ids::default());
        // .12 leaves and .14 arrives at once: .14 must not inherit .12's id, whose flows
        // are purged only after this step.
        let second = assign(&config(&["10.1.0.11", "10.1.0.14"]), &first);
        assert_eq!(id(&second, "10.1.0.14"), 2);
        let third = assign(&config(&["10.1.0.11", "10.1.0.14", "10.1.0.15"]), &second);
        assert_eq!(id(&third, "10.1.0.15"), 1, "free again one step later");
    }

    #[test]
    fn retiring_backends_keep_their_id_and_slot_but_leave_the_ring() {
        let c = config(&["10.1.0.11", "10.1.0.12"]);
        let first = assign(&c, &Ids::default());
        let shrunk = config(&["10.1.0.11"]);
        let gone = at("10.1.0.12");
        let overlay = Overlay {
            retiring: [(gone.clone(), "az-a".to_string())].into(),
            ..Overlay::default()
        };
        let ids = assign_ids(&shrunk, &overlay, &first);
        assert_eq!(ids.backends[&gone], 1);
        let p = plan(&shrunk, &overlay, &ids, None);
        assert_eq!(p.backend_id(&gone), Some(1));
        assert_eq!(p.services[0].backends, [0, 1]);
        assert!(p.services[0].ring.iter().all(|id| *id == 0));
        // A new backend meanwhile does not take the retiring one's id.
        let grown = config(&["10.1.0.11", "10.1.0.13"]);
        let ids = assign_ids(&grown, &overlay, &ids);
        assert_eq!(id(&ids, "10.1.0.13"), 2);
    }

    #[test]
    fn ring_weights_from_the_overlay_replace_configured_weights() {
        let c = config(&["10.1.0.11", "10.1.0.12"]);
        let ids = assign(&c, &Ids::default());
        let overlay = Overlay {
            ring_weights: [(at("10.1.0.11"), 3000), (at("10.1.0.12"), 0)].into(),
            ..Overlay::default()
        };
        let p = plan(&c, &overlay, &ids, None);
        assert!(p.services[0].ring.iter().all(|id| *id == 0));
        assert_eq!(p.services[0].maglev_input[0].weight, 3000);
    }

    #[test]
    fn an_unchanged_maglev_input_reuses_the_previous_ring() {
        let c = config(&["10.1.0.11", "10.1.0.12"]);
        let ids = assign(&c, &Ids::default());
        let mut first = plan(&c, &Overlay::default(), &ids, None);
        // Tamper with the ring: a reuse shows as the tampered ring coming back.
        first.services[0].ring[0] = 77;
        let again = plan(&c, &Overlay::default(), &ids, Some(&first));
        assert_eq!(again.services[0].ring[0], 77);
        let overlay = Overlay {
            ring_weights: [(at("10.1.0.11"), 2)].into(),
            ..Overlay::default()
        };
        let changed = plan(&c, &overlay, &ids, Some(&first));
        assert_ne!(
            changed.services[0].ring[0], 77,
            "a changed input is rebuilt"
        );
    }

    #[test]
    fn plan_holds_wire_order_values_and_a_full_ring() {
        let c = config(&["10.1.0.11", "10.1.0.12"]);
        let p = plan(&c, &Overlay::default(), &assign(&c, &Ids::default()), None);
        let s = &p.services[0];
        let key = s.key.v4().expect("an IPv4 service");
        assert_eq!(key.addr.to_ne_bytes(), [10, 0, 0, 100]);
        assert_eq!(key.port.to_ne_bytes(), [0, 80]);
        assert_eq!(s.ring.len(), 1009);
        assert!(s.ring.iter().all(|id| s.backends.contains(id)));
        assert_eq!(p.backends[1].value.addr.to_ne_bytes(), [10, 1, 0, 12]);
        assert_eq!(p.backends[1].value.port.to_ne_bytes(), [0x1f, 0x90]);
    }
}
