//! IPv6 handshakes in the SYN cache (see `lb_common::syn_cache6`), as `to_backend.rs`
//! and `lb_reply` run IPv4's: a hash-placed IPv6 service's SYN records no flow, only a
//! slot naming its backend ([`place`]); the backend's SYN-ACK, which finds no return
//! entry, is translated through that slot and leaves its proof beside it ([`answer`]);
//! the client's ACK that acknowledges it records the flow on the slot's backend, an ACK
//! that does not is forwarded there unrecorded, counted as unproven. A later client
//! packet of a tuple whose entry may belong to an earlier connection asks the cache
//! whether a new handshake completed ([`reopened`]).
use aya_ebpf::programs::XdpContext;
use lb_common::{
    backend::Backend,
    counters::Reason,
    flow::{FlowTarget, FLOW_F_COUNTED, FLOW_F_ESTABLISHED, FLOW_F_TIER},
    ipv6::{fold, Addr6, FlowKey6},
    net::{TCP_ACK, TCP_RST, TCP_SYN},
    service::{SERVICE_F_DSR, SERVICE_F_RECORD_UNPROVEN},
    service_index::PackedMeta,
    syn_cache::{syn_ack_proof, syn_tag_for, SynEntry, SynWay},
    syn_cache6::{syn_handshake_hash6, syn_handshake_hash6_of_flow},
};

use crate::{
    count,
    flow6::{self, backend6, new_target, Placed6},
    forward6, lookup,
    maps::{hash_seed, RETURN_FLOWS6, SERVICE_VIPS6},
    parse6::Packet6,
    rewrite6, select6,
    syn_cache::{self, Acked, FlowSlot, Set},
    to_client6, wire,
};

/// The set and hash of the IPv6 handshake `flow` (client -> VIP).
#[inline(always)]
fn slot_of_flow6(flow: &FlowKey6) -> Option<FlowSlot> {
    let set = syn_cache::set(fold(&flow.src_addr), flow.src_port)?;
    Some(FlowSlot::of(
        set,
        syn_handshake_hash6_of_flow(hash_seed(), flow),
    ))
}

/// A packet without a live flow entry to a hash-placed IPv6 service
/// (`SERVICE_F_STATELESS_SYN`): a SYN leaves a slot and records nothing; the client's
/// ACK of a handshake in the cache records the flow if it proves the SYN-ACK (or in a
/// tier); anything else goes where the table sends it, unrecorded. `replace`: the tuple
/// has an entry of an earlier connection, which a recorded flow overwrites. `None`: no
/// backend to take it. The flag: a flow was recorded.
#[inline(always)]
pub fn place(
    pkt: &Packet6,
    service: PackedMeta,
    syn: bool,
    replace: bool,
) -> Option<(Placed6, bool)> {
    if syn {
        return stateless_syn(pkt, service).map(|p| (p, false));
    }
    let tier = service.flags() & SERVICE_F_RECORD_UNPROVEN != 0;
    let acked = match slot_of_flow6(&pkt.flow) {
        Some(slot) => slot.take_acked(ack_number(pkt), tier),
        None => Acked::NoSlot,
    };
    let (id, record) = match acked {
        Acked::Proven(id) => (id, true),
        Acked::Unproven(id) => {
            // A DSR backend's SYN-ACK never passes through the node: no ACK proves it.
            if service.flags() & SERVICE_F_DSR == 0 {
                count::unproven_ack(service.id(), id);
            }
            (id, tier)
        }
        Acked::NoSlot => (select6::by_table6(service, &pkt.flow), false),
    };
    let (backend, addr) = backend6(id).filter(|(b, _)| b.service == service.id())?;
    if !record {
        let target = FlowTarget::unrecorded(id, service.id());
        count::stateless_forward(&target);
        return Some(((target, backend, addr), false));
    }
    let state = FLOW_F_COUNTED | FLOW_F_ESTABLISHED | if tier { FLOW_F_TIER } else { 0 };
    let target = new_target(id, service.id(), state, lookup::now_secs());
    flow6::record(pkt, &target, backend, addr, replace)
}

/// A SYN: to the backend its slot names if it retransmits a handshake whose backend
/// still takes new flows, else to the policy's pick, whose slot it writes.
#[inline(always)]
fn stateless_syn(pkt: &Packet6, service: PackedMeta) -> Option<Placed6> {
    let slot = slot_of_flow6(&pkt.flow)?;
    let retransmitted = slot
        .backend()
        .and_then(backend_of)
        .filter(|(_, b, _)| b.weight_milli > 0 && b.service == service.id());
    let (id, backend, addr) = match retransmitted {
        Some(placed) => {
            count::syn_retransmit(placed.0);
            placed
        }
        None => {
            let placed = backend_of(select6::pick6(service, &pkt.flow))?;
            slot.record(service.id(), placed.0);
            placed
        }
    };
    Some((FlowTarget::unrecorded(id, service.id()), backend, addr))
}

