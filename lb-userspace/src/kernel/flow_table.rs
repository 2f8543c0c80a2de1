//! The IPv4 flow table as the controller sees it: the connections' slots (read and emptied
//! through a memory mapping), home and buddies, each serving both directions, and the LRU
//! map of each direction behind them, as two tables with the LRU map's operations: the
//! forward one ([`FlowTable`]) and the reply one ([`ReturnTable`]), whose slot entries are
//! the forward ones seen from the backend (see `lb_common::flow_slots` for who may write a
//! slot when).
use std::{
    borrow::Borrow,
    collections::HashSet,
    sync::{atomic::AtomicU64, atomic::Ordering, Arc},
};

use anyhow::ensure;
use aya::{
    maps::{Array, HashMap, MapData, MapError},
    sys::SyscallError,
};
use lb_common::{
    backend::Backend,
    encap::BACKEND_F_DSR,
    flow::{FlowKey, FlowTarget, NatReturn},
    flow_slots::{
        buddies, busy_tag, displaced, empty_tag, forward_index, key_words, may_be_displaced,
        may_overflow, overflow_cleared, ready_tag, reply_index, slot_state, with_displaced,
        ConnSlot, SLOT_DISPLACED_ONE, SLOT_EMPTY, SLOT_OVERFLOW_ONE, SLOT_READY,
    },
    syn_proxy::{FLOW_F_SYN_PROXY, NAT_F_SYN_PROXY},
};

use super::{flows::EntryMap, mmap_array::MmapArray};

/// The update flag that refuses an existing key (uapi `BPF_NOEXIST`).
const BPF_NOEXIST: u64 = 1;

/// What `HashMap::insert` returns for an existing key under [`BPF_NOEXIST`].
fn exists() -> MapError {
    MapError::SyscallError(SyscallError {
        call: "bpf_map_update_elem",
        io_error: std::io::Error::from_raw_os_error(libc::EEXIST),
    })
}

/// The slots, shared by both directions' tables.
#[derive(Clone)]
pub struct Slots {
    slots: Arc<MmapArray>,
}

/// What a slot held when read: its tag and connection.
#[derive(Clone, Copy)]
struct SlotRead {
    tag: u64,
    slot: ConnSlot,
}

impl SlotRead {
    fn target(&self) -> FlowTarget {
        FlowTarget {
            backend: self.slot.backend,
            service: self.slot.service,
            state: self.slot.state,
            last_seen: self.slot.last_seen,
            _pad: 0,
        }
    }
}

impl Slots {
    pub fn new(slots: MmapArray) -> anyhow::Result<Self> {
        ensure!(
            slots.value_size() == size_of::<ConnSlot>(),
            "flow slots of {} bytes, not {}",
            slots.value_size(),
            size_of::<ConnSlot>()
        );
        ensure!(
            slots.entries().is_power_of_two(),
            "{} flow slots, not a power of two",
            slots.entries()
        );
        Ok(Self {
            slots: Arc::new(slots),
        })
    }

    fn count(&self) -> u32 {
        self.slots.entries()
    }

    fn tag(&self, index: u32) -> &AtomicU64 {
        self.slots.word(index, 0)
    }

    /// The buddies of home `index` that the array has, in the order they are tried.
    fn buddies_of(&self, index: u32) -> impl Iterator<Item = u32> {
        let entries = self.count();
        buddies(index).into_iter().filter(move |&b| b < entries)
    }

    /// Home `index`, then its buddies.
    fn candidates(&self, home: u32) -> impl Iterator<Item = u32> {
        std::iter::once(home).chain(self.buddies_of(home))
    }

    /// The slot's connection, if it holds a complete one that did not change while read.
    fn read(&self, index: u32) -> Option<SlotRead> {
        let tag = self.tag(index).load(Ordering::Acquire);
        if slot_state(tag) != SLOT_READY {
            return None;
        }
        // SAFETY: the element is a `ConnSlot` (size checked), 8-aligned; the data path may
        // write it meanwhile, which the tag's second read detects.
        let slot = unsafe { (self.slots.element(index) as *const ConnSlot).read_volatile() };
        (self.tag(index).load(Ordering::Acquire) == tag).then_some(SlotRead { tag, slot })
    }

