//! The IPv4 flow tables as the controller sees them: each direction's halves of the slot
//! pairs (read and emptied through a memory mapping), home and buddies, and the LRU map
//! behind them, as one table with the LRU map's operations (see `lb_common::flow_slots`
//! for who may write a half when).
use std::{
    borrow::Borrow,
    collections::HashSet,
    marker::PhantomData,
    sync::{
        atomic::{AtomicU32, AtomicU64, Ordering},
        Arc,
    },
};

use anyhow::ensure;
use aya::{
    maps::{HashMap, MapData, MapError},
    sys::SyscallError,
    Pod,
};
use lb_common::{
    flow::{FlowKey, FlowTarget, NatReturn},
    flow_slots::{
        buddies, busy_tag, empty_tag, forward_index, key_words, may_overflow, overflow_cleared,
        ready_tag, reply_index, slot_state, FlowSlot, ReturnSlot, SlotPair, FORWARD_TAG_WORD,
        REPLY_TAG_WORD, SLOT_EMPTY, SLOT_OVERFLOW_ONE, SLOT_READY,
    },
};

use super::{flows::EntryMap, mmap_array::MmapArray};

/// Where a direction's half of a slot pair is, and which end of its key is the client.
pub trait SlotLayout {
    type Value: Pod + Copy;
    /// Bytes from the pair's start to the half.
    const HALF_OFFSET: usize;
    /// Bytes from the half's start to the value.
    const VALUE_OFFSET: usize;
    /// The half's tag, in u64 words from the pair's start.
    const TAG_WORD: usize;
    /// Bytes from the half's start to its displaced count.
    const DISPLACED_OFFSET: usize;
    /// The slot of `key` among `mask + 1`.
    fn index(key: &FlowKey, mask: u32) -> u32;
}

/// Forward (client -> VIP) entries.
pub struct Forward;
impl SlotLayout for Forward {
    type Value = FlowTarget;
    const HALF_OFFSET: usize = core::mem::offset_of!(SlotPair, forward);
    const VALUE_OFFSET: usize = core::mem::offset_of!(FlowSlot, target);
    const TAG_WORD: usize = FORWARD_TAG_WORD;
    const DISPLACED_OFFSET: usize = core::mem::offset_of!(FlowSlot, displaced);
    fn index(key: &FlowKey, mask: u32) -> u32 {
        forward_index(key, mask)
    }
}

/// Reply (backend -> client) entries.
pub struct Reply;
impl SlotLayout for Reply {
    type Value = NatReturn;
    const HALF_OFFSET: usize = core::mem::offset_of!(SlotPair, reply);
    const VALUE_OFFSET: usize = core::mem::offset_of!(ReturnSlot, nat);
    const TAG_WORD: usize = REPLY_TAG_WORD;
    const DISPLACED_OFFSET: usize = core::mem::offset_of!(ReturnSlot, displaced);
    fn index(key: &FlowKey, mask: u32) -> u32 {
        reply_index(key, mask)
    }
}

/// The update flag that refuses an existing key (uapi `BPF_NOEXIST`).
const BPF_NOEXIST: u64 = 1;

const KEY_OFFSET: usize = 8;
const _: () = assert!(core::mem::offset_of!(FlowSlot, key) == KEY_OFFSET);
const _: () = assert!(core::mem::offset_of!(ReturnSlot, key) == KEY_OFFSET);
const _: () = assert!(FORWARD_TAG_WORD * 8 == core::mem::offset_of!(SlotPair, forward));
const _: () = assert!(REPLY_TAG_WORD * 8 == core::mem::offset_of!(SlotPair, reply));

/// One direction's table: slots first, then the LRU map.
pub struct FlowTable<S: SlotLayout> {
    /// The slot pairs, shared by both directions' tables.
    slots: Arc<MmapArray>,
    lru: HashMap<MapData, FlowKey, S::Value>,
    _layout: PhantomData<S>,
}

/// What a slot held when read: its tag, key and value.
struct SlotRead<V> {
    tag: u64,
    key: FlowKey,
    value: V,
}

impl<S: SlotLayout> FlowTable<S> {
    pub fn new(
        slots: Arc<MmapArray>,
        lru: HashMap<MapData, FlowKey, S::Value>,
    ) -> anyhow::Result<Self> {
        ensure!(
            slots.value_size() == size_of::<SlotPair>(),
            "flow slots of {} bytes, not {}",
            slots.value_size(),
            size_of::<SlotPair>()
        );
        ensure!(
            slots.entries().is_power_of_two(),
            "{} flow slots, not a power of two",
            slots.entries()
        );
        Ok(Self {
            slots,
            lru,
            _layout: PhantomData,
        })
    }

