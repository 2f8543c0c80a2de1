//! Which backend the data path gives a packet of a tuple, decided as `lb-ebpf`'s
//! `to_backend.rs` and `select.rs` decide it, in the same order and with the same
//! `lb_common` hashes, but over read-only [`Lookups`]: nothing is recorded, no slot is
//! taken, no cursor moves. Two packets are asked about: a SYN (a new connection) and a
//! later packet of the connection (an ACK: an existing one). A UDP tuple's datagram is
//! decided by `decide_udp`, over the same ring.
use lb_common::{
    backend::Backend,
    flow::{FlowKey, FlowTarget, FLOW_F_CLOSED, FLOW_REUSE_IDLE_SECS},
    hash::{flow_hash, source_hash},
    net::is_martian,
    service::{
        policy_table_index, ring_index, ServiceMeta, POLICY_LEAST_CONN, POLICY_ROUND_ROBIN,
        POLICY_SOURCE_HASH, SERVICE_F_STATELESS_SYN,
    },
    syn_cache::{forwarded_hash, syn_handshake_hash_of_flow, syn_set, SynEntry},
};

use crate::dataplane::Lookups;

/// What the data path was configured with (globals of the loaded object).
#[derive(Debug, Clone, Copy)]
pub struct Params {
    pub hash_seed: u32,
    pub ring_size: u32,
    pub syn_cache_mask: u32,
}

/// The whole decision for one tuple, in backend ids.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub service: ServiceMeta,
    pub entry: Option<Entry>,
    pub slot: Option<Slot>,
    /// The slot a client packet of the tuple forwarded without an entry left, which
    /// only its backend's reply may use (to record the flow); no client packet takes it.
    pub forwarded: Option<Slot>,
    /// Where the Maglev ring places a packet of the tuple without an entry.
    pub ring: RingPick,
    /// Where a SYN without an entry or slot to follow goes, by the service's policy.
    pub policy_pick: PolicyPick,
    pub new_connection: Choice,
    pub existing_connection: Choice,
}

/// The tuple's flow entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub target: FlowTarget,
    /// Its backend slot, if that still holds a backend.
    pub backend: Option<Backend>,
    /// Seconds since a client packet of the flow was last seen, by the data path's clock.
    pub idle_secs: u32,
}

