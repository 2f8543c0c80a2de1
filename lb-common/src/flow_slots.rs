//! The IPv4 flow tables' slots: each connection's two entries (client -> VIP and backend
//! -> client) live first in one element of a plain BPF array, side by side in two cache
//! lines, chosen by a hash of the client's address and port, which both directions carry:
//! the tuple's home element, or, when a half of that holds another flow, the same half of
//! one of its buddies (the three other elements of its 512-byte block, in the same page,
//! see [`buddies`]). A packet finds its flow with one read the verifier inlines (no call
//! into the kernel, one cache miss for a flow in its home; the buddies are read too only
//! when an entry of the home was put into one since the controller's last sweep, more
//! misses in the same page), and a new connection is recorded with stores instead of LRU
//! inserts. An entry whose home and buddy halves all hold other flows goes to the LRU map
//! of its direction (`FLOWS` / `RETURN_FLOWS`), as every flow did before: lookups try the
//! home, then the buddies, then that map, each only when an entry of that home ever went
//! there.
//!
//! Each half's `tag` word says whether it is empty, being written, or holds an entry,
//! counts its writes (so that the controller, which empties expired halves, never empties
//! one that was rewritten since it looked), and counts the entries of its home put into
//! the LRU map (so that a packet whose home holds another flow or nothing skips the LRU
//! lookup when none ever was); its `displaced` word counts the entries of its home put
//! into a buddy's half, so that a miss skips the buddy reads when none ever was:
//! - the data path takes an empty half, or rewrites one holding its own tuple, by
//!   compare-and-swap of the tag to busy, writes key and value, then flips the low word to
//!   the next generation's ready state with an atomic xor (a store would erase what other
//!   CPUs added to the count meanwhile); it counts an entry it puts into a buddy or the
//!   LRU map instead with an atomic add to the home half, after the write, and never takes
//!   an empty half (home or buddy) while its home's LRU count is not zero (the tuple may be
//!   in the LRU map), nor an empty half while its displaced count is not zero without
//!   looking in the buddies first;
//! - the controller empties a half by compare-and-swap from the ready tag it read; clears
//!   a half's LRU count, also by compare-and-swap, once a walk of the LRU map that began
//!   after it read the tag found no entry of that home; clears a displaced count, by
//!   compare-and-swap from the count it read first, when no buddy's half then holds an
//!   entry of that home (or is being written); it also empties a reply half whose
//!   forward entry is gone, which an LRU map would have evicted in time;
//! - readers take a half whose tag is ready and whose key is theirs. A reader that reads
//!   a half while it is rewritten can see a mixed entry, as with an LRU element reused
//!   under a reader; halves are rewritten only when empty or holding the reader's own
//!   tuple, so that needs two packets of one new flow on two CPUs at once.
use crate::flow::{FlowKey, FlowTarget, NatReturn};

/// `tag & SLOT_STATE_MASK`: nothing in the half.
pub const SLOT_EMPTY: u64 = 0;
/// `tag & SLOT_STATE_MASK`: a writer owns the half.
pub const SLOT_BUSY: u64 = 1;
/// `tag & SLOT_STATE_MASK`: key and value are complete.
pub const SLOT_READY: u64 = 2;
/// The tag's state bits; bits 2-31 count the writes, bits 32-63 the entries of the slot
/// put into the LRU map.
pub const SLOT_STATE_MASK: u64 = 3;
/// One entry put into the LRU map, added to the tag.
pub const SLOT_OVERFLOW_ONE: u64 = 1 << 32;
const SLOT_LOW: u64 = 0xffff_ffff;

/// The tag a half gets once written: the next generation, ready, its LRU count kept.
#[inline(always)]
pub const fn ready_tag(before: u64) -> u64 {
    let generation = ((before & SLOT_LOW) | SLOT_STATE_MASK).wrapping_add(1) & SLOT_LOW;
    (before & !SLOT_LOW) | generation | SLOT_READY
}

/// The tag of a half taken for writing from `tag`.
#[inline(always)]
pub const fn busy_tag(tag: u64) -> u64 {
    (tag & !SLOT_STATE_MASK) | SLOT_BUSY
}

/// The tag of a half emptied from `ready`: the same generation and LRU count, empty.
#[inline(always)]
pub const fn empty_tag(ready: u64) -> u64 {
    ready & !SLOT_STATE_MASK
}

