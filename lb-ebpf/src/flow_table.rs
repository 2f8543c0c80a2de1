//! The IPv4 flow tables: each connection's slot pair first, then the LRU map of the
//! entry's direction (see `lb_common::flow_slots`). Finding a flow in its slot is one
//! inlined array read; a new connection whose slot is empty is recorded with a
//! compare-and-swap and a few stores per direction instead of LRU inserts, and a packet
//! whose slot never sent an entry to the LRU map does not look there.
use core::{
    intrinsics::{atomic_cxchg, atomic_xadd, atomic_xor, AtomicOrdering::Relaxed},
    ptr::{addr_of_mut, read_volatile, write_volatile},
};

use aya_ebpf::bindings::{BPF_ANY, BPF_NOEXIST};
use lb_common::{
    flow::{FlowKey, FlowTarget, NatReturn},
    flow_slots::{
        busy_tag, forward_index, key_words, may_overflow, ready_tag, reply_index, slot_state,
        SlotPair, SLOT_EMPTY, SLOT_OVERFLOW_ONE, SLOT_READY,
    },
};

use crate::maps::{flow_slot_mask, FLOWS, FLOW_SLOTS, RETURN_FLOWS};

/// Why a record was not made.
pub enum NotRecorded {
    /// `only_new` and the tuple already has an entry.
    Exists,
    /// The LRU map refused it, or another CPU was writing the tuple's slot.
    Failed,
}

/// Whether the key words at `slot_key` (a slot's key, 8-byte aligned) are `key`'s.
#[inline(always)]
fn same_key(slot_key: *const FlowKey, key: &FlowKey) -> bool {
    let (a, b) = key_words(key);
    let words = slot_key as *const u64;
    unsafe { read_volatile(words) == a && read_volatile(words.add(1)) == b }
}

#[inline(always)]
fn write_key(slot_key: *mut FlowKey, key: &FlowKey) {
    let (a, b) = key_words(key);
    let words = slot_key as *mut u64;
    unsafe {
        write_volatile(words, a);
        write_volatile(words.add(1), b);
    }
}

/// What a half holds for a writer.
enum Half {
    /// This tuple's entry, under `tag`.
    Own(u64),
    /// Nothing, under `tag`.
    Empty(u64),
    /// Another tuple's entry, or a writer's, under `tag`.
    Taken(u64),
}

#[inline(always)]
fn half_for(tag_ptr: *const u64, slot_key: *const FlowKey, key: &FlowKey) -> Half {
    let tag = unsafe { read_volatile(tag_ptr) };
    match slot_state(tag) {
        SLOT_EMPTY => Half::Empty(tag),
        SLOT_READY if same_key(slot_key, key) => Half::Own(tag),
        _ => Half::Taken(tag),
    }
}

/// Takes the half from `tag` for writing; false if another writer (or the controller)
/// changed it first.
#[inline(always)]
fn claim(tag_ptr: *mut u64, tag: u64) -> bool {
    let (_, won) =
        unsafe { atomic_cxchg::<u64, { Relaxed }, { Relaxed }>(tag_ptr, tag, busy_tag(tag)) };
    won
}

/// Publishes a half written since [`claim`] from `tag`: an atomic xor of the low word from
/// busy to ready, which keeps what other CPUs added to the LRU count meanwhile (a plain
/// store of the ready tag would erase it) and, being a fully ordered atomic, is seen
/// after the stores that wrote the entry.
#[inline(always)]
fn publish(tag_ptr: *mut u64, tag: u64) {
    unsafe { atomic_xor::<u64, u64, { Relaxed }>(tag_ptr, busy_tag(tag) ^ ready_tag(tag)) };
}

/// Counts an entry of the half's slot put into the LRU map, after the insert (see
/// `lb_common::flow_slots`).
#[inline(always)]
fn overflowed(tag_ptr: *mut u64) {
    unsafe { atomic_xadd::<u64, u64, { Relaxed }>(tag_ptr, SLOT_OVERFLOW_ONE) };
}

