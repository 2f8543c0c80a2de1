//! The service index: how the data path finds the service of a VIP:port without calling
//! into the kernel. A hash-map lookup from BPF is three kernel function calls, about
//! 30 ns on a machine whose returns are slowed by speculation mitigations (see
//! docs/performance.md); an array lookup is inlined by the verifier.
//!
//! Open addressing with linear probing over a power-of-two array of [`ServiceSlot`]s, at
//! most [`SERVICE_INDEX_PROBES`] slots from a key's home. Each slot is two 64-bit words,
//! and the controller writes each with one atomic store through a memory mapping, so a
//! packet never sees half a word:
//!
//! - `key`: the [`ServiceKey`] as one word ([`key_word`]), or [`SLOT_EMPTY`] (ends a
//!   probe) or [`SLOT_REMOVED`] (a removed service; the probe goes on);
//! - `meta`: the [`ServiceMeta`] packed into one word ([`pack_meta`]), so a table flip
//!   (live slot and table length together) is a single store.
//!
//! A new service's meta is stored before its key. A removed service's slot is reused only
//! when its key's probe window has no empty slot, so a packet that matched a key just
//! before its removal almost never reads the meta of the service that took the slot.
use crate::{
    hash::mix32,
    service::{ServiceKey, ServiceMeta},
};

/// One slot of the index.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ServiceSlot {
    pub key: u64,
    pub meta: u64,
}
const _: () = assert!(core::mem::size_of::<ServiceSlot>() == 16);

/// A slot never used: a probe stops here.
pub const SLOT_EMPTY: u64 = 0;
/// A slot whose service was removed: a probe goes on past it.
pub const SLOT_REMOVED: u64 = u64::MAX;

/// The most slots a lookup reads.
pub const SERVICE_INDEX_PROBES: u32 = 8;

/// Slots for `max_services` services: four per service, a power of two, at least
/// [`SERVICE_INDEX_PROBES`]. At a quarter full, a key rarely needs more than one probe.
pub const fn service_index_slots(max_services: u32) -> u32 {
    let wanted = max_services as u64 * 4;
    let n = if wanted < SERVICE_INDEX_PROBES as u64 {
        SERVICE_INDEX_PROBES as u64
    } else if wanted > 1 << 31 {
        1 << 31
    } else {
        wanted
    };
    n.next_power_of_two() as u32
}

/// The key as one word. A real key has a non-zero family, and no family is 0xff, so it
/// is never [`SLOT_EMPTY`] or [`SLOT_REMOVED`].
#[inline(always)]
pub fn key_word(key: &ServiceKey) -> u64 {
    key.addr as u64 | (key.port as u64) << 32 | (key.proto as u64) << 48 | (key.family as u64) << 56
}

/// The key a word holds (see [`key_word`]).
#[inline(always)]
pub fn key_of_word(word: u64) -> ServiceKey {
    ServiceKey {
        addr: word as u32,
        port: (word >> 32) as u16,
        proto: (word >> 48) as u8,
        family: (word >> 56) as u8,
    }
}

/// The first slot a key is looked for in.
#[inline(always)]
pub fn home(word: u64) -> u32 {
    mix32(word as u32 ^ mix32((word >> 32) as u32))
}

const TABLE_LEN_SHIFT: u32 = 32;
const POLICY_SHIFT: u32 = 48;
const FLAGS_SHIFT: u32 = 56;
const FLAGS_BITS: u32 = 7;
const ACTIVE_SLOT_SHIFT: u32 = 63;

/// `meta` in one word: id (32 bits), table length (16), policy (8), flags (7), live slot
/// (1). `None` if a field does not fit.
pub fn pack_meta(meta: &ServiceMeta) -> Option<u64> {
    let fits = meta.table_len <= u16::MAX as u32
        && meta.policy <= u8::MAX as u32
        && meta.flags < 1 << FLAGS_BITS
        && meta.active_slot <= 1;
    fits.then_some(
        meta.id as u64
            | (meta.table_len as u64) << TABLE_LEN_SHIFT
            | (meta.policy as u64) << POLICY_SHIFT
            | (meta.flags as u64) << FLAGS_SHIFT
            | (meta.active_slot as u64) << ACTIVE_SLOT_SHIFT,
    )
}

/// A service's meta as the index holds it (see [`pack_meta`]), read field by field: the
/// data path keeps it in one register instead of a 24-byte struct on its small stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackedMeta(pub u64);