/// The state bits of a tag.
#[inline(always)]
pub const fn slot_state(tag: u64) -> u64 {
    tag & SLOT_STATE_MASK
}

/// Whether an entry of the half's slot may be in the LRU map.
#[inline(always)]
pub const fn may_overflow(tag: u64) -> bool {
    tag >> 32 != 0
}

/// `tag` with its LRU count cleared.
#[inline(always)]
pub const fn overflow_cleared(tag: u64) -> u64 {
    tag & SLOT_LOW
}

/// A forward (client -> VIP) entry: the first half of a [`SlotPair`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowSlot {
    /// State, generation and LRU count, see the module doc.
    pub tag: u64,
    pub key: FlowKey,
    pub target: FlowTarget,
    pub _pad: [u32; 3],
    /// Entries of this home put into a buddy's forward half (see the module doc).
    pub displaced: u32,
}
const _: () = assert!(core::mem::size_of::<FlowSlot>() == 64);

/// A reply (backend -> client) entry: the second half of a [`SlotPair`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReturnSlot {
    /// State, generation and LRU count, see the module doc.
    pub tag: u64,
    pub key: FlowKey,
    pub nat: NatReturn,
    /// Entries of this home put into a buddy's reply half (see the module doc).
    pub displaced: u32,
}
const _: () = assert!(core::mem::size_of::<ReturnSlot>() == 64);

/// One element of `FLOW_SLOTS`: a connection's two entries, two whole cache lines (the
/// kernel aligns array elements to 8 bytes and its array memory to pages, so 128-byte
/// elements start on cache-line pairs), which CPUs that fetch lines in pairs read at
/// once.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlotPair {
    pub forward: FlowSlot,
    pub reply: ReturnSlot,
}
const _: () = assert!(core::mem::size_of::<SlotPair>() == 128);

/// Both halves keep their words at the same offsets from the half's start, so that one
/// piece of code reaches either.
pub const HALF_VALUE_OFFSET: usize = 24;
pub const HALF_DISPLACED_OFFSET: usize = 60;
const _: () = {
    use core::mem::offset_of;
    assert!(offset_of!(FlowSlot, tag) == 0 && offset_of!(ReturnSlot, tag) == 0);
    assert!(offset_of!(FlowSlot, key) == 8 && offset_of!(ReturnSlot, key) == 8);
    assert!(offset_of!(FlowSlot, target) == HALF_VALUE_OFFSET);
    assert!(offset_of!(ReturnSlot, nat) == HALF_VALUE_OFFSET);
    assert!(offset_of!(FlowSlot, displaced) == HALF_DISPLACED_OFFSET);
    assert!(offset_of!(ReturnSlot, displaced) == HALF_DISPLACED_OFFSET);
    assert!(offset_of!(SlotPair, forward) == FORWARD_HALF_OFFSET);
    assert!(offset_of!(SlotPair, reply) == REPLY_HALF_OFFSET);
};
/// Bytes from a [`SlotPair`]'s start to each half.
pub const FORWARD_HALF_OFFSET: usize = 0;
pub const REPLY_HALF_OFFSET: usize = 64;

/// Word offsets (in u64) of each half's tag in a [`SlotPair`], for atomic access.
pub const FORWARD_TAG_WORD: usize = 0;
pub const REPLY_TAG_WORD: usize = 8;

/// Which slot of an array of `mask + 1` a connection lives in, from its client's side:
/// the source of a forward key, the destination of a reply key. Not seeded from the
/// config: halves are never taken from a live flow, so a sender who can predict them can
/// only make flows take the LRU path.
#[inline(always)]
pub const fn slot_index(client_addr: u32, client_port: u16, proto: u8, mask: u32) -> u32 {
    let h = crate::hash::mix32(client_addr ^ 0x51_07_5e_ed);
    crate::hash::mix32(h ^ ((client_port as u32) << 8 | proto as u32)) & mask
}

/// How many buddies a home has.
pub const BUDDIES: usize = 3;

/// The elements whose halves take the entries of home `index` that find their own halves
/// taken, in the order they are tried: the other three elements of its 512-byte block, so
/// in the same page (one TLB entry for all four). Four candidates leave a connection to
/// the LRU map about a third as often as two at half fill (see the tests).
#[inline(always)]
pub const fn buddies(index: u32) -> [u32; BUDDIES] {
    [index ^ 1, index ^ 2, index ^ 3]
}

