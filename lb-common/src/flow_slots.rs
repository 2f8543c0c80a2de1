//! The IPv4 flow table's slots: each connection lives first in one element of a plain BPF
//! array, one 64-byte cache line that serves both directions, chosen by a hash of the
//! client's address and port, which both directions carry: the tuple's home slot, or,
//! when that holds another connection, one of its buddies (the three other slots of its
//! 256-byte block, in the same page, see [`buddies`]). A packet finds its connection with
//! one read the verifier inlines (no call into the kernel, one cache miss for a connection
//! in its home; the buddies are read too only when an entry of the home was put into one
//! since the controller's last sweep, more misses in the same page), and a new connection
//! is recorded with one compare-and-swap and a few stores instead of two LRU inserts.
//!
//! The slot holds the forward (client -> VIP) key and target, and the route back to the
//! client; a reply (backend -> client) is matched against it through its backend's
//! address and port (the `BACKENDS` entry of the slot's backend id, which the forward
//! direction reads anyway), so a connection takes one line instead of one per direction.
//! A connection whose home and buddies all hold others goes to the LRU maps
//! (`FLOWS` and `RETURN_FLOWS`, one entry per direction), as every flow did before the
//! slots: lookups try the home, then the buddies, then those maps, each only when an entry
//! of that home ever went there.
//!
//! The `tag` word says whether the slot is empty, being written, or holds a connection,
//! counts its writes (so that the controller, which empties expired slots, never empties
//! one that was rewritten since it looked), counts the entries of its home put into a
//! buddy (so that a miss skips the buddy reads when none ever was), and counts the
//! entries of its home put into the LRU maps (so that a packet whose home holds another
//! flow or nothing skips the LRU lookup when none ever was):
//! - the data path takes an empty slot, or rewrites one holding its own tuple, by
//!   compare-and-swap of the tag to busy, writes key and value, then flips the generation
//!   and state to ready with an atomic xor (a store would erase what other CPUs added to
//!   the counts meanwhile); it counts an entry it puts into a buddy or the LRU maps with
//!   an atomic add to the home's tag, after the write; it takes an empty slot (home or
//!   buddy) while its home's LRU count is not zero only once the LRU map said it holds
//!   no entry of the tuple (an entry it holds is written over there), and an empty slot
//!   while its displaced count is not zero only after looking in the buddies;
//! - the controller empties a slot by compare-and-swap from the ready tag it read; clears
//!   a home's LRU count, also by compare-and-swap, once a walk of the LRU maps that began
//!   after it read the tag found no entry of that home; and sets a home's displaced count
//!   to the number of its buddies that hold an entry of it (or are being written), by
//!   compare-and-swap from the tag it read first (tried again a few times when the tag
//!   changed). Only the controller empties a buddy, so between two of its sweeps a home's
//!   count grows by at most its buddies empty at the last sweep or emptied since, far
//!   from what the count's eight bits hold;
//! - readers take a slot whose tag is ready and whose key is theirs. A reader that reads
//!   a slot while it is rewritten can see a mixed entry, as with an LRU element reused
//!   under a reader; slots are rewritten only when empty or holding the reader's own
//!   tuple, so that needs two packets of one new flow on two CPUs at once.
use crate::{
    flow::{FlowKey, FlowTarget},
    nexthop::NextHop,
};

/// `tag & SLOT_STATE_MASK`: nothing in the slot.
pub const SLOT_EMPTY: u64 = 0;
/// `tag & SLOT_STATE_MASK`: a writer owns the slot.
pub const SLOT_BUSY: u64 = 1;
/// `tag & SLOT_STATE_MASK`: key and value are complete.
pub const SLOT_READY: u64 = 2;
/// The tag's state bits; bits 2-23 count the writes, bits 24-31 the entries of the home
/// put into a buddy, bits 32-63 the entries of the home put into the LRU maps.
pub const SLOT_STATE_MASK: u64 = 3;
const SLOT_GENERATION_MASK: u64 = 0x00ff_fffc;
/// One entry of the home put into a buddy, added to the home's tag.
pub const SLOT_DISPLACED_ONE: u64 = 1 << 24;
const SLOT_DISPLACED_MASK: u64 = 0xff << 24;
/// One entry put into the LRU maps, added to the home's tag.
pub const SLOT_OVERFLOW_ONE: u64 = 1 << 32;
const SLOT_LOW: u64 = 0xffff_ffff;

