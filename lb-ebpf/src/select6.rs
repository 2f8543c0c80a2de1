//! Select for IPv6: IPv4's policies (`select.rs`) over the IPv6 hashes. A SYN goes where
//! the service's policy says ([`pick6`]); a packet without a flow entry, and every UDP
//! datagram without one, where the Maglev table says ([`by_table6`]).
use lb_common::{
    hash::{flow_hash6, source_hash6},
    ipv6::FlowKey6,
    service::{POLICY_LEAST_CONN, POLICY_ROUND_ROBIN, POLICY_SOURCE_HASH},
    service_index::PackedMeta,
};

use crate::{maps::hash_seed, select};

/// The backend a SYN of `flow` goes to, by the service's policy.
#[inline(always)]
pub fn pick6(service: PackedMeta, flow: &FlowKey6) -> u32 {
    match service.policy() {
        POLICY_ROUND_ROBIN => select::round_robin(service),
        POLICY_LEAST_CONN => select::least_conn(service),
        _ => by_table6(service, flow),
    }
}

/// The backend the service's Maglev table gives the flow (client -> VIP): hashing what
/// the service's SYNs hash, the client address alone for source hash.
#[inline(always)]
pub fn by_table6(service: PackedMeta, flow: &FlowKey6) -> u32 {
    let hash = match service.policy() {
        POLICY_SOURCE_HASH => source_hash6(&flow.src_addr, hash_seed()),
        _ => flow_hash6(flow, hash_seed()),
    };
    select::ring(service, hash)
}
