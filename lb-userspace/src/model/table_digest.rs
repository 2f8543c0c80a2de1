//! A digest of what one service's tables map flows to, comparable across LB nodes: two
//! nodes of one ECMP group that show the same digest for a service place every flow of it
//! on the same backend (see docs/tier.md, "Table digests").
//!
//! The digest is 64-bit FNV-1a over this byte stream, integers little-endian, cut to its
//! top [`DIGEST_BITS`] bits (FNV-1a's low bits are its weakest, and 48 bits are exact in
//! a Prometheus sample, an f64):
//!
//! 1. `lb-table-digest 1\n`;
//! 2. the hash seed (u32), the flow hash of [`PROBE_TUPLE`] and the source hash of its
//!    client address under that seed (u32 each): a node whose `lb_common::hash` differs
//!    maps flows differently even with equal tables;
//! 3. the policy (u32, `lb_common::service::POLICY_*`);
//! 4. the backends the tables name, sorted by identity (`ADDRESS:PORT`): their count
//!    (u32), then each identity followed by `\n`;
//! 5. the Maglev ring: its length (u32), then each slot as the index of its backend in
//!    that list (u32), [`EMPTY_SLOT`] for a slot without one;
//! 6. the policy table (round robin's schedule, least connections' candidates sorted by
//!    their index, as their order means nothing; empty for hash policies), encoded like
//!    the ring.
//!
//! Backends appear by identity, never by the dense ids a node assigned (those depend on
//! the order backends came and went on that node).
//!
//! The config digest is 64-bit FNV-1a of the service's entry of the desired state as JSON
//! (`serde_json`, keys in declaration order, every default written out), cut the same
//! way: nodes with equal digests were given the same service, backend order included
//! (round robin's schedule follows it).
use std::collections::HashMap;

use lb_common::{
    flow::FlowKey,
    hash::{flow_hash, source_hash},
    net::{ipv4_wire, port_wire, FAMILY_IPV4, PROTO_TCP},
    service::{NO_BACKEND, POLICY_LEAST_CONN},
};

use crate::model::{
    config::{Config, ServiceConfig},
    maglev::MaglevBackend,
    plan::{Plan, PlannedService},
};

/// Bits of a digest: the top bits of the 64-bit FNV-1a.
pub const DIGEST_BITS: u32 = 48;

/// How a slot without a backend is encoded.
pub const EMPTY_SLOT: u32 = u32::MAX;

/// How a slot holding an id that no backend of the service's Maglev input has is encoded
/// (none should: the ring and the policy table are built from that input).
pub const UNKNOWN_SLOT: u32 = u32::MAX - 1;

/// The tuple whose hashes stand for the flow hash function in the digest: client
/// 192.0.2.1:40000 to 198.51.100.1:80, TCP.
pub const PROBE_TUPLE: ([u8; 4], [u8; 4], u16, u16) =
    ([192, 0, 2, 1], [198, 51, 100, 1], 40000, 80);

const DOMAIN: &[u8] = b"lb-table-digest 1\n";

/// 64-bit FNV-1a, fed in pieces.
struct Fnv1a(u64);