/// [`slot_index`] of a forward (client -> VIP) key.
#[inline(always)]
pub const fn forward_index(key: &FlowKey, mask: u32) -> u32 {
    slot_index(key.src_addr, key.src_port, key.proto, mask)
}

/// [`slot_index`] of a reply (backend -> client) key.
#[inline(always)]
pub const fn reply_index(key: &FlowKey, mask: u32) -> u32 {
    slot_index(key.dst_addr, key.dst_port, key.proto, mask)
}

/// Slot pairs of `FLOW_SLOTS` for a flow table of `flow_table_size` connections: the
/// next power of two, so that the index is a mask.
pub const fn flow_slots(flow_table_size: u32) -> u32 {
    let n = if flow_table_size > 1 << 24 {
        1 << 24
    } else {
        flow_table_size
    };
    if n <= 1 {
        1
    } else {
        n.next_power_of_two()
    }
}

/// Entries of each LRU map behind the slots (`FLOWS`, `RETURN_FLOWS`) for a flow table of
/// `flow_table_size` connections. Connections hashed into as many slots, each with its
/// home and its three buddies, leave about 19% of them to the LRU maps when the table is
/// full (4% at half full), so half as many entries hold them with room to spare, and the
/// LRU evicts its coldest beyond that.
pub const fn overflow_entries(flow_table_size: u32) -> u32 {
    if flow_table_size < 2 {
        1
    } else {
        flow_table_size / 2
    }
}

