//! The IPv4 flow tables: each connection's home slot pair, then its buddies', then the LRU
//! map of the entry's direction (see `lb_common::flow_slots`). Finding a flow in its home
//! is one inlined array read; a new connection whose home or a buddy's half is empty is
//! recorded with a compare-and-swap and a few stores per direction instead of LRU inserts,
//! and a packet whose home never sent an entry to a buddy or the LRU map does not look
//! there.
use core::{
    intrinsics::{atomic_cxchg, atomic_xadd, atomic_xor, AtomicOrdering::Relaxed},
    ptr::{addr_of_mut, read_volatile, write_volatile, NonNull},
};

use aya_ebpf::bindings::{BPF_ANY, BPF_NOEXIST};
use lb_common::{
    flow::{FlowKey, FlowTarget, NatReturn},
    flow_slots::{
        buddies, busy_tag, forward_index, key_words, may_overflow, ready_tag, reply_index,
        slot_state, SlotPair, FORWARD_HALF_OFFSET, HALF_DISPLACED_OFFSET, HALF_VALUE_OFFSET,
        REPLY_HALF_OFFSET, SLOT_EMPTY, SLOT_OVERFLOW_ONE, SLOT_READY,
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

/// One direction's half of a slot pair (`HALF` bytes from the pair's start): where its
/// tag, key, value and displaced count are. It holds only the pair's address, checked not
/// null, so that no address inside a pair that may not exist is computed before the check
/// (the verifier refuses arithmetic on a pointer that may be null).
#[derive(Clone, Copy)]
struct HalfAt<const HALF: usize> {
    pair: NonNull<SlotPair>,
}

impl<const HALF: usize> HalfAt<HALF> {
    #[inline(always)]
    fn of(index: u32) -> Option<Self> {
        NonNull::new(FLOW_SLOTS.get_ptr_mut(index)?).map(|pair| Self { pair })
    }

    #[inline(always)]
    fn at(&self, offset: usize) -> *mut u8 {
        unsafe { (self.pair.as_ptr() as *mut u8).add(HALF + offset) }
    }

    #[inline(always)]
    fn tag(&self) -> *mut u64 {
        self.at(0) as *mut u64
    }

    #[inline(always)]
    fn key(&self) -> *mut FlowKey {
        self.at(8) as *mut FlowKey
    }

    #[inline(always)]
    fn value(&self) -> *mut u8 {
        self.at(HALF_VALUE_OFFSET)
    }

    #[inline(always)]
    fn displaced(&self) -> *mut u32 {
        self.at(HALF_DISPLACED_OFFSET) as *mut u32
    }

    #[inline(always)]
    fn read(&self, key: &FlowKey) -> Half {
        let tag = unsafe { read_volatile(self.tag()) };
        match slot_state(tag) {
            SLOT_EMPTY => Half::Empty(tag),
            SLOT_READY if same_key(self.key(), key) => Half::Own(tag),
            _ => Half::Taken(tag),
        }
    }

    /// Whether an entry of this home may be in a buddy's half.
    #[inline(always)]
    fn may_be_displaced(&self) -> bool {
        unsafe { read_volatile(self.displaced()) != 0 }
    }
}

/// Where a lookup of `key` ends.
enum Found {
    /// In this half.
    Half(*mut u8),
    /// Not in the slots; in the LRU map, if anywhere.
    Lru,
    /// Nowhere.
    Missing,
}

/// Looks `key` up in its home half, then, if an entry of that home was ever put there,
/// the buddies', then says whether the LRU map may hold it.
#[inline(always)]
fn find_in_slots<const HALF: usize>(index: u32, key: &FlowKey) -> Found {
    let Some(home) = HalfAt::<HALF>::of(index) else {
        return Found::Missing;
    };
    let tag = match home.read(key) {
        Half::Own(_) => return Found::Half(home.value()),
        Half::Empty(tag) | Half::Taken(tag) => tag,
    };
    if home.may_be_displaced() {
        // Unrolled by hand, here and in `place`: a loop over an array on the stack reads
        // it at a variable offset, which the verifier refuses without CAP_PERFMON.
        let [b1, b2, b3] = buddies(index);
        let own = |b: u32| {
            let buddy = HalfAt::<HALF>::of(b)?;
            matches!(buddy.read(key), Half::Own(_)).then(|| buddy.value())
        };
        if let Some(value) = own(b1).or_else(|| own(b2)).or_else(|| own(b3)) {
            return Found::Half(value);
        }
    }
    if may_overflow(tag) {
        Found::Lru
    } else {
        Found::Missing
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

/// Counts an entry of the half's home put into the LRU map, after the insert (see
/// `lb_common::flow_slots`).
#[inline(always)]
fn overflowed(tag_ptr: *mut u64) {
    unsafe { atomic_xadd::<u64, u64, { Relaxed }>(tag_ptr, SLOT_OVERFLOW_ONE) };
}

/// A half claimed for writing: where, from which tag, and the home to count it in when
/// it is a buddy's.
struct Claimed<const HALF: usize> {
    half: HalfAt<HALF>,
    tag: u64,
    displaced_from: Option<HalfAt<HALF>>,
}

impl<const HALF: usize> Claimed<HALF> {
    /// Publishes the written half, then counts it in its home if it is a buddy's.
    #[inline(always)]
    fn publish(&self) {
        publish(self.half.tag(), self.tag);
        if let Some(home) = self.displaced_from {
            unsafe { atomic_xadd::<u32, u32, { Relaxed }>(home.displaced(), 1) };
        }
    }
}

/// What one look at a tuple's halves allows a writer.
enum Place<const HALF: usize> {
    /// Write the half from this tag.
    Half(HalfAt<HALF>, u64, Option<HalfAt<HALF>>),
    /// The LRU map: every candidate half holds another flow, or an entry of the home may
    /// be in the LRU map (which may be this very tuple's).
    Lru,
    /// `only_new`, and a half holds the tuple.
    Exists,
}

/// Where to write `key`'s entry, judged from its home and buddy halves now.
#[inline(always)]
fn place<const HALF: usize>(
    home: HalfAt<HALF>,
    index: u32,
    key: &FlowKey,
    only_new: bool,
) -> Place<HALF> {
    let home_tag = match home.read(key) {
        Half::Own(_) if only_new => return Place::Exists,
        Half::Own(tag) => return Place::Half(home, tag, None),
        Half::Empty(tag) | Half::Taken(tag) => tag,
    };
    // The buddies are read when one may hold the tuple (an entry of the home went to
    // one), or when the home is taken and the entry may go to the first empty one. That
    // one's tag is kept apart and always set: an `Option` of both leaves the tag's
    // register unwritten on the `None` path, which the verifier refuses to see copied.
    let mut empty_buddy: Option<HalfAt<HALF>> = None;
    let mut empty_buddy_tag = 0;
    let home_taken = slot_state(home_tag) != SLOT_EMPTY;
    let displaced = home.may_be_displaced();
    if displaced || (home_taken && !may_overflow(home_tag)) {
        // Each buddy's address is worked out only when it is read.
        let [b1, b2, b3] = buddies(index);
        let mut look = |b: u32| -> Option<Place<HALF>> {
            // With no entry of the home in a buddy, none holds the tuple: the search
            // ends at the first empty one, and the lines after it are not read.
            if !displaced && empty_buddy.is_some() {
                return None;
            }
            let b = HalfAt::<HALF>::of(b)?;
            match b.read(key) {
                Half::Own(_) if only_new => Some(Place::Exists),
                Half::Own(tag) => Some(Place::Half(b, tag, None)),
                Half::Empty(tag) if empty_buddy.is_none() => {
                    empty_buddy = Some(b);
                    empty_buddy_tag = tag;
                    None
                }
                _ => None,
            }
        };
        if let Some(place) = look(b1).or_else(|| look(b2)).or_else(|| look(b3)) {
            return place;
        }
    }
    if may_overflow(home_tag) {
        return Place::Lru;
    }
    if !home_taken {
        return Place::Half(home, home_tag, None);
    }
    match empty_buddy {
        Some(b) => Place::Half(b, empty_buddy_tag, Some(home)),
        None => Place::Lru,
    }
}

/// Takes a half of `key` for writing: `Ok(Some(claimed))`, or `Ok(None)` when the entry
/// belongs in the LRU map. A claim lost to another writer, or to the controller's emptying
/// or count clearing, is tried once more from what the halves then hold; a tuple's own
/// half lost twice is given up rather than copied into the LRU map.
#[inline(always)]
fn take_half<const HALF: usize>(
    index: u32,
    key: &FlowKey,
    only_new: bool,
) -> Result<(Option<Claimed<HALF>>, HalfAt<HALF>), NotRecorded> {
    let home = HalfAt::<HALF>::of(index).ok_or(NotRecorded::Failed)?;
    for attempt in 0..2 {
        match place(home, index, key, only_new) {
            Place::Exists => return Err(NotRecorded::Exists),
            Place::Lru => return Ok((None, home)),
            Place::Half(half, tag, displaced_from) if claim(half.tag(), tag) => {
                let claimed = Claimed {
                    half,
                    tag,
                    displaced_from,
                };
                return Ok((Some(claimed), home));
            }
            Place::Half(half, _, _) if attempt == 1 && same_key(half.key(), key) => {
                return Err(NotRecorded::Failed)
            }
            Place::Half(..) => {}
        }
    }
    Ok((None, home))
}

/// The forward entry of `key` (client -> VIP), where it lives.
#[inline(always)]
pub fn find(key: &FlowKey) -> Option<*mut FlowTarget> {
    match find_in_slots::<FORWARD_HALF_OFFSET>(forward_index(key, flow_slot_mask()), key) {
        Found::Half(value) => Some(value as *mut FlowTarget),
        Found::Lru => FLOWS.get_ptr_mut(key),
        Found::Missing => None,
    }
}

/// Records `target` under `key`: over its entry unless `only_new`, else in its home half
/// if that is empty, else in the first empty buddy's, else in `FLOWS`.
#[inline(always)]
pub fn record(key: &FlowKey, target: &FlowTarget, only_new: bool) -> Result<(), NotRecorded> {
    let index = forward_index(key, flow_slot_mask());
    let (claimed, home) = take_half::<FORWARD_HALF_OFFSET>(index, key, only_new)?;
    if let Some(claimed) = claimed {
        write_key(claimed.half.key(), key);
        let value = claimed.half.value() as *mut FlowTarget;
        unsafe {
            write_volatile(addr_of_mut!((*value).backend), target.backend);
            write_volatile(addr_of_mut!((*value).service), target.service);
            write_volatile(addr_of_mut!((*value).state), target.state);
            write_volatile(addr_of_mut!((*value).last_seen), target.last_seen);
            write_volatile(addr_of_mut!((*value)._pad), 0);
        }
        claimed.publish();
        return Ok(());
    }
    let flags = if only_new { BPF_NOEXIST } else { BPF_ANY };
    match FLOWS.insert(key, target, flags as u64) {
        Ok(()) => {
            overflowed(home.tag());
            Ok(())
        }
        Err(-17) => {
            // It is there: make sure lookups look (a count lost to a race heals).
            overflowed(home.tag());
            Err(NotRecorded::Exists)
        }
        Err(_) => Err(NotRecorded::Failed),
    }
}

/// The reply entry of `key` (backend -> client), where it lives.
#[inline(always)]
pub fn find_return(key: &FlowKey) -> Option<*mut NatReturn> {
    match find_in_slots::<REPLY_HALF_OFFSET>(reply_index(key, flow_slot_mask()), key) {
        Found::Half(value) => Some(value as *mut NatReturn),
        Found::Lru => RETURN_FLOWS.get_ptr_mut(key),
        Found::Missing => None,
    }
}

/// Records a fresh reply entry under `key` (over an earlier one of the tuple): in its
/// home half if that holds the tuple or nothing, else in the first empty buddy's, else
/// in `RETURN_FLOWS`. `fill` writes the entry's fields into zeroed memory.
#[inline(always)]
pub fn record_return(key: &FlowKey, fill: impl Fn(*mut NatReturn)) -> Result<(), NotRecorded> {
    let index = reply_index(key, flow_slot_mask());
    let (claimed, home) = take_half::<REPLY_HALF_OFFSET>(index, key, false)?;
    if let Some(claimed) = claimed {
        write_key(claimed.half.key(), key);
        let nat = claimed.half.value() as *mut NatReturn;
        zero_return(nat);
        fill(nat);
        claimed.publish();
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
            overflowed(home.tag());
            Ok(())
        }
        Err(_) => Err(NotRecorded::Failed),
    }
}

/// Reads both tags of the home pair of reply `key`'s connection and of its first buddy,
/// without waiting for them: called on a SYN-ACK just before its reply lookup reads the
/// home (a cache miss in a large table), so that the reads of one page go out together
/// and take about as long as that one, and the connection's first ACK finds the half it
/// takes in the caches. Without it the ACK that finds its home taken
/// reads the buddy's line cold, one more miss. The other two buddies are not read: with
/// them the SYN-ACK cost more and the first ACK no less (measured, docs/performance.md).
#[inline(always)]
pub fn warm_block(key: &FlowKey) {
    let index = reply_index(key, flow_slot_mask());
    let touch = |i: u32| {
        if let Some(pair) = FLOW_SLOTS.get_ptr_mut(i) {
            unsafe {
                let _ = read_volatile(addr_of_mut!((*pair).forward.tag));
                let _ = read_volatile(addr_of_mut!((*pair).reply.tag));
            }
        }
    };
    touch(index);
    touch(buddies(index)[0]);
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