impl PackedMeta {
    #[inline(always)]
    pub fn id(self) -> u32 {
        self.0 as u32
    }
    #[inline(always)]
    pub fn active_slot(self) -> u32 {
        (self.0 >> ACTIVE_SLOT_SHIFT) as u32
    }
    #[inline(always)]
    pub fn policy(self) -> u32 {
        (self.0 >> POLICY_SHIFT) as u32 & 0xff
    }
    #[inline(always)]
    pub fn flags(self) -> u32 {
        (self.0 >> FLAGS_SHIFT) as u32 & ((1 << FLAGS_BITS) - 1)
    }
    #[inline(always)]
    pub fn table_len(self) -> u32 {
        (self.0 >> TABLE_LEN_SHIFT) as u32 & 0xffff
    }
}

/// The meta a word holds (see [`pack_meta`]).
pub fn unpack_meta(word: u64) -> ServiceMeta {
    let packed = PackedMeta(word);
    ServiceMeta {
        id: packed.id(),
        active_slot: packed.active_slot(),
        policy: packed.policy(),
        flags: packed.flags(),
        table_len: packed.table_len(),
        _pad: 0,
    }
}

/// The slot holding `key` in an index of `mask + 1` slots whose keys `key_at` reads.
#[inline(always)]
pub fn find(key: u64, mask: u32, key_at: impl Fn(u32) -> u64) -> Option<u32> {
    find_within(key, mask, SERVICE_INDEX_PROBES, key_at)
}

/// [`find`] with the probe count as a value: the data path passes it in a form LLVM
/// cannot unroll the loop over (unrolled, every probe's registers get their own stack
/// slots, and the XDP program's stack is 512 bytes).
#[inline(always)]
pub fn find_within(key: u64, mask: u32, probes: u32, key_at: impl Fn(u32) -> u64) -> Option<u32> {
    let start = home(key);
    for probe in 0..probes.min(SERVICE_INDEX_PROBES) {
        let at = start.wrapping_add(probe) & mask;
        let here = key_at(at);
        if here == key {
            return Some(at);
        }
        if here == SLOT_EMPTY {
            return None;
        }
    }
    None
}

/// Where the controller writes `key`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// The key's slot: only its meta changes.
    Existing(u32),
    /// A free slot: meta first, then the key.
    Free(u32),
}