/// The two words of a key that decide equality (the rest is padding).
#[inline(always)]
pub const fn key_words(key: &FlowKey) -> (u64, u64) {
    (
        key.src_addr as u64 | (key.dst_addr as u64) << 32,
        key.src_port as u64
            | (key.dst_port as u64) << 16
            | (key.proto as u64) << 32
            | (key.family as u64) << 40,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(port: u16) -> FlowKey {
        FlowKey {
            src_addr: 0x0a00_0001,
            dst_addr: 0x0a00_0064,
            src_port: port,
            dst_port: 80,
            proto: 6,
            family: 2,
            _pad: [0; 2],
        }
    }

    #[test]
    fn tags_move_through_busy_to_a_new_ready_generation_and_empty_keeps_it() {
        let t0 = SLOT_EMPTY;
        let t1 = ready_tag(t0);
        assert_eq!(slot_state(t1), SLOT_READY);
        let busy = busy_tag(t1);
        assert_eq!(slot_state(busy), SLOT_BUSY);
        let t2 = ready_tag(busy);
        assert_eq!(slot_state(t2), SLOT_READY);
        assert_ne!(t1, t2, "a rewrite changes the generation");
        assert_eq!(slot_state(empty_tag(t2)), SLOT_EMPTY);
        assert_ne!(
            ready_tag(empty_tag(t2)),
            t2,
            "a reused slot gets a new generation"
        );
        assert_ne!(ready_tag(empty_tag(t2)), t1);
    }

    #[test]
    fn the_lru_count_survives_writes_and_wrapping_generations_and_only_clearing_ends_it() {
        let counted = ready_tag(SLOT_EMPTY) + 3 * SLOT_OVERFLOW_ONE;
        assert!(may_overflow(counted));
        assert!(!may_overflow(ready_tag(SLOT_EMPTY)));
        let rewritten = ready_tag(busy_tag(counted));
        assert_eq!(rewritten >> 32, 3);
        assert_eq!(empty_tag(rewritten) >> 32, 3);
        // The last generation wraps to the first without carrying into the count.
        let last = (3 * SLOT_OVERFLOW_ONE) | 0xffff_fffe;
        let wrapped = ready_tag(busy_tag(last));
        assert_eq!((wrapped >> 32, slot_state(wrapped)), (3, SLOT_READY));
        assert_ne!(wrapped & 0xffff_fffc, last & 0xffff_fffc);
        let cleared = overflow_cleared(rewritten);
        assert!(!may_overflow(cleared));
        assert_eq!(cleared & 0xffff_ffff, rewritten & 0xffff_ffff);
    }

    #[test]
    fn slots_are_a_power_of_two_covering_the_table_up_to_a_cap() {
        assert_eq!(flow_slots(0), 1);
        assert_eq!(flow_slots(1024), 1024);
        assert_eq!(flow_slots(1000), 1024);
        assert_eq!(flow_slots(1_048_576), 1_048_576);
        assert_eq!(flow_slots(u32::MAX), 1 << 24);
    }

    #[test]
    fn indexes_spread_over_the_slots() {
        let mask = 1023;
        let mut used = std::collections::HashSet::new();
        for port in 0..1024 {
            let i = forward_index(&key(port), mask);
            assert!(i <= mask);
            used.insert(i);
        }
        // 1,024 keys thrown into 1,024 slots fill about 1 - 1/e of them.
        assert!(
            (600..=700).contains(&used.len()),
            "{} slots used",
            used.len()
        );
    }

    /// Places `connections` as the data path places them (home, else the first empty
    /// buddy, else the LRU map) into `1 << 16` pairs, then returns the share of them left
    /// to the LRU map, and the share of as many new connections (not placed) whose home
    /// and buddies are all taken: what the next connection's entry pays.
    fn overflow_shares(connections: u32) -> (f64, f64) {
        let mask = (1u32 << 16) - 1;
        let mut taken = vec![false; mask as usize + 1];
        let flow = |n: u32| FlowKey {
            src_addr: 0x0a00_0000 | (n >> 12),
            src_port: 1024 + (n & 0xfff) as u16,
            ..key(0)
        };
        let candidates = |n: u32| {
            let home = forward_index(&flow(n), mask);
            core::iter::once(home).chain(buddies(home))
        };
        let mut overflowed = 0;
        for n in 0..connections {
            match candidates(n).find(|&i| !taken[i as usize]) {
                Some(i) => taken[i as usize] = true,
                None => overflowed += 1,
            }
        }
        let next = (connections..2 * connections)
            .filter(|&n| candidates(n).all(|i| taken[i as usize]))
            .count();
        (
            f64::from(overflowed) / f64::from(connections),
            next as f64 / f64::from(connections),
        )
    }

    #[test]
    fn a_home_and_three_buddies_leave_4_percent_of_a_half_full_table_to_the_lru_and_19_of_a_full_one(
    ) {
        // Four slots shared by four homes: with k arrivals (Poisson, mean 4 x fill), all
        // but four overflow; 3.8% of the connections at half fill, 19.5% at full. With the
        // home and one buddy it was 10.4% and 27.1%; with the home alone 21.3% and 36.8%.
        let (half, next_at_half) = overflow_shares(1 << 15);
        let (full, _) = overflow_shares(1 << 16);
        assert!((0.03..0.05).contains(&half), "half full: {half}");
        assert!((0.18..0.21).contains(&full), "full: {full}");
        assert!(overflow_entries(1 << 16) as f64 >= full * f64::from(1u32 << 16));
        // A new connection at half fill finds its four candidates taken 14% of the time
        // (26% with the home and one buddy): the average hides the blocks already full.
        assert!(
            (0.12..0.17).contains(&next_at_half),
            "next at half full: {next_at_half}"
        );
    }

    #[test]
    fn buddies_are_the_other_pairs_of_their_512_byte_block() {
        assert_eq!(buddies(0), [1, 2, 3]);
        assert_eq!(buddies(6), [7, 4, 5]);
        // 4 KiB pages hold 32 pairs: a pair and its buddies share one.
        for i in [0u32, 31, 32, 1 << 20] {
            for b in buddies(i) {
                assert_eq!(i / 32, b / 32);
                assert_eq!(i / 4, b / 4);
                assert_ne!(i, b);
            }
        }
    }

    #[test]
    fn both_directions_of_a_connection_find_the_same_slot() {
        let forward = key(40_000);
        let reply = FlowKey {
            src_addr: 0x0a01_000b,
            dst_addr: forward.src_addr,
            src_port: 8080,
            dst_port: forward.src_port,
            ..forward
        };
        for mask in [1023, (1 << 20) - 1] {
            assert_eq!(forward_index(&forward, mask), reply_index(&reply, mask));
        }
    }

    #[test]
    fn key_words_tell_every_field_apart_and_ignore_padding() {
        let a = key(1000);
        let mut padded = a;
        padded._pad = [7, 7];
        assert_eq!(key_words(&a), key_words(&padded));
        for b in [
            FlowKey { src_addr: 1, ..a },
            FlowKey { dst_addr: 1, ..a },
            FlowKey { src_port: 1, ..a },
            FlowKey { dst_port: 1, ..a },
            FlowKey { proto: 17, ..a },
            FlowKey { family: 10, ..a },
        ] {
            assert_ne!(key_words(&a), key_words(&b), "{b:?}");
        }
    }
}