    /// The LRU map behind the slots: entries whose home and buddy slots all held others.
    pub fn overflow(&self) -> &HashMap<MapData, FlowKey, S::Value> {
        &self.lru
    }

    /// Slots in the array.
    pub fn slots(&self) -> u32 {
        self.slots.entries()
    }

    /// The home slot of `key` in this direction.
    pub fn home_of(&self, key: &FlowKey) -> u32 {
        S::index(key, self.slots() - 1)
    }

    fn tag(&self, index: u32) -> &AtomicU64 {
        self.slots.word(index, S::TAG_WORD)
    }

    /// How many entries of home `index` were put into its buddies' halves (see
    /// `lb_common::flow_slots`).
    fn displaced(&self, index: u32) -> &AtomicU32 {
        self.slots
            .word32(index, S::HALF_OFFSET + S::DISPLACED_OFFSET)
    }

    /// The buddies of home `index` that the array has, in the order they are tried.
    fn buddies_of(&self, index: u32) -> impl Iterator<Item = u32> {
        let entries = self.slots();
        buddies(index).into_iter().filter(move |&b| b < entries)
    }

    /// The first byte of slot `index`'s half of this direction.
    fn half(&self, index: u32) -> *mut u8 {
        // SAFETY: the half lies inside the element (`SlotPair`'s layout, size checked).
        unsafe { self.slots.element(index).add(S::HALF_OFFSET) }
    }

    /// The slot's entry, if it holds a complete one that did not change while read.
    fn read(&self, index: u32) -> Option<SlotRead<S::Value>> {
        let tag = self.tag(index).load(Ordering::Acquire);
        if slot_state(tag) != SLOT_READY {
            return None;
        }
        let slot = self.half(index);
        // SAFETY: both lie inside the element (the layouts' offsets, checked sizes), at
        // 8-aligned offsets of an 8-aligned element; the data path may write them
        // meanwhile, which the tag's second read detects.
        let (key, value) = unsafe {
            (
                (slot.add(KEY_OFFSET) as *const FlowKey).read_volatile(),
                (slot.add(S::VALUE_OFFSET) as *const S::Value).read_volatile(),
            )
        };
        (self.tag(index).load(Ordering::Acquire) == tag).then_some(SlotRead { tag, key, value })
    }

    /// The half of `key` (its home's, else a buddy's) that holds `key`'s entry.
    fn read_own(&self, key: &FlowKey) -> Option<(u32, SlotRead<S::Value>)> {
        let home = self.home_of(key);
        std::iter::once(home)
            .chain(self.buddies_of(home))
            .find_map(|index| {
                self.read(index)
                    .filter(|r| key_words(&r.key) == key_words(key))
                    .map(|r| (index, r))
            })
    }

    /// The slot whose half of this direction holds `key`'s entry, if one does.
    pub fn slot_of(&self, key: &FlowKey) -> Option<u32> {
        self.read_own(key).map(|(index, _)| index)
    }

    /// The entry of `key`, as `HashMap::get`.
    pub fn get(&self, key: &FlowKey, flags: u64) -> Result<S::Value, MapError> {
        match self.read_own(key) {
            Some((_, read)) => Ok(read.value),
            None => self.lru.get(key, flags),
        }
    }

    /// Records an entry as the data path does (the half that holds the tuple, else its
    /// home's if empty, else the first empty buddy's, else the LRU map), as
    /// `HashMap::insert`.
    pub fn insert(
        &mut self,
        key: impl Borrow<FlowKey>,
        value: impl Borrow<S::Value>,
        flags: u64,
    ) -> Result<(), MapError> {
        let (key, value) = (*key.borrow(), *value.borrow());
        let home = self.home_of(&key);
        if let Some((index, read)) = self.read_own(&key) {
            if flags == BPF_NOEXIST {
                return Err(MapError::SyscallError(SyscallError {
                    call: "bpf_map_update_elem",
                    io_error: std::io::Error::from_raw_os_error(libc::EEXIST),
                }));
            }
            if self.write(index, read.tag, &key, &value) {
                return Ok(());
            }
        } else {
            let tag = self.tag(home).load(Ordering::Acquire);
            // While an entry of the home may be in the LRU map, neither half is taken: the
            // tuple may be one of them (as in the data path).
            if !may_overflow(tag) {
                if slot_state(tag) == SLOT_EMPTY {
                    if self.write(home, tag, &key, &value) {
                        return Ok(());
                    }
                } else {
                    let empty = self.buddies_of(home).find_map(|b| {
                        let tag = self.tag(b).load(Ordering::Acquire);
                        (slot_state(tag) == SLOT_EMPTY).then_some((b, tag))
                    });
                    if let Some((b, tag)) = empty {
                        if self.write(b, tag, &key, &value) {
                            self.displaced(home).fetch_add(1, Ordering::AcqRel);
                            return Ok(());
                        }
                    }
                }
            }
        }
        let inserted = self.lru.insert(key, value, flags);
        // Also when it was there already: lookups must look.
        self.tag(home)
            .fetch_add(SLOT_OVERFLOW_ONE, Ordering::AcqRel);
        inserted
    }