    /// Empties slot `index` if it still holds what was read under `tag`.
    fn empty(&self, index: u32, tag: u64) -> bool {
        self.tag(index)
            .compare_exchange(tag, empty_tag(tag), Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Clears the LRU count of each home none of whose connections `held` (the homes of
    /// every entry of both LRU maps, walked after the tags were read) still has there, and
    /// sets the displaced counts (see [`Self::recount_displaced`]). An LRU count is cleared
    /// only from the tag read before the walk: an entry put there since changed it.
    /// Returns how many LRU counts were cleared.
    fn clear_overflow_counts(
        &self,
        held: impl FnOnce() -> Result<HashSet<u32>, MapError>,
    ) -> usize {
        self.recount_displaced();
        let counted: Vec<(u32, u64)> = (0..self.count())
            .map(|i| (i, self.tag(i).load(Ordering::Acquire)))
            .filter(|(_, tag)| may_overflow(*tag))
            .collect();
        if counted.is_empty() {
            return 0;
        }
        // A walk that fails part-way (it ends at the error) would leave homes out that
        // still have entries: then nothing is cleared this time.
        let Ok(held) = held() else {
            return 0;
        };
        let mut cleared = 0;
        for (i, mut tag) in counted.into_iter().filter(|(i, _)| !held.contains(i)) {
            // Retried while only the other counts or the state moved: an LRU insert
            // would have changed the LRU count, which ends the retries.
            loop {
                match self.tag(i).compare_exchange(
                    tag,
                    overflow_cleared(tag),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => {
                        cleared += 1;
                        break;
                    }
                    Err(now) if now >> 32 == tag >> 32 => tag = now,
                    Err(_) => break,
                }
            }
        }
        cleared
    }

    /// Sets the displaced count of each home that has one to the number of its buddies
    /// that hold a connection of it or are being written: 0 when none does, so that its
    /// misses skip the buddy reads again, and at most three after a sweep, so that the
    /// count's eight bits do not fill. The tag is read first and the count set only from
    /// that tag: the data path adds to it after publishing a buddy, so a connection put
    /// there after the tag was read either shows in the buddy or changed the tag, and the
    /// count is worked out again from the new tag (a few times: a home whose tag keeps
    /// changing is left to the next sweep). Returns how many counts changed.
    pub fn recount_displaced(&self) -> usize {
        const TRIES: usize = 8;
        let mut changed = 0;
        for home in 0..self.count() {
            for _ in 0..TRIES {
                let tag = self.tag(home).load(Ordering::Acquire);
                if !may_be_displaced(tag) {
                    break;
                }
                let held = self.displaced_in_buddies(home);
                if held == displaced(tag) {
                    break;
                }
                if self
                    .tag(home)
                    .compare_exchange(
                        tag,
                        with_displaced(tag, held),
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    )
                    .is_ok()
                {
                    changed += 1;
                    break;
                }
            }
        }
        changed
    }

    /// How many of home `home`'s buddies hold a connection of it or are being written.
    fn displaced_in_buddies(&self, home: u32) -> u64 {
        self.buddies_of(home)
            .filter(|&b| match slot_state(self.tag(b).load(Ordering::Acquire)) {
                SLOT_EMPTY => false,
                SLOT_READY => self
                    .read(b)
                    .is_none_or(|r| forward_index(&r.slot.key, self.count() - 1) == home),
                _ => true,
            })
            .count() as u64
    }

    /// Connections in slots (the rest are in the LRU maps).
    pub fn in_slots(&self) -> usize {
        (0..self.count())
            .filter(|&i| slot_state(self.tag(i).load(Ordering::Relaxed)) == SLOT_READY)
            .count()
    }

    /// Whether the data path reads home `home`'s buddies when the home does not hold a
    /// packet's connection.
    fn looks_in_buddies(&self, home: u32) -> bool {
        may_be_displaced(self.tag(home).load(Ordering::Acquire))
    }

    /// Whether the data path looks in the LRU maps when home `home` and its buddies do not
    /// hold a packet's connection.
    fn looks_in_lru(&self, home: u32) -> bool {
        may_overflow(self.tag(home).load(Ordering::Acquire))
    }
}

/// The forward (client -> VIP) entries: slots first, then `FLOWS`.
pub struct FlowTable {
    slots: Slots,
    lru: HashMap<MapData, FlowKey, FlowTarget>,
}

impl FlowTable {
    pub fn new(slots: Slots, lru: HashMap<MapData, FlowKey, FlowTarget>) -> Self {
        Self { slots, lru }
    }

    /// The LRU map behind the slots: connections whose home and buddies all held others.
    pub fn overflow(&self) -> &HashMap<MapData, FlowKey, FlowTarget> {
        &self.lru
    }

    /// The entry of `key` in the LRU map alone, the slots left aside.
    pub fn in_overflow(&self, key: &FlowKey) -> Result<Option<FlowTarget>, MapError> {
        match self.lru.get(key, 0) {
            Ok(value) => Ok(Some(value)),
            Err(e) if super::flows::is_not_found(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Slots in the array.
    pub fn slots(&self) -> u32 {
        self.slots.count()
    }

    /// The home slot of forward `key`.
    pub fn home_of(&self, key: &FlowKey) -> u32 {
        forward_index(key, self.slots() - 1)
    }

    fn own(&self, index: u32, key: &FlowKey) -> Option<SlotRead> {
        self.slots
            .read(index)
            .filter(|r| key_words(&r.slot.key) == key_words(key))
    }

    /// The slot (its home's, else a buddy's) that holds `key`'s connection.
    fn read_own(&self, key: &FlowKey) -> Option<(u32, SlotRead)> {
        self.slots
            .candidates(self.home_of(key))
            .find_map(|index| self.own(index, key).map(|r| (index, r)))
    }

    /// The slot that holds `key`'s connection, if one does.
    pub fn slot_of(&self, key: &FlowKey) -> Option<u32> {
        self.read_own(key).map(|(index, _)| index)
    }

    /// The entry of `key`, as `HashMap::get`.
    pub fn get(&self, key: &FlowKey, flags: u64) -> Result<FlowTarget, MapError> {
        match self.read_own(key) {
            Some((_, read)) => Ok(read.target()),
            None => self.lru.get(key, flags),
        }
    }

    /// Records a connection as the data path does (the slot that holds the tuple, else the
    /// LRU map if it holds it, else its home if empty, else the first empty buddy, else
    /// the LRU map), as `HashMap::insert`. Its replies are then served by the slot; one
    /// left to the LRU map needs its reply entry in [`ReturnTable`] besides, as in the
    /// data path.
    pub fn insert(
        &mut self,
        key: impl Borrow<FlowKey>,
        value: impl Borrow<FlowTarget>,
        flags: u64,
    ) -> Result<(), MapError> {
        let (key, value) = (*key.borrow(), *value.borrow());
        let home = self.home_of(&key);
        if let Some((index, read)) = self.read_own(&key) {
            if flags == BPF_NOEXIST {
                return Err(exists());
            }
            if self.write(index, read.tag, &key, &value) {
                return Ok(());
            }
        } else {
            let tag = self.slots.tag(home).load(Ordering::Acquire);
            let empty = if slot_state(tag) == SLOT_EMPTY {
                Some((home, tag, false))
            } else {
                self.slots.buddies_of(home).find_map(|b| {
                    let tag = self.slots.tag(b).load(Ordering::Acquire);
                    (slot_state(tag) == SLOT_EMPTY).then_some((b, tag, true))
                })
            };
            // While the home counts entries in the LRU map, one may be the tuple's, which
            // is written there; any other takes an empty slot (as in the data path).
            // A failed lookup counts as found: the slot is then left alone.
            let in_lru = || !matches!(self.in_overflow(&key), Ok(None));
            if let Some((index, empty_tag, displaced)) = empty {
                if !(may_overflow(tag) && in_lru()) && self.write(index, empty_tag, &key, &value) {
                    if displaced {
                        self.slots
                            .tag(home)
                            .fetch_add(SLOT_DISPLACED_ONE, Ordering::AcqRel);
                    }
                    return Ok(());
                }
            }
        }
        let inserted = self.lru.insert(key, value, flags);
        // Also when it was there already: lookups must look.
        self.slots
            .tag(home)
            .fetch_add(SLOT_OVERFLOW_ONE, Ordering::AcqRel);
        inserted
    }

    /// Writes `key` and `value` into slot `index` if its tag is still `tag`, with no route
    /// cached.
    fn write(&self, index: u32, tag: u64, key: &FlowKey, value: &FlowTarget) -> bool {
        let atomic = self.slots.tag(index);
        if atomic
            .compare_exchange(tag, busy_tag(tag), Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return false;
        }
        let slot = ConnSlot {
            tag: 0,
            key: FlowKey {
                _pad: [0; 2],
                ..*key
            },
            backend: value.backend,
            service: value.service,
            state: value.state,
            last_seen: value.last_seen,
            route: Default::default(),
        };
        let element = self.slots.slots.element(index);
        // SAFETY: as in `Slots::read`; the slot is ours while busy. The tag word is left
        // alone: other CPUs may add to its counts.
        unsafe {
            let bytes = (&slot as *const ConnSlot as *const u8).add(8);
            for i in 0..size_of::<ConnSlot>() - 8 {
                element.add(8 + i).write_volatile(*bytes.add(i));
            }
        }
        // As the data path does: generation and state only, keeping what was added to the
        // counts.
        atomic.fetch_xor(busy_tag(tag) ^ ready_tag(tag), Ordering::AcqRel);
        true
    }

    /// The entry of `key` as the data path finds it: the buddies are read only if an entry
    /// of its home was ever put into one, and the LRU map only if one was ever put there
    /// (no syscall for most misses).
    pub fn find(&self, key: &FlowKey) -> Result<Option<FlowTarget>, MapError> {
        let home = self.home_of(key);
        if let Some(read) = self.own(home, key) {
            return Ok(Some(read.target()));
        }
        if self.slots.looks_in_buddies(home) {
            if let Some(read) = self.slots.buddies_of(home).find_map(|b| self.own(b, key)) {
                return Ok(Some(read.target()));
            }
        }
        if !self.slots.looks_in_lru(home) {
            return Ok(None);
        }
        self.in_overflow(key)
    }

    /// Deletes the connections of `key` (its home's, its buddies', and a copy in the LRU
    /// map: a race between two CPUs recording one tuple can leave two) that `qualify` when
    /// deleted: a slot is emptied only from the very tag it was read under, so a
    /// connection the data path rewrote meanwhile stays. Emptying a slot ends both
    /// directions. Whether one was deleted.
    pub fn remove_if(
        &mut self,
        key: &FlowKey,
        qualifies: impl Fn(&FlowTarget) -> bool,
    ) -> Result<bool, MapError> {
        let home = self.home_of(key);
        let mut removed = false;
        let mut found_in_slots = false;
        for index in self.slots.candidates(home) {
            let Some(read) = self.own(index, key) else {
                continue;
            };
            found_in_slots = true;
            removed |= qualifies(&read.target()) && self.slots.empty(index, read.tag);
        }
        if found_in_slots && !self.slots.looks_in_lru(home) {
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
    pub fn slot_entries(&self) -> impl Iterator<Item = (FlowKey, FlowTarget)> + '_ {
        (0..self.slots()).filter_map(|i| self.slots.read(i).map(|r| (r.slot.key, r.target())))
    }

    /// Every entry, slots first, as `HashMap::iter`.
    pub fn iter(&self) -> impl Iterator<Item = Result<(FlowKey, FlowTarget), MapError>> + '_ {
        self.slot_entries()
            .map(Ok)
            .chain(super::batch::entries(&self.lru))
    }

    /// Every key, as `HashMap::keys`.
    pub fn keys(&self) -> impl Iterator<Item = Result<FlowKey, MapError>> + '_ {
        self.iter().map(|entry| entry.map(|(key, _)| key))
    }

    /// The slots' upkeep: the displaced counts set to what the buddies hold, and the LRU
    /// counts of homes with no entry left in either LRU map (this one's, and `returns`')
    /// cleared, so that their misses skip the buddy reads and the LRU lookups again.
    /// Returns how many LRU counts were cleared.
    pub fn clear_overflow_counts(&self, returns: &ReturnTable) -> usize {
        let mask = self.slots() - 1;
        self.slots.clear_overflow_counts(|| {
            let forward = super::batch::entries(&self.lru)
                .map(|entry| entry.map(|(key, _)| forward_index(&key, mask)));
            let reply = super::batch::entries(&returns.lru)
                .map(|entry| entry.map(|(key, _)| reply_index(&key, mask)));
            forward.chain(reply).collect()
        })
    }

    /// Whether the data path reads `key`'s buddies when its home does not hold it: an
    /// entry of the home was put into one since the counts were last set.
    pub fn looks_in_buddies(&self, key: &FlowKey) -> bool {
        self.slots.looks_in_buddies(self.home_of(key))
    }

    /// The displaced count of `key`'s home: its connections put into buddies since the
    /// last sweep, or, right after one, those its buddies hold.
    pub fn displaced_of(&self, key: &FlowKey) -> u64 {
        displaced(self.slots.tag(self.home_of(key)).load(Ordering::Acquire))
    }

    /// Whether the data path looks `key` up in the LRU map when its slots do not hold it:
    /// an entry of the home was put there since the counts were last cleared.
    pub fn looks_in_lru(&self, key: &FlowKey) -> bool {
        self.slots.looks_in_lru(self.home_of(key))
    }

    /// Connections in slots (the rest are in the LRU maps).
    pub fn in_slots(&self) -> usize {
        self.slots.in_slots()
    }
}

impl EntryMap<FlowKey, FlowTarget> for FlowTable {
    fn entries(&self) -> Box<dyn Iterator<Item = (FlowKey, FlowTarget)> + '_> {
        Box::new(self.iter().filter_map(super::flows::walked))
    }

    fn remove_if(
        &mut self,
        key: &FlowKey,
        qualifies: impl Fn(&FlowTarget) -> bool,
    ) -> Result<bool, MapError> {
        FlowTable::remove_if(self, key, qualifies)
    }
}

/// The reply (backend -> client) entries: a connection in a slot, seen from its backend
/// (matched through the backend's address and port, as the data path does), then
/// `RETURN_FLOWS`, which holds copies of the connections of `FLOWS` in a slot's layout.
/// Both are read as the `NatReturn` a reply is translated by.
pub struct ReturnTable {
    slots: Slots,
    lru: HashMap<MapData, FlowKey, ConnSlot>,
    /// A handle of its own on `BACKENDS`, for the backends' addresses.
    backends: Array<MapData, Backend>,
}

impl ReturnTable {
    pub fn new(
        slots: Slots,
        lru: HashMap<MapData, FlowKey, ConnSlot>,
        backends: Array<MapData, Backend>,
    ) -> Self {
        Self {
            slots,
            lru,
            backends,
        }
    }

    /// The LRU map: reply entries of the connections whose forward entries are in `FLOWS`.
    pub fn overflow(&self) -> &HashMap<MapData, FlowKey, ConnSlot> {
        &self.lru
    }

    /// The entries of the LRU map, as replies are translated by them.
    fn lru_entries(&self) -> impl Iterator<Item = Result<(FlowKey, NatReturn), MapError>> + '_ {
        super::batch::entries(&self.lru).map(|entry| entry.map(|(key, conn)| (key, nat_of(&conn))))
    }

    /// The home slot of reply `key`.
    pub fn home_of(&self, key: &FlowKey) -> u32 {
        reply_index(key, self.slots.count() - 1)
    }

    /// The reply key and entry of a slot's connection, given its backend (`None` when
    /// that cannot be read, or answers from the VIP itself, as the data path has it).
    fn reply_of(read: &SlotRead, backend: Option<Backend>) -> Option<(FlowKey, NatReturn)> {
        let slot = &read.slot;
        let backend = backend?;
        if backend.flags & BACKEND_F_DSR != 0 {
            return None;
        }
        Some((
            slot.key.reply_from(backend.addr, backend.port),
            nat_of(slot),
        ))
    }

    /// The slot whose connection reply `key` belongs to, and its entry: the client's side
    /// first, then (a syscall) the backend's.
    fn read_own(&self, key: &FlowKey) -> Option<(u32, NatReturn)> {
        self.slots.candidates(self.home_of(key)).find_map(|index| {
            let read = self.slots.read(index)?;
            let client = (
                read.slot.key.src_addr,
                read.slot.key.src_port,
                read.slot.key.proto,
            );
            if client != (key.dst_addr, key.dst_port, key.proto) {
                return None;
            }
            let backend = self.backends.get(&read.slot.backend, 0).ok();
            let (reply, nat) = Self::reply_of(&read, backend)?;
            (key_words(&reply) == key_words(key)).then_some((index, nat))
        })
    }

    /// The slot that serves replies under `key`, if one does.
    pub fn slot_of(&self, key: &FlowKey) -> Option<u32> {
        self.read_own(key).map(|(index, _)| index)
    }

    /// The entry of `key`, as `HashMap::get`.
    pub fn get(&self, key: &FlowKey, flags: u64) -> Result<NatReturn, MapError> {
        match self.read_own(key) {
            Some((_, nat)) => Ok(nat),
            None => self.lru.get(key, flags).map(|conn| nat_of(&conn)),
        }
    }

    /// Records a reply entry as the data path does, after its connection's forward entry:
    /// nothing when a slot serves `key` already, else an entry in `RETURN_FLOWS`, counted
    /// in the home, as `HashMap::insert`.
    pub fn insert(
        &mut self,
        key: impl Borrow<FlowKey>,
        value: impl Borrow<NatReturn>,
        flags: u64,
    ) -> Result<(), MapError> {
        let (key, nat) = (*key.borrow(), *value.borrow());
        if self.read_own(&key).is_some() {
            if flags == BPF_NOEXIST {
                return Err(exists());
            }
            return Ok(());
        }
        let conn = ConnSlot {
            tag: 0,
            key: key.forward_of_reply(nat.vip, nat.vport),
            backend: nat.backend,
            service: nat.service,
            state: if nat.flags & NAT_F_SYN_PROXY != 0 {
                FLOW_F_SYN_PROXY
            } else {
                0
            },
            last_seen: 0,
            route: nat.nexthop,
        };
        let inserted = self.lru.insert(key, conn, flags);
        self.slots
            .tag(self.home_of(&key))
            .fetch_add(SLOT_OVERFLOW_ONE, Ordering::AcqRel);
        inserted
    }

    /// Every entry, slots first, as `HashMap::iter`.
    /// The backends are read once, when it starts.
    pub fn iter(&self) -> impl Iterator<Item = Result<(FlowKey, NatReturn), MapError>> + '_ {
        let backends: Vec<Option<Backend>> = (0..self.backends.len())
            .map(|id| self.backends.get(&id, 0).ok())
            .collect();
        (0..self.slots.count())
            .filter_map(move |i| {
                let read = self.slots.read(i)?;
                let backend = backends.get(read.slot.backend as usize).copied().flatten();
                Self::reply_of(&read, backend)
            })
            .map(Ok)
            .chain(self.lru_entries())
    }

    /// Every key, as `HashMap::keys`.
    pub fn keys(&self) -> impl Iterator<Item = Result<FlowKey, MapError>> + '_ {
        self.iter().map(|entry| entry.map(|(key, _)| key))
    }

    /// Deletes the entry of `key` in `RETURN_FLOWS`, as `HashMap::remove`. A connection
    /// in a slot has no reply entry of its own: removing its forward entry ends both.
    pub fn remove(&mut self, key: &FlowKey) -> Result<(), MapError> {
        self.lru.remove(key)
    }

    /// Whether the data path reads `key`'s buddies when its home does not hold it.
    pub fn looks_in_buddies(&self, key: &FlowKey) -> bool {
        self.slots.looks_in_buddies(self.home_of(key))
    }

    /// Whether the data path looks `key` up in the LRU map when its slots do not hold it.
    pub fn looks_in_lru(&self, key: &FlowKey) -> bool {
        self.slots.looks_in_lru(self.home_of(key))
    }
}

impl EntryMap<FlowKey, NatReturn> for ReturnTable {
    /// The entries of `RETURN_FLOWS`: a connection in a slot ends with its forward entry.
    fn entries(&self) -> Box<dyn Iterator<Item = (FlowKey, NatReturn)> + '_> {
        Box::new(self.lru_entries().filter_map(super::flows::walked))
    }

    /// Deletes from `RETURN_FLOWS` only, and without a syscall while no entry of the
    /// key's home went there.
    fn remove_if(
        &mut self,
        key: &FlowKey,
        qualifies: impl Fn(&NatReturn) -> bool,
    ) -> Result<bool, MapError> {
        if !self.looks_in_lru(key) {
            return Ok(false);
        }
        EntryMap::remove_if(&mut self.lru, key, |conn: &ConnSlot| {
            qualifies(&nat_of(conn))
        })
    }
}

/// What a reply of the connection `conn` is translated by.
fn nat_of(conn: &ConnSlot) -> NatReturn {
    NatReturn {
        vip: conn.key.dst_addr,
        vport: conn.key.dst_port,
        flags: if conn.state & FLOW_F_SYN_PROXY != 0 {
            NAT_F_SYN_PROXY
        } else {
            0
        },
        service: conn.service,
        backend: conn.backend,
        nexthop: conn.route,
    }
}