#[inline(always)]
fn backend_of(id: u32) -> Option<(u32, Backend, Addr6)> {
    backend6(id).map(|(b, a)| (id, b, a))
}

/// Whether a client packet of a tuple whose entry (`target`) may belong to an earlier
/// connection (`to_backend::may_be_reused`) completes a new handshake of the tuple that
/// went through the SYN cache (as IPv4's `to_backend::opened_by_a_syn`): then the entry
/// is replaced. A packet that finds the slot but proves nothing is counted as unproven
/// and follows the entry, except in a tier (`FLOW_F_TIER`).
#[inline(always)]
pub fn reopened(pkt: &Packet6, target: &FlowTarget) -> bool {
    opened_by_a_syn6(&pkt.flow, ack_number(pkt), target)
}

#[inline(always)]
fn opened_by_a_syn6(flow: &FlowKey6, ack: u32, entry: &FlowTarget) -> bool {
    let service = entry.service;
    let Some((id, proven)) = slot_of_flow6(flow).and_then(|s| s.acked(ack)) else {
        return false;
    };
    if !backend6(id).is_some_and(|(b, _)| b.service == service) {
        return false;
    }
    if !proven {
        count::unproven_ack(service, id);
    }
    proven || entry.state & FLOW_F_TIER != 0
}

/// A backend's SYN or RST (an answer to a handshake): if a slot of its client's set
/// names a handshake from that client to this backend, a SYN-ACK leaves its proof there,
/// and the answer is translated by the tuple's return entry if it has one (a client
/// reusing the tuple of a recorded flow), else by the slot. `None`: no slot names it.
#[inline(always)]
pub fn answer(ctx: &XdpContext, pkt: &Packet6) -> Option<u32> {
    let set = syn_cache::set(fold(&pkt.flow.dst_addr), pkt.flow.dst_port)?;
    let handshake = answered_in(&set, 0, &pkt.flow).or_else(|| answered_in(&set, 1, &pkt.flow))?;
    if pkt.tcp_flags & (TCP_SYN | TCP_ACK | TCP_RST) == TCP_SYN | TCP_ACK {
        let proof = syn_ack_proof(seq_number(pkt).wrapping_add(1));
        let p = handshake.way;
        unsafe { core::ptr::write_volatile(core::ptr::addr_of_mut!((*p).ack), proof) }
    }
    if let Some(entry) = RETURN_FLOWS6.get_ptr_mut(pkt.flow) {
        return Some(to_client6::handle(ctx, pkt, entry));
    }
    if !pkt.hop_allows() {
        return Some(count::pass(Reason::PassTtlExpired));
    }
    rewrite6::snat_tcp(pkt, &handshake.vip, handshake.vport);
    count::to_client(handshake.service, handshake.backend, pkt.frame_len);
    count::answer_from_backend(handshake.backend, pkt.tcp_flags);
    // No entry to cache the route to the client in: the FIB decides.
    Some(forward6::forward(ctx, pkt, core::ptr::null_mut()))
}

/// An IPv6 handshake in the cache, as its answer is translated and counted with.
struct Handshake6 {
    vip: Addr6,
    vport: u16,
    service: u32,
    backend: u32,
    /// The way holding it, where a SYN-ACK leaves its proof.
    way: *mut SynWay,
}

/// The handshake in way `way` of `set`, if it is one from the reply's client to its
/// source backend: the backend is an IPv6 one of the service the slot names, and the
/// tag is that of the client, the service's VIP and the backend.
#[inline(always)]
fn answered_in(set: &Set, way: usize, reply: &FlowKey6) -> Option<Handshake6> {
    let p = set.way(way);
    let e: SynEntry = unsafe { core::ptr::read_volatile(core::ptr::addr_of!((*p).entry)) };
    let (backend, addr) = backend6(e.backend())?;
    if addr != reply.src_addr || backend.port != reply.src_port || backend.service != e.service_at()
    {
        return None;
    }
    let vip = SERVICE_VIPS6.get(backend.service).copied()?;
    let handshake = syn_handshake_hash6(
        hash_seed(),
        &reply.dst_addr,
        reply.dst_port,
        &vip.addr,
        vip.port,
    );
    if syn_tag_for(handshake, e.backend()) != e.tag() {
        return None;
    }
    Some(Handshake6 {
        vip: vip.addr,
        vport: vip.port,
        service: backend.service,
        backend: e.backend(),
        way: p,
    })
}

/// The TCP acknowledgment number (bytes 8..12 of the header `parse6` proved inside the
/// frame), host order.
#[inline(always)]
fn ack_number(pkt: &Packet6) -> u32 {
    u32::from_be(unsafe { wire::get32(pkt.l4.add(8)) })
}

/// The TCP sequence number (bytes 4..8), host order.
#[inline(always)]
fn seq_number(pkt: &Packet6) -> u32 {
    u32::from_be(unsafe { wire::get32(pkt.l4.add(4)) })
}