/// The tag a slot gets once written: the next generation, ready, its counts kept.
#[inline(always)]
pub const fn ready_tag(before: u64) -> u64 {
    let generation =
        ((before & SLOT_GENERATION_MASK) | SLOT_STATE_MASK).wrapping_add(1) & SLOT_GENERATION_MASK;
    (before & !(SLOT_GENERATION_MASK | SLOT_STATE_MASK)) | generation | SLOT_READY
}

/// The tag of a slot taken for writing from `tag`.
#[inline(always)]
pub const fn busy_tag(tag: u64) -> u64 {
    (tag & !SLOT_STATE_MASK) | SLOT_BUSY
}

/// The tag of a slot emptied from `ready`: the same generation and counts, empty.
#[inline(always)]
pub const fn empty_tag(ready: u64) -> u64 {
    ready & !SLOT_STATE_MASK
}

/// The state bits of a tag.
#[inline(always)]
pub const fn slot_state(tag: u64) -> u64 {
    tag & SLOT_STATE_MASK
}

/// Whether an entry of the home may be in the LRU maps.
#[inline(always)]
pub const fn may_overflow(tag: u64) -> bool {
    tag >> 32 != 0
}

/// `tag` with its LRU count cleared.
#[inline(always)]
pub const fn overflow_cleared(tag: u64) -> u64 {
    tag & SLOT_LOW
}

/// Whether an entry of the home may be in a buddy.
#[inline(always)]
pub const fn may_be_displaced(tag: u64) -> bool {
    tag & SLOT_DISPLACED_MASK != 0
}

/// The home's displaced count.
#[inline(always)]
pub const fn displaced(tag: u64) -> u64 {
    (tag & SLOT_DISPLACED_MASK) >> 24
}

/// `tag` with its displaced count set to `count` (at most 255).
#[inline(always)]
pub const fn with_displaced(tag: u64, count: u64) -> u64 {
    (tag & !SLOT_DISPLACED_MASK) | (count << 24 & SLOT_DISPLACED_MASK)
}

/// One element of `FLOW_SLOTS`: a connection, one whole cache line (the kernel aligns
/// array elements to 8 bytes and its array memory to pages, so 64-byte elements start on
/// cache lines). From `backend` on it reads as a [`FlowTarget`] whose padding word is
/// the route's `ifindex`: the data path hands out a pointer to it as the forward entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnSlot {
    /// State, generation, displaced and LRU counts, see the module doc.
    pub tag: u64,
    /// The forward (client -> VIP) key.
    pub key: FlowKey,
    /// [`FlowTarget::backend`].
    pub backend: u32,
    /// [`FlowTarget::service`].
    pub service: u32,
    /// [`FlowTarget::state`].
    pub state: u64,
    /// [`FlowTarget::last_seen`].
    pub last_seen: u32,
    /// The route back to the client, cached on the first reply (zeroed when the slot is
    /// written: nothing cached).
    pub route: NextHop,
}
const _: () = {
    use core::mem::offset_of;
    assert!(core::mem::size_of::<ConnSlot>() == 64);
    assert!(offset_of!(ConnSlot, key) == SLOT_KEY_OFFSET);
    assert!(offset_of!(ConnSlot, backend) == SLOT_TARGET_OFFSET);
    // The slot from `backend` on is a `FlowTarget` whose padding is the route's first
    // word: every field of the target but that one is the slot's own.
    assert!(offset_of!(ConnSlot, service) == SLOT_TARGET_OFFSET + offset_of!(FlowTarget, service));
    assert!(offset_of!(ConnSlot, state) == SLOT_TARGET_OFFSET + offset_of!(FlowTarget, state));
    assert!(
        offset_of!(ConnSlot, last_seen) == SLOT_TARGET_OFFSET + offset_of!(FlowTarget, last_seen)
    );
    assert!(offset_of!(ConnSlot, route) == SLOT_TARGET_OFFSET + offset_of!(FlowTarget, _pad));
    assert!(offset_of!(ConnSlot, route) + core::mem::size_of::<NextHop>() == 64);
};
/// Bytes from a [`ConnSlot`]'s start to its key.
pub const SLOT_KEY_OFFSET: usize = 8;
/// Bytes from a [`ConnSlot`]'s start to the [`FlowTarget`] it holds.
pub const SLOT_TARGET_OFFSET: usize = 24;

