//! The SYN cache (see `lb_common::flow::SynEntry`): where a SYN that recorded no flow went,
//! for its SYN-ACK and for the client's ACK.
use lb_common::{
    backend::Backend,
    flow::{syn_entry_check, FlowKey, SynEntry},
    hash::mix32,
};

use crate::maps::{hash_seed, syn_cache_mask, SYN_CACHE};

/// A handshake's slot, found once per packet and then read or written in place.
pub struct Slot(*mut SynEntry);

/// The slot of a handshake, from what all three of its packets carry: the client's
/// address and port.
#[inline(always)]
pub fn slot(client_addr: u32, client_port: u16) -> Option<Slot> {
    let index = mix32(mix32(client_addr ^ hash_seed()) ^ client_port as u32) & syn_cache_mask();
    SYN_CACHE.get_ptr_mut(index).map(Slot)
}

/// The slot of the handshake `flow` (client -> VIP).
#[inline(always)]
pub fn slot_of_flow(flow: &FlowKey) -> Option<Slot> {
    slot(flow.src_addr, flow.src_port)
}

impl Slot {
    /// What the slot holds, if it is whole (not a mix of two writers, nor spent).
    #[inline(always)]
    fn read(&self) -> Option<SynEntry> {
        let e = unsafe { *self.0 };
        let check = syn_entry_check(
            &e.flow,
            e.backend_addr,
            e.backend_port,
            e.service,
            e.backend,
        );
        (e.check == check).then_some(e)
    }

    /// The entry of the handshake `flow` (client -> VIP), if the slot holds it.
    #[inline(always)]
    pub fn of_flow(&self, flow: &FlowKey) -> Option<SynEntry> {
        self.read().filter(|e| e.flow == *flow)
    }

    /// Takes the entry of the handshake `flow` for the packet that records the flow: the
    /// slot serves its handshake once, so a later miss of the same flow (its entries
    /// purged with a drained backend, or evicted) is placed by the table again.
    #[inline(always)]
    pub fn take(&self, flow: &FlowKey) -> Option<SynEntry> {
        let entry = self.of_flow(flow)?;
        unsafe { (*self.0).check = 0 };
        Some(entry)
    }

    /// The entry of the handshake `reply` (backend -> client) answers, if the slot holds
    /// it and names that backend.
    #[inline(always)]
    pub fn answered_by(&self, reply: &FlowKey) -> Option<SynEntry> {
        self.read().filter(|e| {
            e.flow.src_addr == reply.dst_addr
                && e.flow.src_port == reply.dst_port
                && e.backend_addr == reply.src_addr
                && e.backend_port == reply.src_port
                && e.flow.proto == reply.proto
        })
    }

    /// Remembers that the handshake `flow` (client -> VIP) went to backend `id`.
    #[inline(always)]
    pub fn record(&self, flow: &FlowKey, id: u32, backend: &Backend, service: u32) {
        let check = syn_entry_check(flow, backend.addr, backend.port, service, id);
        let slot = self.0;
        unsafe {
            (*slot).flow = *flow;
            (*slot).backend_addr = backend.addr;
            (*slot).backend_port = backend.port;
            (*slot).check = check;
            (*slot).service = service;
            (*slot).backend = id;
        }
    }
}
