//! The SYN cache (see `lb_common::flow::SynEntry`): what a SYN that recorded no flow
//! leaves for its SYN-ACK.
use lb_common::{
    flow::{syn_entry_check, FlowKey, SynEntry},
    hash::flow_hash,
};

use crate::maps::{hash_seed, syn_cache_mask, SYN_CACHE};

#[inline(always)]
fn slot_of(reply: &FlowKey) -> u32 {
    flow_hash(reply, hash_seed()) & syn_cache_mask()
}

/// Remembers that replies `reply` (backend -> client) answer VIP:port of `service`.
#[inline(always)]
pub fn record(reply: FlowKey, vip: u32, vport: u16, service: u32, backend: u32) {
    let Some(slot) = SYN_CACHE.get_ptr_mut(slot_of(&reply)) else {
        return;
    };
    let check = syn_entry_check(&reply, vip, vport, service, backend);
    unsafe {
        (*slot).reply = reply;
        (*slot).vip = vip;
        (*slot).vport = vport;
        (*slot).check = check;
        (*slot).service = service;
        (*slot).backend = backend;
    }
}

/// The slot of the handshake `reply` (a packet from a backend) answers, if it is still
/// there, whole.
#[inline(always)]
pub fn answered_by(reply: &FlowKey) -> Option<SynEntry> {
    let entry = *SYN_CACHE.get(slot_of(reply))?;
    let whole = entry.check
        == syn_entry_check(
            &entry.reply,
            entry.vip,
            entry.vport,
            entry.service,
            entry.backend,
        );
    (whole && entry.reply == *reply).then_some(entry)
}
