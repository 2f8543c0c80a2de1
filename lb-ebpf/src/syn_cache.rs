//! The SYN cache (see `lb_common::syn_cache`): where a SYN that recorded no flow went,
//! for its SYN-ACK and for the client's ACK.
use lb_common::{
    flow::FlowKey,
    service_index::{key_of_word, SLOT_EMPTY, SLOT_REMOVED},
    syn_cache::{syn_slot, syn_tag, syn_tag_of_flow, SynEntry},
};

use crate::maps::{self, hash_seed, syn_cache_mask, SYN_CACHE};

/// A handshake's slot, found once per packet and then read or written in place.
pub struct Slot(*mut SynEntry);

/// What the SYN-ACK of a handshake is translated and counted with.
pub struct Handshake {
    /// VIP and port the client sent its SYN to (wire order).
    pub vip_addr: u32,
    pub vip_port: u16,
    pub service: u32,
    pub backend: u32,
}

/// The slot of a handshake (see `lb_common::syn_cache::syn_slot`).
#[inline(always)]
pub fn slot(client_addr: u32, client_port: u16) -> Option<Slot> {
    let index = syn_slot(hash_seed(), client_addr, client_port, syn_cache_mask());
    SYN_CACHE.get_ptr_mut(index).map(Slot)
}

/// The slot of the handshake `flow` (client -> VIP).
#[inline(always)]
pub fn slot_of_flow(flow: &FlowKey) -> Option<Slot> {
    slot(flow.src_addr, flow.src_port)
}

impl Slot {
    /// The slot's word, in one load: another CPU may be storing it.
    #[inline(always)]
    fn read(&self) -> SynEntry {
        unsafe { core::ptr::read_volatile(self.0) }
    }

    /// The backend of the handshake `flow` (client -> VIP), if the slot holds it.
    #[inline(always)]
    pub fn backend_of(&self, flow: &FlowKey) -> Option<u32> {
        let e = self.read();
        (e.tag() == syn_tag_of_flow(hash_seed(), flow, e.backend())).then_some(e.backend())
    }

    /// Takes the backend of the handshake `flow` for the packet that records the flow:
    /// the slot serves its handshake once, so a later miss of the same flow (its entries
    /// purged with a drained backend, or evicted) is placed by the table again.
    #[inline(always)]
    pub fn take(&self, flow: &FlowKey) -> Option<u32> {
        let backend = self.backend_of(flow)?;
        unsafe { core::ptr::write_volatile(self.0, SynEntry(0)) };
        Some(backend)
    }

    /// The handshake the reply `reply` (backend -> client) answers, if the slot holds one
    /// from that client to that backend.
    #[inline(always)]
    pub fn answered_by(&self, reply: &FlowKey) -> Option<Handshake> {
        let e = self.read();
        let backend = maps::backend_by_id(e.backend())?;
        if backend.addr != reply.src_addr || backend.port != reply.src_port {
            return None;
        }
        let vip = maps::service_key_word_at(e.service_at());
        if vip == SLOT_EMPTY || vip == SLOT_REMOVED {
            return None;
        }
        let tag = syn_tag(
            hash_seed(),
            reply.dst_addr,
            reply.dst_port,
            vip,
            e.backend(),
        );
        if tag != e.tag() {
            return None;
        }
        let vip = key_of_word(vip);
        Some(Handshake {
            vip_addr: vip.addr,
            vip_port: vip.port,
            service: backend.service,
            backend: e.backend(),
        })
    }

    /// Remembers that the handshake `flow` (client -> VIP), to the service at
    /// `service_at` in the index, went to backend `backend`.
    #[inline(always)]
    pub fn record(&self, flow: &FlowKey, service_at: u32, backend: u32) {
        let tag = syn_tag_of_flow(hash_seed(), flow, backend);
        unsafe { core::ptr::write_volatile(self.0, SynEntry::new(tag, service_at, backend)) };
    }
}