/// The SYN-cache slot holding the tuple's handshake.
#[derive(Debug, Clone, PartialEq)]
pub struct Slot {
    pub set: u32,
    pub way: usize,
    pub backend_id: u32,
    /// The backend slot, if it holds a backend.
    pub backend: Option<Backend>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingPick {
    /// Hashed on the client address alone (source hash) or on the whole tuple.
    pub by_source: bool,
    pub hash: u32,
    /// Index into the service's live slot of the ring (0..ring_size).
    pub index: u32,
    pub backend_id: Option<u32>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PolicyPick {
    /// Maglev or source hash: the ring.
    Ring,
    /// The next entry of the weighted schedule; each CPU has its own cursor.
    RoundRobin {
        next_by_cpu: Vec<(u32, Option<u32>)>,
    },
    /// The less loaded of two random candidates; the candidates and their load.
    LeastConn { candidates: Vec<Candidate> },
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub backend_id: u32,
    pub active_flows: u64,
    pub weight_milli: u32,
}

/// Where a packet goes and what decided it.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    /// The backend, when it does not depend on the receiving CPU or on chance.
    pub backend_id: Option<u32>,
    pub by: By,
    /// Why, in a sentence.
    pub why: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    FlowEntry,
    SynCache,
    /// The ring, with no state recorded for this packet (a non-SYN without an entry).
    Table,
    /// The service's policy for a new connection.
    Policy,
    /// No backend can take it: the packet is dropped.
    Dropped,
}

/// The decision for the tuple `flow` (client -> VIP), or `None` when no service owns
/// its destination (the data path passes such packets to the kernel).
pub fn decide(
    lookups: &impl Lookups,
    params: &Params,
    flow: &FlowKey,
) -> anyhow::Result<Option<Decision>> {
    let Some(service) = lookups.service(&flow.service_key())? else {
        return Ok(None);
    };
    let entry = entry_of(lookups, flow)?;
    let handshake = syn_handshake_hash_of_flow(params.hash_seed, flow);
    let slot = slot_of(lookups, params, flow, handshake)?;
    let forwarded = slot_of(lookups, params, flow, forwarded_hash(handshake))?;
    let ring = ring_pick(lookups, params, &service, flow)?;
    let policy_pick = policy_pick(lookups, &service)?;
    let martian = is_martian(flow.src_addr) || flow.src_addr == flow.dst_addr;
    let new_connection = unless_martian(
        martian,
        new_connection(&service, entry.as_ref(), slot.as_ref(), &ring, &policy_pick),
    );
    let existing_connection = unless_martian(
        martian,
        existing_connection(&service, entry.as_ref(), slot.as_ref(), &ring),
    );
    Ok(Some(Decision {
        service,
        entry,
        slot,
        forwarded,
        ring,
        policy_pick,
        new_connection,
        existing_connection,
    }))
}

/// The tuple's flow entry, with its backend slot and idle time.
pub(super) fn entry_of(lookups: &impl Lookups, flow: &FlowKey) -> anyhow::Result<Option<Entry>> {
    let now = lookups.clock()?;
    Ok(match lookups.flow(flow)? {
        Some(target) => Some(Entry {
            backend: lookups.backend(target.backend)?,
            idle_secs: now.wrapping_sub(target.last_seen),
            target,
        }),
        None => None,
    })
}

/// A packet the data path would place (anything but a flow-entry hit) from a martian
/// source, or from the VIP itself, is dropped before it is placed.
pub(super) fn unless_martian(martian: bool, choice: Choice) -> Choice {
    if !martian || choice.by == By::FlowEntry {
        return choice;
    }
    Choice {
        backend_id: None,
        by: By::Dropped,
        why: "the client address is a martian source (or the VIP itself): dropped before it is placed".into(),
    }
}

fn stateless_syn(service: &ServiceMeta) -> bool {
    service.flags & SERVICE_F_STATELESS_SYN != 0
}

/// The way of the tuple's set holding the slot tagged from `handshake`
/// (`syn_cache::FlowSlot::find`).
fn slot_of(
    lookups: &impl Lookups,
    params: &Params,
    flow: &FlowKey,
    handshake: u32,
) -> anyhow::Result<Option<Slot>> {
    let set = syn_set(
        params.hash_seed,
        flow.src_addr,
        flow.src_port,
        params.syn_cache_mask,
    );
    slot_in(lookups, set, handshake)
}

/// The way of SYN-cache set `set` holding the slot tagged from `handshake`, of either
/// family.
pub(super) fn slot_in(
    lookups: &impl Lookups,
    set: u32,
    handshake: u32,
) -> anyhow::Result<Option<Slot>> {
    let Some(ways) = lookups.syn_set(set)? else {
        return Ok(None);
    };
    let Some((way, e)) = ways
        .ways
        .iter()
        .map(|w| w.entry)
        .enumerate()
        .find(|(_, e): &(usize, SynEntry)| e.is_of(handshake))
    else {
        return Ok(None);
    };
    Ok(Some(Slot {
        set,
        way,
        backend_id: e.backend(),
        backend: lookups.backend(e.backend())?,
    }))
}

/// `select::ring` with the hash `select::pick` uses for the policy.
pub(super) fn ring_pick(
    lookups: &impl Lookups,
    params: &Params,
    service: &ServiceMeta,
    flow: &FlowKey,
) -> anyhow::Result<RingPick> {
    let by_source = service.policy == POLICY_SOURCE_HASH;
    let hash = if by_source {
        source_hash(flow.src_addr, params.hash_seed)
    } else {
        flow_hash(flow, params.hash_seed)
    };
    ring_at(lookups, params, service, by_source, hash)
}

/// The ring's pick for `hash` (of the client address alone when `by_source`), for
/// either family.
pub(super) fn ring_at(
    lookups: &impl Lookups,
    params: &Params,
    service: &ServiceMeta,
    by_source: bool,
    hash: u32,
) -> anyhow::Result<RingPick> {
    if params.ring_size == 0 {
        return Ok(RingPick {
            by_source,
            hash,
            index: 0,
            backend_id: None,
        });
    }
    let at = ring_index(service.id, service.active_slot, params.ring_size, hash);
    Ok(RingPick {
        by_source,
        hash,
        index: hash % params.ring_size,
        backend_id: present(lookups, lookups.ring_entry(at)?)?,
    })
}

/// `id` if its slot holds a backend (`maps::backend_by_id`): a ring or table entry
/// naming none (`NO_BACKEND`, or past the array's end) drops the packet.
fn present(lookups: &impl Lookups, id: Option<u32>) -> anyhow::Result<Option<u32>> {
    Ok(match id {
        Some(id) => lookups.backend(id)?.map(|_| id),
        None => None,
    })
}

fn table_entry(
    lookups: &impl Lookups,
    service: &ServiceMeta,
    pos: u32,
) -> anyhow::Result<Option<u32>> {
    lookups.policy_entry(policy_table_index(service.id, service.active_slot, pos))
}

pub(super) fn policy_pick(
    lookups: &impl Lookups,
    service: &ServiceMeta,
) -> anyhow::Result<PolicyPick> {
    let n = service.table_len;
    Ok(match service.policy {
        POLICY_ROUND_ROBIN => {
            let mut next_by_cpu = Vec::new();
            for (cpu, cursor) in lookups.rr_cursors(service.id)?.into_iter().enumerate() {
                let next = if n == 0 {
                    None
                } else {
                    present(lookups, table_entry(lookups, service, cursor % n)?)?
                };
                next_by_cpu.push((cpu as u32, next));
            }
            PolicyPick::RoundRobin { next_by_cpu }
        }
        POLICY_LEAST_CONN => {
            let mut candidates: Vec<Candidate> = Vec::new();
            for pos in 0..n {
                let Some(id) = present(lookups, table_entry(lookups, service, pos)?)? else {
                    continue;
                };
                if candidates.iter().any(|c| c.backend_id == id) {
                    continue;
                }
                let weight_milli = lookups.backend(id)?.map_or(0, |b| b.weight_milli);
                candidates.push(Candidate {
                    backend_id: id,
                    active_flows: lookups.active_flows_of(id)?,
                    weight_milli,
                });
            }
            PolicyPick::LeastConn { candidates }
        }
        _ => PolicyPick::Ring,
    })
}

/// Where a SYN goes that follows no entry and no slot: `select::pick(.., syn = true)`.
pub(super) fn by_policy(ring: &RingPick, pick: &PolicyPick, why: &str) -> Choice {
    match pick {
        PolicyPick::Ring => by_ring(ring, By::Policy, why),
        PolicyPick::RoundRobin { next_by_cpu } => {
            let mut ids: Vec<Option<u32>> = next_by_cpu.iter().map(|(_, id)| *id).collect();
            ids.dedup();
            let backend_id = match ids.as_slice() {
                [Some(id)] => Some(*id),
                _ => None,
            };
            Choice {
                backend_id,
                by: if ids.iter().all(Option::is_none) {
                    By::Dropped
                } else {
                    By::Policy
                },
                why: format!(
                    "{why}: round robin, the next entry of the schedule of the CPU that receives it"
                ),
            }
        }
        PolicyPick::LeastConn { candidates } => {
            let backend_id = match candidates.as_slice() {
                [only] => Some(only.backend_id),
                _ => None,
            };
            Choice {
                backend_id,
                by: if candidates.is_empty() { By::Dropped } else { By::Policy },
                why: format!(
                    "{why}: least connections, the emptier of two random candidates (per unit of weight)"
                ),
            }
        }
    }
}

pub(super) fn by_ring(ring: &RingPick, by: By, why: &str) -> Choice {
    let kind = if ring.by_source {
        "source-hash"
    } else {
        "Maglev"
    };
    match ring.backend_id {
        Some(id) => Choice {
            backend_id: Some(id),
            by,
            why: format!("{why}: {kind} ring slot {}", ring.index),
        },
        _ => Choice {
            backend_id: None,
            by: By::Dropped,
            why: format!(
                "{why}: {kind} ring slot {} names no backend: dropped",
                ring.index
            ),
        },
    }
}

/// A SYN (`to_backend::handle` with `is_syn`; `syn_cache6::place` for an IPv6 tuple of a
/// hash-placed service).
pub(super) fn new_connection(
    service: &ServiceMeta,
    entry: Option<&Entry>,
    slot: Option<&Slot>,
    ring: &RingPick,
    pick: &PolicyPick,
) -> Choice {
    if stateless_syn(service) {
        // `stateless_syn`: a retransmitted SYN stays where its slot says, while that
        // backend takes new flows; no flow is looked up.
        if let Some(s) = slot {
            if s.backend
                .is_some_and(|b| b.weight_milli > 0 && b.service == service.id)
            {
                return Choice {
                    backend_id: Some(s.backend_id),
                    by: By::SynCache,
                    why: "a handshake of this tuple is in flight: a SYN (a retransmit) stays on the backend its SYN-cache slot names".into(),
                };
            }
        }
        return by_policy(
            ring,
            pick,
            "a SYN records no flow and is placed by the table",
        );
    }
    // `existing_flow` for a SYN.
    let Some(e) = entry else {
        return by_policy(ring, pick, "no flow entry");
    };
    let Some(backend) = e.backend else {
        return by_policy(
            ring,
            pick,
            "the entry's backend slot was freed: placed afresh",
        );
    };
    if e.target.state & FLOW_F_CLOSED != 0 {
        return by_policy(
            ring,
            pick,
            "the entry is closed: a new connection is placed afresh",
        );
    }
    if backend.weight_milli == 0 {
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

/// A later packet of the connection (`to_backend::handle` without `is_syn`; for an IPv6
/// tuple of a hash-placed service, `to_backend6::handle` and `syn_cache6`, which decide
/// alike).
pub(super) fn existing_connection(
    service: &ServiceMeta,
    entry: Option<&Entry>,
    slot: Option<&Slot>,
    ring: &RingPick,
) -> Choice {
    let slot_backend = slot.and_then(|s| Some((s.backend_id, s.backend?)));
    let mut why = "no flow entry";
    if let Some(e) = entry {
        match e.backend {
            None => why = "the entry's backend slot was freed",
            Some(backend) => {
                // `may_be_reused` and `opened_by_a_syn`.
                let may_be_reused = e.target.state & FLOW_F_CLOSED != 0
                    || backend.weight_milli == 0
                    || e.idle_secs > FLOW_REUSE_IDLE_SECS;
                let opened_by_a_syn =
                    slot_backend.is_some_and(|(_, b)| b.service == e.target.service);
                if may_be_reused && opened_by_a_syn {
                    why = "the entry belongs to an earlier connection: a SYN of this tuple went through the SYN cache since";
                } else {
                    return Choice {
                        backend_id: Some(e.target.backend),
                        by: By::FlowEntry,
                        why: "the tuple's flow entry".into(),
                    };
                }
            }
        }
    }
    // `handshake_backend` (the ACK of a handshake whose SYN left a slot records the flow
    // there), else `stateless_forward` (by the ring, recording no flow).
    if stateless_syn(service) {
        if let Some((id, _)) = slot_backend.filter(|(_, b)| b.service == service.id) {
            return Choice {
                backend_id: Some(id),
                by: By::SynCache,
                why: format!("{why}: the SYN-cache slot of its handshake names the backend"),
            };
        }
    }
    by_ring(
        ring,
        By::Table,
        &format!("{why}: placed by the table, statelessly"),
    )
}