impl Fnv1a {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    fn bytes(&mut self, data: &[u8]) {
        for b in data {
            self.0 = (self.0 ^ *b as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn u32(&mut self, value: u32) {
        self.bytes(&value.to_le_bytes());
    }

    fn digest(&self) -> u64 {
        self.0 >> (64 - DIGEST_BITS)
    }
}

/// The digest of the tables of `service` (as planned) under `hash_seed`.
pub fn table_digest(service: &PlannedService, hash_seed: u32) -> u64 {
    digest_of(
        &service.maglev_input,
        &service.ring,
        &service.table,
        service.policy,
        hash_seed,
    )
}

fn digest_of(input: &[MaglevBackend], ring: &[u32], table: &[u32], policy: u32, seed: u32) -> u64 {
    // Ids are dense (the plan hands out the lowest free ones), so tables indexed by id
    // rather than hash maps: a ring has 65537 slots to look up.
    let ids = input.iter().map(|b| b.id as usize + 1).max().unwrap_or(0);
    let mut input_of_id = vec![None; ids];
    for (i, b) in input.iter().enumerate() {
        input_of_id[b.id as usize] = Some(i);
    }
    let input_at = |id: u32| input_of_id.get(id as usize).copied().flatten();
    // Which inputs the tables name, then their place in the sorted list of identities.
    let mut named = vec![false; input.len()];
    for id in ring.iter().chain(table) {
        if let Some(i) = input_at(*id) {
            named[i] = true;
        }
    }
    let mut listed: Vec<usize> = (0..input.len()).filter(|i| named[*i]).collect();
    listed.sort_by(|a, b| input[*a].identity.cmp(&input[*b].identity));
    let mut place_of_id = vec![UNKNOWN_SLOT; ids];
    for (place, i) in listed.iter().enumerate() {
        place_of_id[input[*i].id as usize] = place as u32;
    }
    let encode = |id: u32| match id {
        NO_BACKEND => EMPTY_SLOT,
        id => place_of_id
            .get(id as usize)
            .copied()
            .unwrap_or(UNKNOWN_SLOT),
    };
    let mut h = Fnv1a::new();
    h.bytes(DOMAIN);
    h.u32(seed);
    let (src, dst, src_port, dst_port) = PROBE_TUPLE;
    let probe = FlowKey {
        src_addr: ipv4_wire(src),
        dst_addr: ipv4_wire(dst),
        src_port: port_wire(src_port),
        dst_port: port_wire(dst_port),
        proto: PROTO_TCP,
        family: FAMILY_IPV4,
        _pad: [0; 2],
    };
    h.u32(flow_hash(&probe, seed));
    h.u32(source_hash(probe.src_addr, seed));
    h.u32(policy);
    h.u32(listed.len() as u32);
    for i in &listed {
        h.bytes(input[*i].identity.as_bytes());
        h.bytes(b"\n");
    }
    let mut table: Vec<u32> = table.iter().map(|id| encode(*id)).collect();
    if policy == POLICY_LEAST_CONN {
        // Candidates are drawn at random: their order means nothing (it follows ids).
        table.sort_unstable();
    }
    h.u32(ring.len() as u32);
    for id in ring {
        h.u32(encode(*id));
    }
    h.u32(table.len() as u32);
    for entry in table {
        h.u32(entry);
    }
    h.digest()
}

/// The digest of service `s` as the desired state holds it.
pub fn config_digest(s: &ServiceConfig) -> u64 {
    let mut h = Fnv1a::new();
    // Serializing a config value cannot fail (no maps with non-string keys, no
    // non-finite floats); were it to, the digest of the empty text stands in.
    h.bytes(&serde_json::to_vec(s).unwrap_or_default());
    h.digest()
}

/// Table digests of the last services asked about, recomputed only when what a service's
/// tables are built from changed: a ring is a pure function of the backends of positive
/// weight in its Maglev input (the plan reuses a ring on that rule too), so equal inputs,
/// policy table, policy, ring length and seed give an equal digest without reading the
/// ring's 65537 slots again.
#[derive(Debug, Default)]
pub struct DigestCache {
    services: HashMap<String, Cached>,
}

#[derive(Debug)]
struct Cached {
    ring_input: Vec<MaglevBackend>,
    ring_len: usize,
    table: Vec<u32>,
    policy: u32,
    seed: u32,
    digest: u64,
}

fn ring_input(service: &PlannedService) -> impl Iterator<Item = &MaglevBackend> {
    service.maglev_input.iter().filter(|b| b.weight > 0)
}

impl DigestCache {
    /// The digest of each service of `services`, in their order; forgets the others.
    pub fn digests<'a>(
        &mut self,
        services: impl IntoIterator<Item = &'a PlannedService>,
        seed: u32,
    ) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        for s in services {
            let fresh = self.services.get(&s.name).is_some_and(|c| {
                c.seed == seed
                    && c.policy == s.policy
                    && c.ring_len == s.ring.len()
                    && c.table == s.table
                    && c.ring_input.iter().eq(ring_input(s))
            });
            if !fresh {
                let cached = Cached {
                    ring_input: ring_input(s).cloned().collect(),
                    ring_len: s.ring.len(),
                    table: s.table.clone(),
                    policy: s.policy,
                    seed,
                    digest: table_digest(s, seed),
                };
                self.services.insert(s.name.clone(), cached);
            }
            out.push((s.name.clone(), self.services[&s.name].digest));
        }
        let asked: std::collections::HashSet<&str> = out.iter().map(|(n, _)| n.as_str()).collect();
        self.services
            .retain(|name, _| asked.contains(name.as_str()));
        out
    }
}

/// One service's digests, as `/metrics`, the API and `lbctl` show them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceDigest {
    pub service: String,
    /// [`table_digest`] of the service as planned.
    pub table: u64,
    /// [`config_digest`] of its entry in the desired state.
    pub config: u64,
}

/// The digests of every service of `plan`, whose desired state is `config`, in plan
/// order (table digests through `cache`).
pub fn service_digests(
    cache: &mut DigestCache,
    plan: &Plan,
    config: &Config,
) -> Vec<ServiceDigest> {
    let tables = cache.digests(&plan.services, config.cluster.hash_seed);
    let entries: HashMap<&str, &ServiceConfig> = config
        .services
        .iter()
        .map(|s| (s.name.as_str(), s))
        .collect();
    tables
        .into_iter()
        .filter_map(|(service, table)| {
            let entry = entries.get(service.as_str())?;
            Some(ServiceDigest {
                config: config_digest(entry),
                service,
                table,
            })
        })
        .collect()
}

#[cfg(test)]
#[path = "table_digest_tests.rs"]
mod tests;
