//! Lookup: the service a packet is addressed to, a backend by id, a reply's return
//! entry, the address prefilter and the controller's clock. Each reads a map of `maps`;
//! the flow table's own lookups are the client path's (`to_backend`).
use lb_common::{
    backend::{Backend, BACKEND_F_PRESENT},
    filter::filter_slot,
    service_index::{self, key_word, PackedMeta, SLOT_EMPTY},
};

use crate::{
    maps::{service_index_mask, ADDR_FILTER, BACKENDS, CLOCK, SERVICE_INDEX, SERVICE_INDEX_PROBES},
    packet::Packet,
};

/// The controller's clock in whole seconds; a coarse clock read from an array costs far
/// less than `bpf_ktime_get_ns` and is all that ageing needs.
#[inline(always)]
pub fn now_secs() -> u32 {
    CLOCK.get(0).copied().unwrap_or(0)
}

/// Whether `addr` may be in `bitmap` of the prefilter.
#[inline(always)]
pub fn may_be(bitmap: u32, addr: u32) -> bool {
    let (word, mask) = filter_slot(bitmap, addr);
    ADDR_FILTER.get(word).is_some_and(|w| *w & mask != 0)
}

/// The service whose VIP:port the packet is addressed to, and its slot in the index.
/// Each word of a slot is read once (volatile): the controller may store either while the
/// packet looks.
#[inline(always)]
pub fn service_of(pkt: &Packet) -> Option<(PackedMeta, u32)> {
    service_of_word(key_word(&pkt.flow.service_key()))
}

/// The service whose key word ([`key_word`]) is `key`, and its slot in the index.
#[inline(always)]
pub fn service_of_word(key: u64) -> Option<(PackedMeta, u32)> {
    let probes = unsafe { core::ptr::read_volatile(&SERVICE_INDEX_PROBES) };
    let at = service_index::find_within(key, service_index_mask(), probes, service_key_word_at)?;
    let s = SERVICE_INDEX.get_ptr(at)?;
    let meta = unsafe { core::ptr::read_volatile(core::ptr::addr_of!((*s).meta)) };
    Some((PackedMeta(meta), at))
}

/// The key word of the service index's slot `at` ([`SLOT_EMPTY`] past its end).
#[inline(always)]
pub fn service_key_word_at(at: u32) -> u64 {
    match SERVICE_INDEX.get_ptr(at) {
        Some(s) => unsafe { core::ptr::read_volatile(core::ptr::addr_of!((*s).key)) },
        None => SLOT_EMPTY,
    }
}

/// The backend with id `id`, if that slot holds one.
#[inline(always)]
pub fn backend_by_id(id: u32) -> Option<Backend> {
    let backend = BACKENDS.get(id).copied()?;
    (backend.flags & BACKEND_F_PRESENT != 0).then_some(backend)
}

/// The NAT return entry for a packet from a backend to a client (in place: its cached
/// next hop is filled on the first reply).
#[inline(always)]
pub fn return_flow_of(pkt: &Packet) -> Option<crate::flow_table::ReturnEntry> {
    crate::flow_table::find_return(&pkt.flow)
}
