//! Client -> VIP: find or create the flow, rewrite towards its backend, forward, count.
use lb_common::{
    backend::Backend,
    counters::Reason,
    encap::BACKEND_F_DSR,
    flow::{
        FlowKey, FlowTarget, FLOW_F_CLOSED, FLOW_F_COUNTED, FLOW_F_ESTABLISHED, FLOW_F_FIN_CLIENT,
        FLOW_F_TIER, FLOW_REUSE_IDLE_SECS,
    },
    net::{is_martian, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    service::{SERVICE_F_DSR, SERVICE_F_EDGE, SERVICE_F_RECORD_UNPROVEN, SERVICE_F_STATELESS_SYN},
    service_index::PackedMeta,
    syn_proxy::FLOW_F_SYN_PROXY,
    trace::{
        TRACE_DECISION_FLOW_HIT, TRACE_DECISION_NEW_FLOW, TRACE_DECISION_REFUSED,
        TRACE_DECISION_STATELESS_FORWARD, TRACE_DECISION_STATELESS_SYN, TRACE_DECISION_SYN_CACHE,
        TRACE_DIR_TO_BACKEND, TRACE_NO_BACKEND,
    },
};

use crate::{
    count, dsr, edge,
    flow::{self, Side},
    flow_table, forward,
    frame::Frame,
    lookup::{self, backend_by_id},
    maps::NEXTHOPS,
    packet::Packet,
    return_entry, rewrite, select,
    syn_cache::{self, Acked},
    syn_proxy, trace,
};

/// Handles a packet whose destination may be a VIP. `None`: not to any VIP:port (and no
/// tracked flow), so not ours.
#[inline(always)]
pub fn handle<const EDGE_CHECKED: bool>(ctx: &impl Frame, pkt: &Packet) -> Option<u32> {
    let (existing, syn_service) = existing_or_syn(pkt)?;
    let ((target, backend, new_flow), decision) = match existing {
        Existing::Hit(target, backend) => {
            if !forward::ttl_allows(pkt) {
                let action = count::pass(Reason::PassTtlExpired);
                return Some(refused(pkt, target.service, action, Reason::PassTtlExpired));
            }
            // `lb_place` (EDGE_CHECKED) never takes a proxied service's packets (`lb_edge`
            // hands them to `lb_proxy`): a proxied flow found there was recorded in a race
            // and is dropped rather than translated, which keeps the call, and its stack,
            // out of that program.
            if target.state & FLOW_F_SYN_PROXY != 0
                && (EDGE_CHECKED || !syn_proxy::to_backend(pkt.tcp, &pkt.flow))
            {
                return Some(count::drop(Reason::DropSynProxyOpening));
            }
            ((target, backend, false), TRACE_DECISION_FLOW_HIT)
        }
        miss => {
            let replace = matches!(miss, Existing::Replace);
            match place_miss::<EDGE_CHECKED>(pkt, syn_service, replace)? {
                Ok(placed) => placed,
                Err(action) => return Some(action),
            }
        }
    };
    Some(send(ctx, pkt, &target, &backend, new_flow, decision))
}

/// Where a packet placed on a backend goes: its flow's target, the backend, whether it
/// opened a flow, and the trace decision that placed it.
type Placed = ((FlowTarget, Backend, bool), u8);

/// The packet's flow entry, and for a SYN its service (looked up first). Established
/// flows first: their packets need no service lookup. A SYN to a hash-placed service
/// needs no flow lookup instead: it records nothing, and whatever entry its tuple has is
/// sorted out by the client's ACK (see `existing_flow`). `None`: a SYN to no VIP:port.
#[inline(always)]
fn existing_or_syn(pkt: &Packet) -> Option<(Existing, Option<(PackedMeta, u32)>)> {
    if !pkt.tcp_valid {
        return Some((Existing::Miss, None));
    }
    if !is_syn(pkt) {
        return Some((existing_flow(pkt), None));
    }
    let found = lookup::service_of(pkt)?;
    if found.0.flags() & SERVICE_F_STATELESS_SYN != 0 {
        Some((Existing::Miss, Some(found)))
    } else {
        Some((existing_flow(pkt), Some(found)))
    }
}

/// A packet without a live flow: checked, then placed by its service. `None`: not to
/// any VIP:port; `Err`: refused, with the action taken.
#[inline(always)]
fn place_miss<const EDGE_CHECKED: bool>(
    pkt: &Packet,
    syn_service: Option<(PackedMeta, u32)>,
    replace: bool,
) -> Option<Result<Placed, u32>> {
    let (service, service_at) = match syn_service {
        Some(found) => found,
        None => lookup::service_of(pkt)?,
    };
    // XDP runs before the kernel's martian checks: a source no router forwards from, or
    // the VIP itself, is dropped before it is placed (so no flow of such a source is
    // ever recorded, and a hit never needs the check).
    let refusal = if is_martian(pkt.flow.src_addr) || pkt.flow.src_addr == pkt.flow.dst_addr {
        Some((
            count::drop(Reason::DropMartianSource),
            Reason::DropMartianSource,
        ))
    } else if !pkt.tcp_valid {
        Some((
            count::drop(Reason::DropMalformedTcp),
            Reason::DropMalformedTcp,
        ))
    } else if !forward::ttl_allows(pkt) {
        Some((count::pass(Reason::PassTtlExpired), Reason::PassTtlExpired))
    } else {
        None
    };
    if let Some((action, why)) = refusal {
        return Some(Err(refused(pkt, service.id(), action, why)));
    }
    // A protected service's packet is checked by `lb_edge` first, which hands it back
    // here if it passes.
    if !EDGE_CHECKED && service.flags() & SERVICE_F_EDGE != 0 {
        // `lb_xdp` hands it to `lb_edge` (one tail-call site for the program).
        return Some(Err(edge::protected_action(service.id())));
    }
    Some(match place(pkt, service, service_at, replace) {
        Some(placed) => Ok(placed),
        None => {
            let action = count::drop(Reason::DropNoBackend);
            Err(refused(pkt, service.id(), action, Reason::DropNoBackend))
        }
    })
}

/// Places a checked packet of `service` on a backend. `None`: no backend to take it.
#[inline(always)]
fn place(pkt: &Packet, service: PackedMeta, service_at: u32, replace: bool) -> Option<Placed> {
    if is_syn(pkt) && service.flags() & SERVICE_F_STATELESS_SYN != 0 {
        return stateless_syn(pkt, service, service_at).map(|p| (p, TRACE_DECISION_STATELESS_SYN));
    }
    // Only a SYN (of a service that records them) and the ACK of a handshake whose SYN
    // we placed record a flow. Any other packet without an entry (a connection moved here
    // by ECMP or evicted, or a spoofed ACK, RST or segment) is forwarded by the table and
    // records no flow: its backend's answer records the flow if it is real (see
    // `to_client_miss`).
    let chosen = if is_syn(pkt) {
        let id = select::pick(service, &pkt.flow);
        backend_by_id(id).map(|b| (id, b, true))
    } else {
        handshake_backend(pkt, service)
    };
    match chosen {
        Some((id, backend, false)) => {
            forward_unrecorded(service, id, backend, &pkt.flow, service_at)
                .map(|p| (p, TRACE_DECISION_STATELESS_FORWARD))
        }
        Some((id, backend, true)) => {
            let decision = if is_syn(pkt) {
                TRACE_DECISION_NEW_FLOW
            } else {
                TRACE_DECISION_SYN_CACHE
            };
            record(pkt, service, id, backend, replace).map(|p| (p, decision))
        }
        None if !is_syn(pkt) => stateless_forward(pkt, service, service_at)
            .map(|p| (p, TRACE_DECISION_STATELESS_FORWARD)),
        None => None,
    }
}

/// Rewrites a placed packet towards `backend`, counts it, forwards it; traced if sampled.
#[inline(always)]
fn send(
    ctx: &impl Frame,
    pkt: &Packet,
    target: &FlowTarget,
    backend: &Backend,
    new_flow: bool,
    decision: u8,
) -> u32 {
    // Direct server return: the packet keeps its addresses and is wrapped (or
    // re-addressed) by `lb_dsr`, a program of its own for a stack of its own, which counts
    // it too.
    if backend.flags & BACKEND_F_DSR != 0 {
        return dsr::stash(target, new_flow);
    }
    count::to_backend(target, pkt.frame_len, new_flow);
    count::attempt_to_backend(target.backend, pkt.tcp_flags);
    rewrite::dnat(pkt, backend.addr, backend.port);
    let action = match NEXTHOPS.get_ptr_mut(target.backend) {
        Some(cache) => forward::forward(ctx, pkt, cache),
        None => forward::forward(ctx, pkt, core::ptr::null_mut()),
    };
    if trace::sampled(target.service) {
        let reason = trace::forwarded_reason(action);
        let (service, backend) = (target.service, target.backend);
        trace::emit(
            pkt,
            service,
            backend,
            TRACE_DIR_TO_BACKEND,
            decision,
            action,
            reason,
        );
    }
    action
}

/// Drops a packet to service `service` for `why`: counted, traced if sampled.
#[inline(always)]
pub fn refuse(pkt: &Packet, service: u32, why: Reason) -> u32 {
    let action = count::drop(why);
    refused(pkt, service, action, why)
}

/// A packet to service `service` that reached no backend: traced if sampled.
#[inline(always)]
fn refused(pkt: &Packet, service: u32, action: u32, why: Reason) -> u32 {
    if trace::sampled(service) {
        let (dir, how) = (TRACE_DIR_TO_BACKEND, TRACE_DECISION_REFUSED);
        trace::emit(pkt, service, TRACE_NO_BACKEND, dir, how, action, why as u32);
    }
    action
}

enum Existing {
    /// A live flow and its backend.
    Hit(FlowTarget, Backend),
    /// An entry that must be replaced: it belongs to an earlier connection on the tuple
    /// (a SYN on a closed flow, or the first packet after a hash-placed service's SYN, see
    /// `opened_by_a_syn`), or its backend slot was freed.
    Replace,
    Miss,
}

#[inline(always)]
fn existing_flow(pkt: &Packet) -> Existing {
    let Some(entry) = flow_table::find(&pkt.flow) else {
        return Existing::Miss;
    };
    let target = unsafe { *entry };
    let Some(backend) = backend_by_id(target.backend) else {
        return Existing::Replace;
    };
    if is_syn(pkt) {
        // A SYN opens a connection even when its tuple has an entry (a client reusing
        // a source port, or retransmitting): after a close, or when the entry's backend
        // takes no new flows any more (unhealthy, draining), it is placed afresh instead
        // of following the entry; a retransmit to an eligible backend stays put.
        if target.state & FLOW_F_CLOSED != 0 {
            return Existing::Replace;
        }
        if backend.weight_milli == 0 {
            flow::abandon(entry);
            return Existing::Replace;
        }
    }
    let now = lookup::now_secs();
    if !is_syn(pkt)
        && may_be_reused(&target, &backend, now)
        && opened_by_a_syn(&pkt.flow, pkt.ack_seq(), &target)
    {
        flow::abandon(entry);
        return Existing::Replace;
    }
    flow::observe(entry, pkt.tcp_flags, Side::Client);
    flow::touch(entry, &target, now, is_syn(pkt));
    if pkt.has_payload || pkt.tcp_flags & (TCP_FIN | TCP_RST) != 0 {
        ensure_return_entry(pkt, &target, &backend);
    }
    Existing::Hit(target, backend)
}

/// Whether an entry may belong to an earlier connection on its tuple rather than to the
/// packet's: closed, half-closed by its client, on a backend that takes no new flows, or
/// idle for a while. Only then is the SYN cache consulted, so a busy flow's packets never
/// read it. Half-closed counts because a client's kernel reuses a port only once its
/// socket is gone, and in a tier that is usually all a node sees of a close: the
/// backend's FIN returns through any node.
#[inline(always)]
pub fn may_be_reused(target: &FlowTarget, backend: &Backend, now: u32) -> bool {
    target.state & (FLOW_F_CLOSED | FLOW_F_FIN_CLIENT) != 0
        || backend.weight_milli == 0
        || now.wrapping_sub(target.last_seen) > FLOW_REUSE_IDLE_SECS
}

/// Whether a SYN of this tuple went through the SYN cache since the entry's connection
/// was recorded, and this packet proves its client saw that SYN's SYN-ACK: a hash-placed
/// service's SYN looks up no flow, so a client reusing the tuple of a recorded flow
/// leaves only its slot; the first later packet that finds the slot and acknowledges the
/// SYN-ACK that passed (see `lb_common::syn_cache::syn_ack_proof`) is the new
/// connection's, and its entry replaces the old one (see `handshake_backend`). A packet
/// that finds the slot but proves nothing is counted as an unproven ACK and follows the
/// entry: so a spoofed SYN and ACK of the tuple of an entry that may be reused (closed,
/// idle, or on a backend taking no new flows) leave it, and its client, where they were;
/// except in a tier (`FLOW_F_TIER`), where the proof is not asked for, as when the entry
/// was recorded. A BPF function of its own (`inline(never)`), so that its locals take a frame of its own
/// rather than room in the client path's (docs/architecture.md, The stack).
#[inline(never)]
fn opened_by_a_syn(flow: &FlowKey, ack: u32, entry: &FlowTarget) -> bool {
    let service = entry.service;
    let Some((id, proven)) = syn_cache::slot_of_flow(flow).and_then(|s| s.acked(ack)) else {
        return false;
    };
    if !backend_by_id(id).is_some_and(|b| b.service == service) {
        return false;
    }
    if !proven {
        count::unproven_ack(service, id);
    }
    // In a tier the new handshake's SYN-ACK usually passed through another node.
    proven || entry.state & FLOW_F_TIER != 0
}

#[inline(always)]
fn is_syn(pkt: &Packet) -> bool {
    pkt.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN
}

/// A SYN to a hash-placed service: forwarded to the backend its hash picks, recording no
/// flow, only a SYN-cache slot (see `lb_common::syn_cache`) for its SYN-ACK and for
/// the client's ACK, which records the flow on the same backend. A retransmitted SYN
/// whose slot names a backend still taking new flows stays there.
#[inline(always)]
fn stateless_syn(
    pkt: &Packet,
    service: PackedMeta,
    service_at: u32,
) -> Option<(FlowTarget, Backend, bool)> {
    let slot = syn_cache::slot_of_flow(&pkt.flow)?;
    let retransmitted = slot
        .backend()
        .and_then(|id| Some((id, backend_by_id(id)?)))
        .filter(|(_, b)| b.weight_milli > 0 && b.service == service.id());
    let (id, backend) = match retransmitted {
        // The client sends the SYN again before any ACK spent the slot: its handshake got
        // no answer (the passive signal of a backend whose SYN-ACKs the node never sees).
        Some(placed) => {
            count::syn_retransmit(placed.0);
            placed
        }
        None => {
            let id = select::pick(service, &pkt.flow);
            let backend = backend_by_id(id)?;
            slot.record(service_at, id);
            (id, backend)
        }
    };
    let target = FlowTarget::unrecorded(id, service.id());
    Some((target, backend, false))
}

/// The backend of the handshake a client's non-SYN packet completes, if its SYN (to a
/// hash-placed service) left a SYN-cache slot naming it, and whether the packet
/// acknowledges the SYN-ACK that passed. If it does, the slot is spent, and the packet
/// records the flow on that backend, even if the table changed since the SYN. If not, it
/// is counted (for the service and the SYN's backend) and forwarded to that backend
/// recording nothing, like a packet without a slot: to the SYN's backend rather than by
/// the table, so that a client that saw an older SYN-ACK than the last (see
/// `lb_common::syn_cache`) reaches its handshake; a service of a tier
/// (`SERVICE_F_RECORD_UNPROVEN`) records the flow then too.
#[inline(always)]
fn handshake_backend(pkt: &Packet, service: PackedMeta) -> Option<(u32, Backend, bool)> {
    if service.flags() & SERVICE_F_STATELESS_SYN == 0 {
        return None;
    }
    // In a tier the SYN-ACK usually came back through another node: an unproven ACK
    // records the flow all the same (see `SERVICE_F_RECORD_UNPROVEN`).
    let tier = service.flags() & SERVICE_F_RECORD_UNPROVEN != 0;
    let (id, proven) = match syn_cache::slot_of_flow(&pkt.flow)?.take_acked(pkt.ack_seq(), tier) {
        Acked::Proven(id) => (id, true),
        Acked::Unproven(id) => (id, false),
        Acked::NoSlot => return None,
    };
    // A DSR backend's SYN-ACK never passes through the node: no ACK can prove it.
    if !proven && service.flags() & SERVICE_F_DSR == 0 {
        count::unproven_ack(service.id(), id);
    }
    let backend = backend_by_id(id).filter(|b| b.service == service.id())?;
    Some((id, backend, proven || tier))
}

/// A client packet without a flow entry that completes no handshake of ours: forwarded
/// to the backend the table gives its tuple, recording no flow and counting no new one.
/// It leaves a SYN-cache slot of its own kind (see `lb_common::syn_cache::forwarded_hash`),
/// which only the backend's reply can use: a reply that finds it records the flow (see
/// `to_client_miss`). A flood of such packets only overwrites slots, as a SYN flood does.
#[inline(always)]
fn stateless_forward(
    pkt: &Packet,
    service: PackedMeta,
    service_at: u32,
) -> Option<(FlowTarget, Backend, bool)> {
    let id = select::by_table(service, &pkt.flow);
    let backend = backend_by_id(id)?;
    forward_unrecorded(service, id, backend, &pkt.flow, service_at)
}

/// Forwards a client packet without a flow entry to backend `id`, recording no flow (see
/// `stateless_forward`).
#[inline(always)]
fn forward_unrecorded(
    service: PackedMeta,
    id: u32,
    backend: Backend,
    flow: &FlowKey,
    service_at: u32,
) -> Option<(FlowTarget, Backend, bool)> {
    syn_cache::forwarded_slot_of_flow(flow)?.record(service_at, id);
    let target = FlowTarget::unrecorded(id, service.id());
    count::stateless_forward(&target);
    Some((target, backend, false))
}

/// Records the flow on backend `id` (its slot, or an entry per direction in the LRU maps),
/// counted as new and active.
#[inline(always)]
fn record(
    pkt: &Packet,
    service: PackedMeta,
    id: u32,
    backend: Backend,
    replace: bool,
) -> Option<(FlowTarget, Backend, bool)> {
    let target = FlowTarget {
        backend: id,
        service: service.id(),
        // The handshake's ACK records an established flow.
        state: if is_syn(pkt) {
            FLOW_F_COUNTED
        } else {
            FLOW_F_COUNTED | FLOW_F_ESTABLISHED
        } | if service.flags() & SERVICE_F_RECORD_UNPROVEN != 0 {
            FLOW_F_TIER
        } else {
            0
        },
        last_seen: lookup::now_secs(),
        _pad: 0,
    };
    // Two CPUs may miss on the same new flow at once (a retransmitted SYN): only the
    // insert that creates the entry counts it, and the other CPU follows that entry.
    if flow_table::record(&pkt.flow, &target, !replace).is_err() {
        let existing = unsafe { *flow_table::find(&pkt.flow)? };
        let backend = backend_by_id(existing.backend)?;
        return Some((existing, backend, false));
    }
    flow::opened(id);
    // Not for a DSR flow, whose replies never cross the node.
    if backend.flags & BACKEND_F_DSR == 0 {
        insert_return_entry(pkt, &target, &backend);
    }
    Some((target, backend, true))
}

/// Records the reply direction of a new flow.
#[inline(always)]
fn insert_return_entry(pkt: &Packet, target: &FlowTarget, backend: &Backend) {
    return_entry::insert(
        pkt.flow.reply_from(backend.addr, backend.port),
        pkt.flow.dst_addr,
        pkt.flow.dst_port,
        target,
    );
}

/// In the LRU maps the two directions' entries are evicted independently; a client packet
/// that will be answered (data, FIN, RST) puts a lost reply-direction entry back before
/// the backend answers (a connection in a slot finds its slot). Pure ACKs are not
/// answered, so they skip the lookup, and so does a DSR flow, whose replies never cross
/// the node.
#[inline(always)]
fn ensure_return_entry(pkt: &Packet, target: &FlowTarget, backend: &Backend) {
    if backend.flags & BACKEND_F_DSR == 0
        && flow_table::find_return(&pkt.flow.reply_from(backend.addr, backend.port)).is_none()
    {
        insert_return_entry(pkt, target, backend);
    }
}
