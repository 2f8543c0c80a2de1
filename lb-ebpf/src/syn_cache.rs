//! The SYN cache (see `lb_common::flow::SynEntry`): where a SYN that recorded no flow went,
//! for its SYN-ACK and for the client's ACK.
use lb_common::{
    backend::Backend,
    flow::{syn_entry_check, FlowKey, SynEntry},
    hash::mix32,
};

use crate::maps::{hash_seed, syn_cache_mask, SYN_CACHE};

/// The slot of a handshake, from what all three of its packets carry: the client's
/// address and port.
#[inline(always)]
fn slot_of(client_addr: u32, client_port: u16) -> u32 {
    mix32(mix32(client_addr ^ hash_seed()) ^ client_port as u32) & syn_cache_mask()
}

#[inline(always)]
fn whole(e: &SynEntry) -> bool {
    e.check
        == syn_entry_check(
            &e.flow,
            e.backend_addr,
            e.backend_port,
            e.service,
            e.backend,
        )
}

/// Remembers that the handshake `flow` (client -> VIP) went to backend `id`.
#[inline(always)]
pub fn record(flow: &FlowKey, id: u32, backend: &Backend, service: u32) {
    let Some(slot) = SYN_CACHE.get_ptr_mut(slot_of(flow.src_addr, flow.src_port)) else {
        return;
    };
    let check = syn_entry_check(flow, backend.addr, backend.port, service, id);
    unsafe {
        (*slot).flow = *flow;
        (*slot).backend_addr = backend.addr;
        (*slot).backend_port = backend.port;
        (*slot).check = check;
        (*slot).service = service;
        (*slot).backend = id;
    }
}

/// The slot of the handshake `flow` (client -> VIP), if it is still there, whole.
#[inline(always)]
pub fn of_flow(flow: &FlowKey) -> Option<SynEntry> {
    let entry = *SYN_CACHE.get(slot_of(flow.src_addr, flow.src_port))?;
    (whole(&entry) && entry.flow == *flow).then_some(entry)
}

/// Takes the slot of the handshake `flow` (client -> VIP) for the packet that records the
/// flow: the slot serves its handshake once, so a later miss of the same flow (its
/// entries purged with a drained backend, or evicted) is placed by the table again.
#[inline(always)]
pub fn take(flow: &FlowKey) -> Option<SynEntry> {
    let entry = of_flow(flow)?;
    if let Some(slot) = SYN_CACHE.get_ptr_mut(slot_of(flow.src_addr, flow.src_port)) {
        unsafe { (*slot).check = 0 };
    }
    Some(entry)
}

/// The slot of the handshake `reply` (backend -> client) answers, if it is still there,
/// whole, and names that backend.
#[inline(always)]
pub fn answered_by(reply: &FlowKey) -> Option<SynEntry> {
    let entry = *SYN_CACHE.get(slot_of(reply.dst_addr, reply.dst_port))?;
    let ours = entry.flow.src_addr == reply.dst_addr
        && entry.flow.src_port == reply.dst_port
        && entry.backend_addr == reply.src_addr
        && entry.backend_port == reply.src_port
        && entry.flow.proto == reply.proto;
    (ours && whole(&entry)).then_some(entry)
}