/// Which slot of an array of `mask + 1` a connection lives in, from its client's side:
/// the source of a forward key, the destination of a reply key. Not seeded from the
/// config: slots are never taken from a live flow, so a sender who can predict them can
/// only make flows take the LRU path.
#[inline(always)]
pub const fn slot_index(client_addr: u32, client_port: u16, proto: u8, mask: u32) -> u32 {
    let h = crate::hash::mix32(client_addr ^ 0x51_07_5e_ed);
    crate::hash::mix32(h ^ ((client_port as u32) << 8 | proto as u32)) & mask
}

/// How many buddies a home has.
pub const BUDDIES: usize = 3;

/// The slots that take the connections of home `index` that find it taken, in the order
/// they are tried: the other three slots of its 256-byte block, so in the same page (one
/// TLB entry for all four). Four candidates leave a connection to the LRU maps about a
/// third as often as two at half fill (see the tests).
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

/// Slots of `FLOW_SLOTS` for a flow table of `flow_table_size` connections: the next
/// power of two, so that the index is a mask.
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
/// full (4% at half full), so a fifth as many entries hold them, and the LRU evicts its
/// coldest beyond that. Beyond the slots' cap ([`flow_slots`]) the LRU maps also take the
/// connections the slots have no room for.
pub const fn overflow_entries(flow_table_size: u32) -> u32 {
    let slots = flow_slots(flow_table_size);
    let n = if flow_table_size > slots {
        flow_table_size - slots + slots / 5
    } else {
        flow_table_size / 5
    };
    if n == 0 {
        1
    } else {
        n
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

/// The parts of a slot's key words ([`key_words`] of its forward key) that a reply of the
/// connection carries as its destination, and what they must equal for reply `key`: the
/// client's address in the first word, its port and the protocol and family in the
/// second. The backend's side is matched apart, through the slot's backend id.
#[inline(always)]
pub const fn reply_client_words(key: &FlowKey) -> ((u64, u64), (u64, u64)) {
    (
        (0xffff_ffff, key.dst_addr as u64),
        (
            0xffff_0000_ffff,
            key.dst_port as u64 | (key.proto as u64) << 32 | (key.family as u64) << 40,
        ),
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
    fn the_counts_survive_writes_and_wrapping_generations_and_only_clearing_ends_them() {
        let counted = ready_tag(SLOT_EMPTY) + 3 * SLOT_OVERFLOW_ONE + 2 * SLOT_DISPLACED_ONE;
        assert!(may_overflow(counted));
        assert!(may_be_displaced(counted));
        assert!(!may_overflow(ready_tag(SLOT_EMPTY)));
        assert!(!may_be_displaced(ready_tag(SLOT_EMPTY)));
        let rewritten = ready_tag(busy_tag(counted));
        assert_eq!((rewritten >> 32, displaced(rewritten)), (3, 2));
        assert_eq!(
            (empty_tag(rewritten) >> 32, displaced(empty_tag(rewritten))),
            (3, 2)
        );
        // The last generation wraps to the first without carrying into the counts.
        let last = (3 * SLOT_OVERFLOW_ONE) | (2 * SLOT_DISPLACED_ONE) | 0x00ff_fffe;
        let wrapped = ready_tag(busy_tag(last));
        assert_eq!(
            (wrapped >> 32, displaced(wrapped), slot_state(wrapped)),
            (3, 2, SLOT_READY)
        );
        assert_ne!(wrapped & 0x00ff_fffc, last & 0x00ff_fffc);
        let cleared = overflow_cleared(rewritten);
        assert!(!may_overflow(cleared));
        assert_eq!(cleared & 0xffff_ffff, rewritten & 0xffff_ffff);
        let recounted = with_displaced(rewritten, 1);
        assert_eq!((recounted >> 32, displaced(recounted)), (3, 1));
        assert_eq!(recounted & 0x00ff_ffff, rewritten & 0x00ff_ffff);
        assert!(!may_be_displaced(with_displaced(rewritten, 0)));
    }

    #[test]
    fn publishing_keeps_counts_added_while_the_slot_was_busy() {
        // What the data path's xor does: from busy to ready, whatever other CPUs added.
        let tag = ready_tag(SLOT_EMPTY) + SLOT_DISPLACED_ONE;
        let busy = busy_tag(tag);
        let added = busy + SLOT_DISPLACED_ONE + SLOT_OVERFLOW_ONE;
        let published = added ^ (busy_tag(tag) ^ ready_tag(tag));
        assert_eq!(slot_state(published), SLOT_READY);
        assert_eq!((published >> 32, displaced(published)), (1, 2));
        assert_eq!(published & 0x00ff_fffc, ready_tag(tag) & 0x00ff_fffc);
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
    /// buddy, else the LRU map) into `1 << 16` slots, then returns the share of them left
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
        assert!(overflow_entries(1 << 16) <= 1 << 14);
        assert_eq!(overflow_entries(1_000_000), 200_000);
        // Beyond the slots' cap the LRU maps hold the rest, and their fifth of the slots.
        assert_eq!(
            overflow_entries(1 << 27),
            (1 << 27) - (1 << 24) + (1 << 24) / 5
        );
        assert_eq!(overflow_entries(1), 1);
        // A new connection at half fill finds its four candidates taken 14% of the time
        // (26% with the home and one buddy): the average hides the blocks already full.
        assert!(
            (0.12..0.17).contains(&next_at_half),
            "next at half full: {next_at_half}"
        );
    }

    /// Connections placed as the data path places them into `1 << 14` slots, `fill` of
    /// the slots' count at a time, while `turnover` times as many end (each a random live
    /// one, its slot emptied at once) and as many new ones arrive between two sweeps of
    /// the controller (which clear the LRU counts of homes with no live entry there).
    /// `blocking`: a home whose LRU count is not zero sends all its new connections to
    /// the LRU map, as the data path once did. Returns the live connections in the LRU
    /// map just before each sweep, at most, as a share of the slots.
    fn lru_share_under_churn(fill: f64, turnover: f64, blocking: bool) -> f64 {
        let mask = (1u32 << 14) - 1;
        let slots = mask as usize + 1;
        let home_of = |n: u32| {
            let flow = FlowKey {
                src_addr: 0x0a00_0000 | (n >> 12),
                src_port: 1024 + (n & 0xfff) as u16,
                ..key(0)
            };
            forward_index(&flow, mask)
        };
        let mut holder: Vec<Option<u32>> = vec![None; slots];
        let mut lru_count = vec![0u32; slots];
        // Live connections: (id, home, slot if in one).
        let mut live: Vec<(u32, u32, Option<u32>)> = Vec::new();
        let mut next = 0u32;
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut add = |holder: &mut Vec<Option<u32>>, lru_count: &mut Vec<u32>| {
            let (id, home) = (next, home_of(next));
            next += 1;
            let slot = if blocking && lru_count[home as usize] > 0 {
                None
            } else {
                core::iter::once(home)
                    .chain(buddies(home))
                    .find(|&i| holder[i as usize].is_none())
            };
            match slot {
                Some(i) => holder[i as usize] = Some(id),
                None => lru_count[home as usize] += 1,
            }
            (id, home, slot)
        };
        let live_count = (fill * slots as f64) as usize;
        for _ in 0..live_count {
            let conn = add(&mut holder, &mut lru_count);
            live.push(conn);
        }
        let sweep = |live: &[(u32, u32, Option<u32>)], lru_count: &mut Vec<u32>| {
            lru_count.iter_mut().for_each(|c| *c = 0);
            for &(_, home, slot) in live {
                if slot.is_none() {
                    lru_count[home as usize] += 1;
                }
            }
        };
        sweep(&live, &mut lru_count);
        let mut most = 0;
        for _ in 0..8 {
            for _ in 0..(turnover * live_count as f64) as usize {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let (_, _, slot) = live.swap_remove((rng % live.len() as u64) as usize);
                if let Some(i) = slot {
                    holder[i as usize] = None;
                }
                let conn = add(&mut holder, &mut lru_count);
                live.push(conn);
            }
            most = most.max(live.iter().filter(|c| c.2.is_none()).count());
            sweep(&live, &mut lru_count);
        }
        most as f64 / slots as f64
    }

    #[test]
    fn under_churn_a_table_at_80_percent_keeps_its_lru_share_within_the_lru_maps_but_a_full_one_does_not(
    ) {
        // The LRU maps hold a fifth of the slots' count.
        let held = f64::from(overflow_entries(1 << 14)) / f64::from(1u32 << 14);
        assert!((0.19..0.21).contains(&held), "{held}");
        // Filled once, 10% of the slots' count goes to the LRU maps (12.6% of the
        // connections); under churn (every connection replaced by a new one, eight times
        // over), 18.4% at most: the connections left there stay while the slots they
        // found taken empty.
        let fresh = lru_share_under_churn(0.8, 0.0, false);
        let churned = lru_share_under_churn(0.8, 1.0, false);
        assert!((0.09..0.11).contains(&fresh), "{fresh}");
        assert!((0.17..held).contains(&churned), "{churned}");
        // Had homes that count an entry in the LRU maps sent every new connection there
        // until the sweep, 27.9%: more than the maps hold, so the LRU would evict live
        // connections.
        let blocked = lru_share_under_churn(0.8, 1.0, true);
        assert!((0.26..0.30).contains(&blocked), "{blocked}");
        // At 85% of the table's size the churned share, 21%, is already more than the
        // maps hold, and at its full size 29-31%: under churn the LRU evicts live
        // connections from about 83% of `flow_table_size` (see docs/config.md).
        let most = lru_share_under_churn(0.85, 1.0, false);
        assert!((held..0.23).contains(&most), "{most}");
        for (turnover, range) in [(0.1, 0.28..0.31), (1.0, 0.30..0.33)] {
            let full = lru_share_under_churn(1.0, turnover, false);
            assert!(range.contains(&full), "{turnover}: {full}");
        }
    }

    #[test]
    fn buddies_are_the_other_slots_of_their_256_byte_block() {
        assert_eq!(buddies(0), [1, 2, 3]);
        assert_eq!(buddies(6), [7, 4, 5]);
        // 4 KiB pages hold 64 slots: a slot and its buddies share one.
        for i in [0u32, 63, 64, 1 << 20] {
            for b in buddies(i) {
                assert_eq!(i / 64, b / 64);
                assert_eq!(i / 4, b / 4);
                assert_ne!(i, b);
            }
        }
    }

    #[test]
    fn both_directions_of_a_connection_find_the_same_slot() {
        let forward = key(40_000);
        let reply = forward.reply_from(0x0a01_000b, 8080);
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

    #[test]
    fn a_reply_matches_the_client_side_of_its_forward_key_and_nothing_else() {
        let forward = key(40_000);
        let reply = forward.reply_from(0x0a01_000b, 8080);
        let matches = |slot: &FlowKey| {
            let (a, b) = key_words(slot);
            let ((mask_a, want_a), (mask_b, want_b)) = reply_client_words(&reply);
            a & mask_a == want_a && b & mask_b == want_b
        };
        assert!(matches(&forward));
        // Another VIP or port of the same client's tuple matches too: the backend decides.
        assert!(matches(&FlowKey {
            dst_addr: 9,
            dst_port: 9,
            ..forward
        }));
        for other in [
            FlowKey {
                src_addr: 1,
                ..forward
            },
            FlowKey {
                src_port: 1,
                ..forward
            },
            FlowKey {
                proto: 17,
                ..forward
            },
            FlowKey {
                family: 10,
                ..forward
            },
        ] {
            assert!(!matches(&other), "{other:?}");
        }
    }
}