    /// Writes `key` and `value` into slot `index` if its tag is still `tag`.
    fn write(&self, index: u32, tag: u64, key: &FlowKey, value: &S::Value) -> bool {
        let atomic = self.tag(index);
        if atomic
            .compare_exchange(tag, busy_tag(tag), Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return false;
        }
        let slot = self.half(index);
        let key = FlowKey {
            _pad: [0; 2],
            ..*key
        };
        // SAFETY: as in `read`; the slot is ours while busy.
        unsafe {
            (slot.add(KEY_OFFSET) as *mut FlowKey).write_volatile(key);
            (slot.add(S::VALUE_OFFSET) as *mut S::Value).write_volatile(*value);
        }
        // As the data path does: the low word only, keeping what was added to the count.
        atomic.fetch_xor(busy_tag(tag) ^ ready_tag(tag), Ordering::AcqRel);
        true
    }

    /// The entry of `key` as the data path finds it: the buddies are read only if an entry
    /// of its home was ever put into one, and the LRU map only if one was ever put there
    /// (no syscall for most misses).
    pub fn find(&self, key: &FlowKey) -> Result<Option<S::Value>, MapError> {
        let home = self.home_of(key);
        let own = |index: u32| {
            self.read(index)
                .filter(|r| key_words(&r.key) == key_words(key))
        };
        if let Some(read) = own(home) {
            return Ok(Some(read.value));
        }
        if self.displaced(home).load(Ordering::Acquire) != 0 {
            if let Some(read) = self.buddies_of(home).find_map(own) {
                return Ok(Some(read.value));
            }
        }
        if !may_overflow(self.tag(home).load(Ordering::Acquire)) {
            return Ok(None);
        }
        match self.lru.get(key, 0) {
            Ok(value) => Ok(Some(value)),
            Err(e) if super::flows::is_not_found(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Deletes the entries of `key` (its home's, its buddies', and a copy in the LRU map:
    /// a race between two CPUs recording one tuple can leave two) that `qualify` when deleted:
    /// a slot is emptied only from the very tag it was read under, so an entry the data
    /// path rewrote meanwhile stays. Whether one was deleted.
    pub fn remove_if(
        &mut self,
        key: &FlowKey,
        qualifies: impl Fn(&S::Value) -> bool,
    ) -> Result<bool, MapError> {
        let home = self.home_of(key);
        let mut removed = false;
        let mut found_in_slots = false;
        // Each copy on its own: two CPUs recording one tuple at once can leave it in the
        // home and in a buddy.
        for index in std::iter::once(home).chain(self.buddies_of(home)) {
            let Some(read) = self
                .read(index)
                .filter(|r| key_words(&r.key) == key_words(key))
            else {
                continue;
            };
            found_in_slots = true;
            removed |= qualifies(&read.value)
                && self
                    .tag(index)
                    .compare_exchange(
                        read.tag,
                        empty_tag(read.tag),
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    )
                    .is_ok();
        }
        if found_in_slots && !may_overflow(self.tag(home).load(Ordering::Acquire)) {
            return Ok(removed);
        }
        Ok(EntryMap::remove_if(&mut self.lru, key, qualifies)? || removed)
    }

    /// Deletes the entry of `key`, as `HashMap::remove`.
    pub fn remove(&mut self, key: &FlowKey) -> Result<(), MapError> {
        if self.remove_if(key, |_| true)? {
            Ok(())
        } else {
            Err(MapError::KeyNotFound)
        }
    }

    /// The entries in slots.
    pub fn slot_entries(&self) -> impl Iterator<Item = (FlowKey, S::Value)> + '_ {
        (0..self.slots()).filter_map(|i| self.read(i).map(|r| (r.key, r.value)))
    }

    /// Every entry, slots first, as `HashMap::iter`.
    pub fn iter(&self) -> impl Iterator<Item = Result<(FlowKey, S::Value), MapError>> + '_ {
        self.slot_entries()
            .map(Ok)
            .chain(super::batch::entries(&self.lru))
    }

    /// Every key, as `HashMap::keys`.
    pub fn keys(&self) -> impl Iterator<Item = Result<FlowKey, MapError>> + '_ {
        self.iter().map(|entry| entry.map(|(key, _)| key))
    }

    /// Clears the counts of this direction's halves whose entries elsewhere are gone, so
    /// that their misses skip the buddy reads and the LRU lookup again (see
    /// [`Self::clear_displaced_counts`] for the buddies'). An LRU count is cleared only
    /// from the tag read before the walk of the LRU map: an entry put there since changed
    /// it. Returns how many LRU counts were cleared.
    pub fn clear_overflow_counts(&mut self) -> usize {
        self.clear_displaced_counts();
        let counted: Vec<(u32, u64)> = (0..self.slots())
            .map(|i| (i, self.tag(i).load(Ordering::Acquire)))
            .filter(|(_, tag)| may_overflow(*tag))
            .collect();
        if counted.is_empty() {
            return 0;
        }
        // A walk that fails part-way (it ends at the error) would leave slots out that
        // still have entries: then nothing is cleared this time.
        let Ok(held) = super::batch::entries(&self.lru)
            .map(|entry| entry.map(|(key, _)| self.home_of(&key)))
            .collect::<Result<HashSet<u32>, _>>()
        else {
            return 0;
        };
        counted
            .into_iter()
            .filter(|(i, _)| !held.contains(i))
            .filter(|&(i, tag)| {
                self.tag(i)
                    .compare_exchange(
                        tag,
                        overflow_cleared(tag),
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    )
                    .is_ok()
            })
            .count()
    }

    /// Clears the displaced count of each home whose buddies' halves hold no entry of it
    /// and none is being written. The count is read first and cleared only from that
    /// value: the data path adds to it after publishing a buddy's half, so an entry put
    /// there after the count was read either shows in the half or changed the count.
    /// Returns how many were cleared.
    pub fn clear_displaced_counts(&self) -> usize {
        (0..self.slots())
            .filter(|&home| {
                let count = self.displaced(home).load(Ordering::Acquire);
                if count == 0 {
                    return false;
                }
                let holds_one = self.buddies_of(home).any(|b| {
                    match slot_state(self.tag(b).load(Ordering::Acquire)) {
                        SLOT_EMPTY => false,
                        SLOT_READY => self.read(b).is_none_or(|r| self.home_of(&r.key) == home),
                        _ => true,
                    }
                });
                !holds_one
                    && self
                        .displaced(home)
                        .compare_exchange(count, 0, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
            })
            .count()
    }

    /// Whether the data path reads `key`'s buddy halves when its home does not hold it: an
    /// entry of the home was put into one since the counts were last cleared.
    pub fn looks_in_buddies(&self, key: &FlowKey) -> bool {
        self.displaced(self.home_of(key)).load(Ordering::Acquire) != 0
    }

    /// Whether the data path looks `key` up in the LRU map when its slot does not hold it:
    /// an entry of the slot was put there since the counts were last cleared.
    pub fn looks_in_lru(&self, key: &FlowKey) -> bool {
        may_overflow(self.tag(self.home_of(key)).load(Ordering::Acquire))
    }

    /// Entries in slots (the rest are in the LRU map).
    pub fn in_slots(&self) -> usize {
        (0..self.slots())
            .filter(|&i| slot_state(self.tag(i).load(Ordering::Relaxed)) == SLOT_READY)
            .count()
    }
}

impl<S: SlotLayout> EntryMap<FlowKey, S::Value> for FlowTable<S> {
    fn entries(&self) -> Box<dyn Iterator<Item = (FlowKey, S::Value)> + '_> {
        Box::new(self.iter().filter_map(super::flows::walked))
    }

    fn remove_if(
        &mut self,
        key: &FlowKey,
        qualifies: impl Fn(&S::Value) -> bool,
    ) -> Result<bool, MapError> {
        FlowTable::remove_if(self, key, qualifies)
    }
}