#[inline(always)]
fn pair_of(index: u32) -> Option<*mut SlotPair> {
    FLOW_SLOTS.get_ptr_mut(index)
}

/// The forward entry of `key` (client -> VIP), where it lives.
#[inline(always)]
pub fn find(key: &FlowKey) -> Option<*mut FlowTarget> {
    let pair = pair_of(forward_index(key, flow_slot_mask()))?;
    let half = unsafe { addr_of_mut!((*pair).forward) };
    match half_for(
        unsafe { addr_of_mut!((*half).tag) },
        unsafe { addr_of_mut!((*half).key) },
        key,
    ) {
        Half::Own(_) => Some(unsafe { addr_of_mut!((*half).target) }),
        Half::Empty(tag) | Half::Taken(tag) if !may_overflow(tag) => None,
        _ => FLOWS.get_ptr_mut(key),
    }
}

/// Where a writer may put an entry: its tuple's half, or the LRU map.
enum Place {
    /// The half, taken from this tag.
    Half(u64),
    /// The LRU map: the half holds another flow, is being written, or is empty while an
    /// entry of the slot may be in the LRU map (which may be this very tuple's).
    Lru,
    /// `only_new`, and the half holds the tuple.
    Exists,
}

/// Where to write `key`'s entry, judged from its half now.
#[inline(always)]
fn place(tag_ptr: *const u64, slot_key: *const FlowKey, key: &FlowKey, only_new: bool) -> Place {
    match half_for(tag_ptr, slot_key, key) {
        Half::Own(_) if only_new => Place::Exists,
        Half::Own(tag) => Place::Half(tag),
        Half::Empty(tag) if !may_overflow(tag) => Place::Half(tag),
        _ => Place::Lru,
    }
}

/// Takes `key`'s half for writing: `Ok(Some(tag))` claimed from `tag`, `Ok(None)` when
/// the entry belongs in the LRU map. A claim lost to another writer, or to the
/// controller's emptying or count clearing, is tried once more from what the half then
/// holds; a tuple's own half lost twice is given up rather than copied into the LRU map.
#[inline(always)]
fn take_half(
    tag_ptr: *mut u64,
    slot_key: *const FlowKey,
    key: &FlowKey,
    only_new: bool,
) -> Result<Option<u64>, NotRecorded> {
    for attempt in 0..2 {
        match place(tag_ptr, slot_key, key, only_new) {
            Place::Exists => return Err(NotRecorded::Exists),
            Place::Lru => return Ok(None),
            Place::Half(tag) if claim(tag_ptr, tag) => return Ok(Some(tag)),
            Place::Half(_) if attempt == 1 && same_key(slot_key, key) => {
                return Err(NotRecorded::Failed)
            }
            Place::Half(_) => {}
        }
    }
    Ok(None)
}

/// Records `target` under `key`: over its entry unless `only_new`, else in its slot if
/// that is empty, else in `FLOWS`.
#[inline(always)]
pub fn record(key: &FlowKey, target: &FlowTarget, only_new: bool) -> Result<(), NotRecorded> {
    let pair = pair_of(forward_index(key, flow_slot_mask())).ok_or(NotRecorded::Failed)?;
    let half = unsafe { addr_of_mut!((*pair).forward) };
    let tag_ptr = unsafe { addr_of_mut!((*half).tag) };
    let slot_key = unsafe { addr_of_mut!((*half).key) };
    if let Some(tag) = take_half(tag_ptr, slot_key, key, only_new)? {
        write_key(slot_key, key);
        let value = unsafe { addr_of_mut!((*half).target) };
        unsafe {
            write_volatile(addr_of_mut!((*value).backend), target.backend);
            write_volatile(addr_of_mut!((*value).service), target.service);
            write_volatile(addr_of_mut!((*value).state), target.state);
            write_volatile(addr_of_mut!((*value).last_seen), target.last_seen);
            write_volatile(addr_of_mut!((*value)._pad), 0);
        }
        publish(tag_ptr, tag);
        return Ok(());
    }
    let flags = if only_new { BPF_NOEXIST } else { BPF_ANY };
    match FLOWS.insert(key, target, flags as u64) {
        Ok(()) => {
            overflowed(tag_ptr);
            Ok(())
        }
        Err(-17) => {
            // It is there: make sure lookups look (a count lost to a race heals).
            overflowed(tag_ptr);
            Err(NotRecorded::Exists)
        }
        Err(_) => Err(NotRecorded::Failed),
    }
}

