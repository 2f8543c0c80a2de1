//! The per-CPU flow cache (see `lb_common::flow::FlowCacheEntry`): the forward entries
//! this CPU used last, by a cheap hash of the 5-tuple, so that a burst of one flow's
//! packets pays one flow-table lookup instead of one each.
use core::intrinsics::{atomic_xadd, AtomicOrdering::Relaxed};

use lb_common::flow::{
    flow_generation, FlowCacheEntry, FlowKey, FlowTarget, FLOW_CACHE_SLOTS, FLOW_GEN_CONTROLLER,
    FLOW_GEN_DATAPATH,
};

use crate::maps::{now_secs, FLOW_CACHE, FLOW_GEN};

const _: () = assert!(FLOW_CACHE_SLOTS == 256, "slot_of takes the top 8 bits");

#[inline(always)]
fn slot_of(key: &FlowKey) -> u32 {
    let ports = key.src_port as u32 | (key.dst_port as u32) << 16;
    (key.src_addr ^ key.dst_addr.rotate_left(16) ^ ports).wrapping_mul(0x9e37_79b1) >> 24
}

/// The current generation. Read it before looking a flow up in the table, and fill the
/// cache with that value: a replace that lands between the lookup and the fill then
/// leaves a slot that is already stale.
#[inline(always)]
pub fn generation() -> u32 {
    let word = |i| FLOW_GEN.get(i).copied().unwrap_or(0);
    flow_generation(word(FLOW_GEN_DATAPATH), word(FLOW_GEN_CONTROLLER))
}

/// The cached (backend, service) of `key`, if this CPU filled its slot in this second
/// and nothing was replaced since.
#[inline(always)]
pub fn hit(key: &FlowKey, generation: u32) -> Option<(u32, u32)> {
    let slot = FLOW_CACHE.get_ptr(slot_of(key))?;
    let e = unsafe { &*slot };
    (e.key == *key && e.generation == generation && e.last_seen == now_secs())
        .then_some((e.backend, e.service))
}

/// Caches `target` as `key`'s entry, as of second `now`.
#[inline(always)]
pub fn fill(key: &FlowKey, target: &FlowTarget, generation: u32, now: u32) {
    let Some(slot) = FLOW_CACHE.get_ptr_mut(slot_of(key)) else {
        return;
    };
    let slot: &mut FlowCacheEntry = unsafe { &mut *slot };
    slot.key = *key;
    slot.backend = target.backend;
    slot.service = target.service;
    slot.generation = generation;
    slot.last_seen = now;
}

/// Empties every CPU's cache: a flow entry was replaced or deleted.
#[inline(always)]
pub fn invalidate() {
    if let Some(word) = FLOW_GEN.get_ptr_mut(FLOW_GEN_DATAPATH) {
        unsafe { atomic_xadd::<u32, u32, { Relaxed }>(word, 1) };
    }
}
