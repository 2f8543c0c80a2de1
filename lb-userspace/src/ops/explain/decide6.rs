//! Which backend the data path gives a packet of an IPv6 tuple, decided as `lb-ebpf`'s
//! `to_backend6.rs`, `udp6.rs` and `select6.rs` decide it, over the same read-only
//! [`Lookups`] and [`Decision`] as IPv4's `decide`. A hash-placed (`maglev`,
//! `source_hash`) service's TCP tuple is decided as IPv4's, from the SYN cache (its
//! IPv6 slot, `lb_common::syn_cache6`) and the entry: a SYN stays on its slot's backend
//! (a retransmit) or is placed by the table, a later packet follows the entry, else the
//! slot, else the table. A `round_robin` or `least_conn` service's SYN follows its
//! tuple's live entry (a retransmit) or is placed by the policy; a later packet follows
//! the entry while it names a live IPv6 backend of the entry's service, else the Maglev
//! table, statelessly; a UDP datagram follows its entry or the table.
use lb_common::{
    flow::FLOW_F_CLOSED,
    hash::{flow_hash6, source_hash6},
    ipv6::{FlowKey6, ServiceKey6, FAMILY_IPV6},
    net6::is_martian6,
    service::{POLICY_SOURCE_HASH, SERVICE_F_STATELESS_SYN},
    syn_cache6::{syn_handshake_hash6_of_flow, syn_set6},
};

use super::decide::{
    self, by_policy, by_ring, policy_pick, ring_at, slot_in, unless_martian, By, Choice, Decision,
    Entry, Params, PolicyPick, Slot,
};
use crate::{dataplane::Lookups, model::config::Protocol};

/// The decision for the IPv6 tuple `flow` (client -> VIP) of `protocol`, or `None` when
/// no IPv6 service of that protocol owns its destination.
pub fn decide6(
    lookups: &impl Lookups,
    params: &Params,
    flow: &FlowKey6,
    protocol: Protocol,
) -> anyhow::Result<Option<Decision>> {
    let key = ServiceKey6 {
        addr: flow.dst_addr,
        port: flow.dst_port,
        proto: flow.proto,
        family: flow.family,
    };
    let Some(service) = lookups.service6(&key)? else {
        return Ok(None);
    };
    let entry = entry_of6(lookups, flow)?;
    let by_source = service.policy == POLICY_SOURCE_HASH;
    let hash = if by_source {
        source_hash6(&flow.src_addr, params.hash_seed)
    } else {
        flow_hash6(flow, params.hash_seed)
    };
    let ring = ring_at(lookups, params, &service, by_source, hash)?;
    let ring = ring_of_ipv6(lookups, ring)?;
    // `flow6::followed`: the entry's slot holds an IPv6 backend of the entry's service.
    let followed = entry
        .as_ref()
        .filter(|e| e.backend.is_some_and(|b| b.service == e.target.service));
    let martian = is_martian6(&flow.src_addr) || flow.src_addr == flow.dst_addr;
    let slot = match protocol {
        Protocol::Tcp => slot_of6(lookups, params, flow)?,
        Protocol::Udp => None,
    };
    let stateless_syn = service.flags & SERVICE_F_STATELESS_SYN != 0;
    let (policy_pick, new_connection, existing_connection) = match protocol {
        Protocol::Udp => {
            let choice = match followed {
                Some(e) => Choice {
                    backend_id: Some(e.target.backend),
                    by: By::FlowEntry,
                    why: "the tuple's flow entry: every datagram follows it until it is idle \
                          for flow_timeouts.udp"
                        .into(),
                },
                None => by_ring(
                    &ring,
                    By::Table,
                    &format!(
                        "{}: placed by the table, which records the flow",
                        missed(entry.as_ref())
                    ),
                ),
            };
            (PolicyPick::Ring, choice.clone(), choice)
        }
        Protocol::Tcp if stateless_syn => {
            let pick = policy_pick(lookups, &service)?;
            let new = decide::new_connection(&service, entry.as_ref(), slot.as_ref(), &ring, &pick);
            let existing = decide::existing_connection(&service, followed, slot.as_ref(), &ring);
            (pick, new, existing)
        }
        Protocol::Tcp => {
            let pick = policy_pick(lookups, &service)?;
            let new = new_connection(followed, entry.as_ref(), &ring, &pick);
            let existing = match followed {
                Some(e) => Choice {
                    backend_id: Some(e.target.backend),
                    by: By::FlowEntry,
                    why: "the tuple's flow entry".into(),
                },
                None => by_ring(
                    &ring,
                    By::Table,
                    &format!(
                        "{}: placed by the table, statelessly",
                        missed(entry.as_ref())
                    ),
                ),
            };
            (pick, new, existing)
        }
    };
    Ok(Some(Decision {
        service,
        entry,
        slot,
        forwarded: None,
        ring,
        policy_pick,
        new_connection: unless_martian(martian, new_connection),
        existing_connection: unless_martian(martian, existing_connection),
    }))
}