/// Where `key` goes: its own slot if present, else the first empty slot of its probe
/// window, else the first removed one. `None`: the window is full of other services.
pub fn place(key: u64, mask: u32, key_at: impl Fn(u32) -> u64) -> Option<Placement> {
    let start = home(key);
    let mut removed = None;
    for probe in 0..SERVICE_INDEX_PROBES {
        let at = start.wrapping_add(probe) & mask;
        match key_at(at) {
            here if here == key => return Some(Placement::Existing(at)),
            SLOT_EMPTY => return Some(Placement::Free(at)),
            SLOT_REMOVED => {
                removed.get_or_insert(at);
            }
            _ => {}
        }
    }
    removed.map(Placement::Free)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::{
        net::{FAMILY_IPV4, PROTO_TCP},
        service::{POLICY_LEAST_CONN, SERVICE_F_NAT, SERVICE_F_STATELESS_SYN},
    };

    fn key(i: u32) -> ServiceKey {
        ServiceKey {
            addr: 0x0a00_0000 + i,
            port: (i as u16).wrapping_add(80).to_be(),
            proto: PROTO_TCP,
            family: FAMILY_IPV4,
        }
    }

    /// An index in a Vec, written as the controller writes the real one.
    struct Index(Vec<u64>);

    impl Index {
        fn new(slots: u32) -> Self {
            Index(vec![SLOT_EMPTY; slots as usize])
        }
        fn mask(&self) -> u32 {
            self.0.len() as u32 - 1
        }
        fn insert(&mut self, k: u64) -> Option<u32> {
            let at = match place(k, self.mask(), |i| self.0[i as usize])? {
                Placement::Existing(at) | Placement::Free(at) => at,
            };
            self.0[at as usize] = k;
            Some(at)
        }
        fn remove(&mut self, k: u64) {
            let at = find(k, self.mask(), |i| self.0[i as usize]).unwrap();
            self.0[at as usize] = SLOT_REMOVED;
        }
        fn find(&self, k: u64) -> Option<u32> {
            find(k, self.mask(), |i| self.0[i as usize])
        }
    }

    #[test]
    fn keys_round_trip_and_never_look_empty_or_removed() {
        for i in [0, 1, 0xffff, u32::MAX - 0x0a00_0000] {
            let w = key_word(&key(i));
            assert_eq!(key_of_word(w), key(i));
            assert!(w != SLOT_EMPTY && w != SLOT_REMOVED);
        }
    }

    #[test]
    fn meta_round_trips_and_refuses_what_does_not_fit() {
        let meta = ServiceMeta {
            id: 63,
            active_slot: 1,
            policy: POLICY_LEAST_CONN,
            flags: SERVICE_F_NAT | SERVICE_F_STATELESS_SYN,
            table_len: 4096,
            _pad: 0,
        };
        assert_eq!(unpack_meta(pack_meta(&meta).unwrap()), meta);
        let zero = ServiceMeta {
            id: 0,
            active_slot: 0,
            policy: 0,
            flags: 0,
            table_len: 0,
            _pad: 0,
        };
        assert_eq!(unpack_meta(pack_meta(&zero).unwrap()), zero);
        for bad in [
            ServiceMeta {
                table_len: 1 << 16,
                ..meta
            },
            ServiceMeta {
                flags: 1 << 7,
                ..meta
            },
            ServiceMeta {
                active_slot: 2,
                ..meta
            },
            ServiceMeta {
                policy: 256,
                ..meta
            },
        ] {
            assert_eq!(pack_meta(&bad), None, "{bad:?}");
        }
    }

    #[test]
    fn slots_are_a_power_of_two_with_room_for_the_probes() {
        assert_eq!(service_index_slots(1), SERVICE_INDEX_PROBES);
        assert_eq!(service_index_slots(64), 256);
        assert_eq!(service_index_slots(100), 512);
        assert_eq!(service_index_slots(u32::MAX), 1 << 31);
    }

    #[test]
    fn a_full_index_of_max_services_finds_every_key_and_no_other() {
        let max = 1000;
        let mut index = Index::new(service_index_slots(max));
        for i in 0..max {
            index
                .insert(key_word(&key(i)))
                .expect("room for max_services");
        }
        for i in 0..max {
            let at = index.find(key_word(&key(i))).unwrap();
            assert_eq!(index.0[at as usize], key_word(&key(i)));
        }
        for i in max..max + 1000 {
            assert_eq!(index.find(key_word(&key(i))), None);
        }
        // Inserting again finds the key's own slot.
        let k = key_word(&key(7));
        let at = index.find(k).unwrap();
        assert_eq!(
            place(k, index.mask(), |i| index.0[i as usize]),
            Some(Placement::Existing(at))
        );
    }

    #[test]
    fn removal_keeps_later_keys_of_a_probe_chain_findable() {
        // Eight keys with one home fill its whole window.
        let mut index = Index::new(64);
        let mut by_home: HashMap<u32, Vec<u64>> = HashMap::new();
        let chain = (0..100_000)
            .map(|i| key_word(&key(i)))
            .find_map(|w| {
                let same = by_home.entry(home(w) & 63).or_default();
                same.push(w);
                (same.len() == SERVICE_INDEX_PROBES as usize).then(|| same.clone())
            })
            .unwrap();
        for &k in &chain {
            index.insert(k).unwrap();
        }
        let outsider = (0..100_000)
            .map(|i| key_word(&key(200_000 + i)))
            .find(|w| home(*w) & 63 == home(chain[0]) & 63)
            .unwrap();
        assert_eq!(index.insert(outsider), None, "a full window refuses");
        index.remove(chain[2]);
        for &k in chain.iter().filter(|k| **k != chain[2]) {
            assert!(index.find(k).is_some(), "found past the removed slot");
        }
        assert_eq!(index.find(chain[2]), None);
        // The removed slot is reused when the window has no empty one.
        let at = index.insert(outsider).unwrap();
        assert!(index.find(outsider) == Some(at));
    }

    #[test]
    fn an_empty_slot_is_taken_before_a_removed_one() {
        let mut index = Index::new(64);
        let a = key_word(&key(1));
        let first = index.insert(a).unwrap();
        index.remove(a);
        let same_home = (2..100_000)
            .map(|i| key_word(&key(i)))
            .find(|w| home(*w) & 63 == home(a) & 63)
            .unwrap();
        let at = index.insert(same_home).unwrap();
        assert_ne!(at, first, "the removed slot waits");
        assert_eq!(index.0[first as usize], SLOT_REMOVED);
    }
}
