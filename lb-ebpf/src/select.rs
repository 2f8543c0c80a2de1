//! Select: which backend a new flow goes to, by the service's policy ([`pick`], for
//! SYNs). A client packet without a flow entry that completes no handshake of ours is
//! placed by the Maglev ring, whatever the policy ([`by_table`]): that is what lets an
//! established connection survive an LB restart, an eviction or an ECMP reshuffle. It
//! hashes what the service's SYNs hash (the client address alone for source hash), so
//! that such a connection of a `maglev` or `source_hash` service stays on the backend its
//! SYN went to.
use aya_ebpf::helpers::bpf_get_prandom_u32;
use lb_common::{
    counters::active_flows,
    flow::FlowKey,
    hash::{flow_hash, source_hash},
    service::{
        policy_table_index, ring_index, NO_BACKEND, POLICY_LEAST_CONN, POLICY_ROUND_ROBIN,
        POLICY_SOURCE_HASH,
    },
    service_index::PackedMeta,
};

use crate::maps::{
    hash_seed, ring_size, ACTIVE_ADJUST, ACTIVE_FLOWS, BACKENDS, POLICY_TABLE, RING, RR_CURSOR,
};

/// The backend a SYN of `flow` goes to, by the service's policy.
#[inline(always)]
pub fn pick(service: PackedMeta, flow: &FlowKey) -> u32 {
    match service.policy() {
        POLICY_ROUND_ROBIN => round_robin(service),
        POLICY_LEAST_CONN => least_conn(service),
        POLICY_SOURCE_HASH => ring(service, source_hash(flow.src_addr, hash_seed())),
        _ => ring(service, flow_hash(flow, hash_seed())),
    }
}

/// The backend the service's Maglev ring gives the flow (client -> VIP): a pure function
/// of the packet, the config and the seed, the same on every node.
#[inline(always)]
pub fn by_table(service: PackedMeta, flow: &FlowKey) -> u32 {
    match service.policy() {
        POLICY_SOURCE_HASH => ring(service, source_hash(flow.src_addr, hash_seed())),
        _ => ring(service, flow_hash(flow, hash_seed())),
    }
}

#[inline(always)]
pub(crate) fn ring(service: PackedMeta, hash: u32) -> u32 {
    let size = ring_size();
    if size == 0 {
        return NO_BACKEND;
    }
    let index = ring_index(service.id(), service.active_slot(), size, hash);
    RING.get(index).copied().unwrap_or(NO_BACKEND)
}

#[inline(always)]
fn table_entry(service: PackedMeta, pos: u32) -> u32 {
    let index = policy_table_index(service.id(), service.active_slot(), pos);
    POLICY_TABLE.get(index).copied().unwrap_or(NO_BACKEND)
}

/// The schedule repeats each backend in proportion to its weight, interleaved; each CPU
/// walks it with its own cursor.
#[inline(always)]
pub(crate) fn round_robin(service: PackedMeta) -> u32 {
    if service.table_len() == 0 {
        return NO_BACKEND;
    }
    let Some(cursor) = RR_CURSOR.get_ptr_mut(service.id()) else {
        return NO_BACKEND;
    };
    let pos = unsafe {
        let pos = *cursor % service.table_len();
        *cursor = pos + 1;
        pos
    };
    table_entry(service, pos)
}

/// Power of two choices: two distinct random candidates, the one with fewer active flows
/// per unit of weight wins. O(1) per new flow, and close to least-connections overall.
#[inline(always)]
pub(crate) fn least_conn(service: PackedMeta) -> u32 {
    let n = service.table_len();
    if n == 0 {
        return NO_BACKEND;
    }
    let r = unsafe { bpf_get_prandom_u32() };
    let first = table_entry(service, r % n);
    if n == 1 {
        return first;
    }
    let second = table_entry(service, (r % n + 1 + (r >> 16) % (n - 1)) % n);
    let (Some(a), Some(b)) = (load(first), load(second)) else {
        return first;
    };
    // a.active / a.weight <= b.active / b.weight, without division; both factors fit in
    // 32 bits, so the products fit in 64 (BPF has no 128-bit multiply).
    if a.0 * b.1 <= b.0 * a.1 {
        first
    } else {
        second
    }
}

/// (active flows, weight) of a backend.
#[inline(always)]
fn load(id: u32) -> Option<(u64, u64)> {
    let opened = ACTIVE_FLOWS.get(id).copied()?;
    let adjust = ACTIVE_ADJUST.get(id).copied().unwrap_or(0);
    let weight = BACKENDS.get(id)?.weight_milli.max(1);
    Some((
        active_flows(opened, adjust).min(u32::MAX as u64),
        weight as u64,
    ))
}