/// The SYN-cache slot of the tuple's handshake (`syn_cache6::slot_of_flow6`), its
/// backend kept only if that slot holds an IPv6 backend.
fn slot_of6(
    lookups: &impl Lookups,
    params: &Params,
    flow: &FlowKey6,
) -> anyhow::Result<Option<Slot>> {
    let set = syn_set6(
        params.hash_seed,
        &flow.src_addr,
        flow.src_port,
        params.syn_cache_mask,
    );
    let handshake = syn_handshake_hash6_of_flow(params.hash_seed, flow);
    Ok(slot_in(lookups, set, handshake)?.map(|mut s| {
        s.backend = s.backend.filter(|b| b.family == FAMILY_IPV6);
        s
    }))
}

/// Why a packet follows no entry.
fn missed(entry: Option<&Entry>) -> &'static str {
    match entry {
        Some(_) => "the entry's backend slot was freed",
        None => "no flow entry",
    }
}

/// A SYN (`to_backend6::open`): it follows a live entry of its tuple as a retransmit,
/// unless that entry is closed or its backend takes no new flows; else the policy.
fn new_connection(
    followed: Option<&Entry>,
    entry: Option<&Entry>,
    ring: &super::decide::RingPick,
    pick: &PolicyPick,
) -> Choice {
    let Some(e) = followed else {
        return by_policy(
            ring,
            pick,
            if entry.is_some() {
                "the entry's backend slot was freed: placed afresh"
            } else {
                "no flow entry"
            },
        );
    };
    if e.target.state & FLOW_F_CLOSED != 0 {
        return by_policy(
            ring,
            pick,
            "the entry is closed: a new connection is placed afresh",
        );
    }
    if e.backend.is_some_and(|b| b.weight_milli == 0) {
        return by_policy(
            ring,
            pick,
            "the entry's backend takes no new flows (draining or unhealthy): placed afresh",
        );
    }
    Choice {
        backend_id: Some(e.target.backend),
        by: By::FlowEntry,
        why: "the tuple has a live entry: a SYN is taken as a retransmit and follows it".into(),
    }
}

/// The tuple's IPv6 flow entry, with its backend slot if that holds an IPv6 backend
/// (`flow6::backend6`), and its idle time.
fn entry_of6(lookups: &impl Lookups, flow: &FlowKey6) -> anyhow::Result<Option<Entry>> {
    let now = lookups.clock()?;
    Ok(match lookups.flow6(flow)? {
        Some(target) => Some(Entry {
            backend: lookups
                .backend(target.backend)?
                .filter(|b| b.family == FAMILY_IPV6),
            idle_secs: now.wrapping_sub(target.last_seen),
            target,
        }),
        None => None,
    })
}

/// The ring's pick, kept only if it names an IPv6 backend (`flow6::backend6`: a slot of
/// the other family drops the packet).
fn ring_of_ipv6(
    lookups: &impl Lookups,
    mut ring: super::decide::RingPick,
) -> anyhow::Result<super::decide::RingPick> {
    if let Some(id) = ring.backend_id {
        if lookups.backend(id)?.is_none_or(|b| b.family != FAMILY_IPV6) {
            ring.backend_id = None;
        }
    }
    Ok(ring)
}