/// The reply entry of `key` (backend -> client), where it lives.
#[inline(always)]
pub fn find_return(key: &FlowKey) -> Option<*mut NatReturn> {
    let pair = pair_of(reply_index(key, flow_slot_mask()))?;
    let half = unsafe { addr_of_mut!((*pair).reply) };
    match half_for(
        unsafe { addr_of_mut!((*half).tag) },
        unsafe { addr_of_mut!((*half).key) },
        key,
    ) {
        Half::Own(_) => Some(unsafe { addr_of_mut!((*half).nat) }),
        Half::Empty(tag) | Half::Taken(tag) if !may_overflow(tag) => None,
        _ => RETURN_FLOWS.get_ptr_mut(key),
    }
}

/// Records a fresh reply entry under `key` (over an earlier one of the tuple): in its
/// slot if that holds the tuple or nothing, else in `RETURN_FLOWS`. `fill` writes the
/// entry's fields into zeroed memory.
#[inline(always)]
pub fn record_return(key: &FlowKey, fill: impl Fn(*mut NatReturn)) -> Result<(), NotRecorded> {
    let pair = pair_of(reply_index(key, flow_slot_mask())).ok_or(NotRecorded::Failed)?;
    let half = unsafe { addr_of_mut!((*pair).reply) };
    let tag_ptr = unsafe { addr_of_mut!((*half).tag) };
    let slot_key = unsafe { addr_of_mut!((*half).key) };
    if let Some(tag) = take_half(tag_ptr, slot_key, key, false)? {
        write_key(slot_key, key);
        let nat = unsafe { addr_of_mut!((*half).nat) };
        zero_return(nat);
        fill(nat);
        publish(tag_ptr, tag);
        return Ok(());
    }
    let mut nat = core::mem::MaybeUninit::<NatReturn>::uninit();
    zero_return(nat.as_mut_ptr());
    fill(nat.as_mut_ptr());
    #[expect(
        clippy::needless_borrows_for_generic_args,
        reason = "by reference on purpose: a by-value copy of the zeroed entry is the \
                  memset the verifier refuses (see zero_return)"
    )]
    let inserted = RETURN_FLOWS.insert(key, unsafe { &*nat.as_ptr() }, BPF_ANY as u64);
    match inserted {
        Ok(()) => {
            overflowed(tag_ptr);
            Ok(())
        }
        Err(_) => Err(NotRecorded::Failed),
    }
}

/// Zeroes a reply entry by explicit word stores: a zero `NextHop` (byte-array MACs)
/// written or copied as a value becomes a `memset` call, whose variable stack offsets
/// the verifier refuses without CAP_PERFMON.
#[inline(always)]
fn zero_return(p: *mut NatReturn) {
    const WORDS: usize = core::mem::size_of::<NatReturn>() / 4;
    const _: () = assert!(WORDS == 9);
    let words = p as *mut u32;
    unsafe {
        write_volatile(words, 0);
        write_volatile(words.add(1), 0);
        write_volatile(words.add(2), 0);
        write_volatile(words.add(3), 0);
        write_volatile(words.add(4), 0);
        write_volatile(words.add(5), 0);
        write_volatile(words.add(6), 0);
        write_volatile(words.add(7), 0);
        write_volatile(words.add(8), 0);
    }
}
