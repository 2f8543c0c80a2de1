//! The IPv4 flow table: each connection's home slot, then its buddies', then the LRU map
//! of each direction (see `lb_common::flow_slots`). Finding a flow in its home is one
//! inlined array read, from either direction; a new connection whose home or a buddy is
//! empty is recorded with a compare-and-swap and a few stores instead of two LRU inserts,
//! and a packet whose home never sent an entry to a buddy or the LRU maps does not look
//! there.
use core::{
    intrinsics::{atomic_cxchg, atomic_xadd, atomic_xor, AtomicOrdering::Relaxed},
    ptr::{addr_of_mut, read_volatile, write_volatile, NonNull},
};

use aya_ebpf::bindings::{BPF_ANY, BPF_NOEXIST};
use lb_common::{
    encap::BACKEND_F_DSR,
    flow::{FlowKey, FlowTarget},
    flow_slots::{
        buddies, busy_tag, forward_index, key_words, may_be_displaced, may_overflow, ready_tag,
        reply_client_words, reply_index, slot_state, ConnSlot, SLOT_DISPLACED_ONE, SLOT_EMPTY,
        SLOT_KEY_OFFSET, SLOT_OVERFLOW_ONE, SLOT_READY, SLOT_TARGET_OFFSET,
    },
    nexthop::NextHop,
    syn_proxy::{FLOW_F_SYN_PROXY, NAT_F_SYN_PROXY},
};

use crate::maps::{flow_slot_mask, BACKENDS, FLOWS, FLOW_SLOTS, RETURN_FLOWS};

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

/// What a slot holds for a writer.
enum Held {
    /// This tuple's connection, under `tag`.
    Own(u64),
    /// Nothing, under `tag`.
    Empty(u64),
    /// Another connection, or a writer's, under `tag`.
    Taken(u64),
}

/// One slot of `FLOW_SLOTS`: where its tag, key, target and route are. It holds only the
/// slot's address, checked not null, so that no address inside a slot that may not exist
/// is computed before the check (the verifier refuses arithmetic on a pointer that may be
/// null).
#[derive(Clone, Copy)]
struct SlotAt {
    slot: NonNull<ConnSlot>,
}

impl SlotAt {
    #[inline(always)]
    fn of(index: u32) -> Option<Self> {
        NonNull::new(FLOW_SLOTS.get_ptr_mut(index)?).map(|slot| Self { slot })
    }

    #[inline(always)]
    fn at(&self, offset: usize) -> *mut u8 {
        unsafe { (self.slot.as_ptr() as *mut u8).add(offset) }
    }

    #[inline(always)]
    fn tag(&self) -> *mut u64 {
        self.at(0) as *mut u64
    }

    #[inline(always)]
    fn read_tag(&self) -> u64 {
        unsafe { read_volatile(self.tag()) }
    }

    #[inline(always)]
    fn key(&self) -> *mut FlowKey {
        self.at(SLOT_KEY_OFFSET) as *mut FlowKey
    }

    /// The connection's forward entry: the slot from `backend` on (see `ConnSlot`).
    #[inline(always)]
    fn target(&self) -> *mut FlowTarget {
        self.at(SLOT_TARGET_OFFSET) as *mut FlowTarget
    }

    #[inline(always)]
    fn route(&self) -> *mut NextHop {
        unsafe { addr_of_mut!((*self.slot.as_ptr()).route) }
    }

    #[inline(always)]
    fn read(&self, key: &FlowKey) -> Held {
        let tag = self.read_tag();
        match slot_state(tag) {
            SLOT_EMPTY => Held::Empty(tag),
            SLOT_READY if same_key(self.key(), key) => Held::Own(tag),
            _ => Held::Taken(tag),
        }
    }

    /// Whether the slot, read under `tag`, holds the connection of forward `key`.
    #[inline(always)]
    fn holds(&self, tag: u64, key: &FlowKey) -> bool {
        slot_state(tag) == SLOT_READY && same_key(self.key(), key)
    }

    /// Whether the slot holds the connection that reply `key` (backend -> client) belongs
    /// to: its client's address, port and protocol, and a backend at the reply's source
    /// that answers through this node (a direct-server-return backend answers from the VIP
    /// itself, and what it sends from its own address is not the connection's). `tag` is
    /// the slot's, as read.
    #[inline(always)]
    fn holds_reply_of(&self, tag: u64, key: &FlowKey) -> bool {
        if slot_state(tag) != SLOT_READY {
            return false;
        }
        let ((mask_a, want_a), (mask_b, want_b)) = reply_client_words(key);
        let words = self.key() as *const u64;
        let client = unsafe {
            read_volatile(words) & mask_a == want_a
                && read_volatile(words.add(1)) & mask_b == want_b
        };
        if !client {
            return false;
        }
        let id = unsafe { read_volatile(addr_of_mut!((*self.slot.as_ptr()).backend)) };
        // Not `BACKEND_F_PRESENT`: a removed backend's flows end with their entries.
        match BACKENDS.get(id) {
            Some(backend) => {
                backend.addr == key.src_addr
                    && backend.port == key.src_port
                    && backend.flags & BACKEND_F_DSR == 0
            }
            None => false,
        }
    }
}

/// Where a lookup ends.
enum Found {
    /// In this slot.
    Slot(SlotAt),
    /// Not in the slots; in the LRU map, if anywhere.
    Lru,
    /// Nowhere.
    Missing,
}

/// Looks in home `index`, then, if an entry of that home was ever put there, in the
/// buddies, for the slot that `holds` (given each slot's tag, read once); else says
/// whether the LRU map may hold it.
#[inline(always)]
fn find_in_slots(index: u32, holds: impl Fn(&SlotAt, u64) -> bool) -> Found {
    let Some(home) = SlotAt::of(index) else {
        return Found::Missing;
    };
    let tag = home.read_tag();
    if holds(&home, tag) {
        return Found::Slot(home);
    }
    if may_be_displaced(tag) {
        // Unrolled by hand, here and in `place`: a loop over an array on the stack reads
        // it at a variable offset, which the verifier refuses without CAP_PERFMON.
        let [b1, b2, b3] = buddies(index);
        let own = |b: u32| {
            let buddy = SlotAt::of(b)?;
            holds(&buddy, buddy.read_tag()).then_some(buddy)
        };
        if let Some(slot) = own(b1).or_else(|| own(b2)).or_else(|| own(b3)) {
            return Found::Slot(slot);
        }
    }
    if may_overflow(tag) {
        Found::Lru
    } else {
        Found::Missing
    }
}

/// Takes the slot from `tag` for writing; false if another writer (or the controller)
/// changed it first.
#[inline(always)]
fn claim(tag_ptr: *mut u64, tag: u64) -> bool {
    let (_, won) =
        unsafe { atomic_cxchg::<u64, { Relaxed }, { Relaxed }>(tag_ptr, tag, busy_tag(tag)) };
    won
}

/// Publishes a slot written since [`claim`] from `tag`: an atomic xor of the generation and
/// state from busy to ready, which keeps what other CPUs added to the counts meanwhile (a
/// plain store of the ready tag would erase it) and, being a fully ordered atomic, is
/// seen after the stores that wrote the entry.
#[inline(always)]
fn publish(tag_ptr: *mut u64, tag: u64) {
    unsafe { atomic_xor::<u64, u64, { Relaxed }>(tag_ptr, busy_tag(tag) ^ ready_tag(tag)) };
}

/// Counts an entry of the home put into the LRU map, after the insert (see
/// `lb_common::flow_slots`).
#[inline(always)]
fn overflowed(tag_ptr: *mut u64) {
    unsafe { atomic_xadd::<u64, u64, { Relaxed }>(tag_ptr, SLOT_OVERFLOW_ONE) };
}

/// What one look at a tuple's slots allows a writer.
enum Place {
    /// Write the slot from this tag; the home to count it in when it is a buddy.
    Slot(SlotAt, u64, Option<SlotAt>),
    /// The LRU map: every candidate slot holds another connection, or the LRU map holds
    /// the tuple.
    Lru,
    /// `only_new`, and a slot holds the tuple.
    Exists,
}

/// Where to write `key`'s connection, judged from its home and buddies now.
#[inline(always)]
fn place(home: SlotAt, index: u32, key: &FlowKey, only_new: bool) -> Place {
    let home_tag = match home.read(key) {
        Held::Own(_) if only_new => return Place::Exists,
        Held::Own(tag) => return Place::Slot(home, tag, None),
        Held::Empty(tag) | Held::Taken(tag) => tag,
    };
    // The buddies are read when one may hold the tuple (an entry of the home went to
    // one), or when the home is taken and the entry may go to the first empty one. That
    // one's tag is kept apart and always set: an `Option` of both leaves the tag's
    // register unwritten on the `None` path, which the verifier refuses to see copied.
    let mut empty_buddy: Option<SlotAt> = None;
    let mut empty_buddy_tag = 0;
    let home_taken = slot_state(home_tag) != SLOT_EMPTY;
    let displaced = may_be_displaced(home_tag);
    if displaced || home_taken {
        // Each buddy's address is worked out only when it is read.
        let [b1, b2, b3] = buddies(index);
        let mut look = |b: u32| -> Option<Place> {
            // With no entry of the home in a buddy, none holds the tuple: the search
            // ends at the first empty one, and the lines after it are not read.
            if !displaced && empty_buddy.is_some() {
                return None;
            }
            let b = SlotAt::of(b)?;
            match b.read(key) {
                Held::Own(_) if only_new => Some(Place::Exists),
                Held::Own(tag) => Some(Place::Slot(b, tag, None)),
                Held::Empty(tag) if empty_buddy.is_none() => {
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
    // No slot holds the tuple. When the home counts entries in the LRU map, one may be
    // the tuple's, which is written there; any other takes an empty slot as if the count
    // were zero (with none empty, the LRU map it is, looked at by its insert). Kept out
    // of the slots until the controller's sweep clears the count, every new connection
    // of a home with one live entry in the LRU map would go there too: under churn, a
    // table at 80% of its size would then keep 28% of the slots' count there instead of
    // 18%, more than the map's fifth (see `lb_common::flow_slots`).
    let has_empty = !home_taken || empty_buddy.is_some();
    if !has_empty || (may_overflow(home_tag) && FLOWS.get_ptr(key).is_some()) {
        return Place::Lru;
    }
    if !home_taken {
        return Place::Slot(home, home_tag, None);
    }
    match empty_buddy {
        Some(b) => Place::Slot(b, empty_buddy_tag, Some(home)),
        None => Place::Lru,
    }
}

/// Records `target` under forward `key`: over its connection (in a slot, or in `FLOWS`)
/// unless `only_new`, else in its home slot if that is empty, else in the first empty
/// buddy, else in `FLOWS`. A claim lost to another writer, or to the controller's
/// emptying or count setting, is tried once more from what the slots then hold; a
/// tuple's own slot lost twice is given up rather than copied into the LRU map.
#[inline(always)]
pub fn record(key: &FlowKey, target: &FlowTarget, only_new: bool) -> Result<(), NotRecorded> {
    let index = forward_index(key, flow_slot_mask());
    let home = SlotAt::of(index).ok_or(NotRecorded::Failed)?;
    for attempt in 0..2 {
        match place(home, index, key, only_new) {
            Place::Exists => return Err(NotRecorded::Exists),
            Place::Lru => break,
            Place::Slot(slot, tag, displaced_from) if claim(slot.tag(), tag) => {
                write(slot, key, target);
                publish(slot.tag(), tag);
                if let Some(home) = displaced_from {
                    unsafe { atomic_xadd::<u64, u64, { Relaxed }>(home.tag(), SLOT_DISPLACED_ONE) };
                }
                return Ok(());
            }
            Place::Slot(slot, _, _) if attempt == 1 && same_key(slot.key(), key) => {
                return Err(NotRecorded::Failed)
            }
            Place::Slot(..) => {}
        }
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

/// Writes a claimed slot's key and target, with no route cached.
#[inline(always)]
fn write(slot: SlotAt, key: &FlowKey, target: &FlowTarget) {
    write_key(slot.key(), key);
    let value = slot.target();
    let route = slot.route();
    unsafe {
        write_volatile(addr_of_mut!((*value).backend), target.backend);
        write_volatile(addr_of_mut!((*value).service), target.service);
        write_volatile(addr_of_mut!((*value).state), target.state);
        write_volatile(addr_of_mut!((*value).last_seen), target.last_seen);
        write_volatile(addr_of_mut!((*route).ifindex), 0);
        write_volatile(addr_of_mut!((*route).generation), 0);
    }
}

/// The forward entry of `key` (client -> VIP), where it lives.
#[inline(always)]
pub fn find(key: &FlowKey) -> Option<*mut FlowTarget> {
    match find_in_slots(forward_index(key, flow_slot_mask()), |s, tag| {
        s.holds(tag, key)
    }) {
        Found::Slot(slot) => Some(slot.target()),
        Found::Lru => FLOWS.get_ptr_mut(key),
        Found::Missing => None,
    }
}

/// Whether forward `key`'s home slot holds a connection (any), from its tag, which every
/// lookup of the key reads first: the memory a lookup cannot do without, with nothing
/// around it (a benchmark's floor; no helper call, which would cost more than the read
/// itself when it hits the caches).
#[inline(always)]
pub fn home_holds_a_connection(key: &FlowKey) -> bool {
    SlotAt::of(forward_index(key, flow_slot_mask()))
        .is_some_and(|home| slot_state(home.read_tag()) != SLOT_EMPTY)
}

/// What a reply of a connection is translated to, and whom it is counted for.
#[derive(Clone, Copy)]
pub struct Translation {
    /// Virtual IP to put back as source (wire order).
    pub vip: u32,
    /// Virtual port to put back as source port (wire order).
    pub vport: u16,
    /// Bit set of `NAT_F_*`.
    pub flags: u16,
    pub service: u32,
    pub backend: u32,
}

/// The reply direction of a connection: its slot, or its copy in `RETURN_FLOWS`, which
/// has a slot's layout so that both are read by the same instructions (the verifier
/// refuses, without CAP_PERFMON, an offset held in a register and added to a pointer
/// that may point into either of two maps, which two layouts would make of a field's
/// address).
#[derive(Clone, Copy)]
pub struct ReturnEntry {
    conn: *mut ConnSlot,
    in_slot: bool,
}

impl ReturnEntry {
    /// What the reply becomes (read now: another CPU may change the entry later).
    #[inline(always)]
    pub fn translation(&self) -> Translation {
        let conn = self.conn;
        unsafe {
            Translation {
                vip: read_volatile(addr_of_mut!((*conn).key.dst_addr)),
                vport: read_volatile(addr_of_mut!((*conn).key.dst_port)),
                flags: self.flags(),
                service: read_volatile(addr_of_mut!((*conn).service)),
                backend: read_volatile(addr_of_mut!((*conn).backend)),
            }
        }
    }

    /// [`Translation::flags`] alone: from the connection's state.
    #[inline(always)]
    pub fn flags(&self) -> u16 {
        let state = unsafe { read_volatile(addr_of_mut!((*self.conn).state)) };
        if state & FLOW_F_SYN_PROXY != 0 {
            NAT_F_SYN_PROXY
        } else {
            0
        }
    }

    /// The cached route back to the client.
    #[inline(always)]
    pub fn route(&self) -> *mut NextHop {
        unsafe { addr_of_mut!((*self.conn).route) }
    }

    /// The connection's forward entry when it shares the slot (else look it up by its
    /// key: the copy in `RETURN_FLOWS` does not follow the connection's state).
    #[inline(always)]
    pub fn forward(&self) -> Option<*mut FlowTarget> {
        self.in_slot
            .then(|| unsafe { (self.conn as *mut u8).add(SLOT_TARGET_OFFSET) } as *mut FlowTarget)
    }
}

/// The reply direction of the connection reply `key` (backend -> client) belongs to,
/// where it lives.
#[inline(always)]
pub fn find_return(key: &FlowKey) -> Option<ReturnEntry> {
    match find_in_slots(reply_index(key, flow_slot_mask()), |s, tag| {
        s.holds_reply_of(tag, key)
    }) {
        Found::Slot(slot) => Some(ReturnEntry {
            conn: slot.slot.as_ptr(),
            in_slot: true,
        }),
        Found::Lru => RETURN_FLOWS.get_ptr_mut(key).map(|conn| ReturnEntry {
            conn,
            in_slot: false,
        }),
        Found::Missing => None,
    }
}

/// Makes replies under `key` (backend -> client) get `vip`:`vport` back as their source,
/// after the connection's forward entry (`target`) was recorded: nothing to do when that
/// is in a slot, which serves them; else a fresh copy of the connection in `RETURN_FLOWS`
/// (over an earlier one of the tuple).
#[inline(always)]
pub fn record_return(
    key: &FlowKey,
    vip: u32,
    vport: u16,
    target: &FlowTarget,
) -> Result<(), NotRecorded> {
    let forward = key.forward_of_reply(vip, vport);
    // The same home from either end.
    let index = forward_index(&forward, flow_slot_mask());
    if let Found::Slot(_) = find_in_slots(index, |s, tag| s.holds(tag, &forward)) {
        return Ok(());
    }
    let home = SlotAt::of(index).ok_or(NotRecorded::Failed)?;
    let mut conn = core::mem::MaybeUninit::<ConnSlot>::uninit();
    let p = conn.as_mut_ptr();
    zero_conn(p);
    write_key(unsafe { addr_of_mut!((*p).key) }, &forward);
    unsafe {
        write_volatile(addr_of_mut!((*p).backend), target.backend);
        write_volatile(addr_of_mut!((*p).service), target.service);
        write_volatile(addr_of_mut!((*p).state), target.state);
    }
    #[expect(
        clippy::needless_borrows_for_generic_args,
        reason = "by reference on purpose: a by-value copy of the zeroed entry is the \
                  memset the verifier refuses (see zero_conn)"
    )]
    let inserted = RETURN_FLOWS.insert(key, unsafe { &*conn.as_ptr() }, BPF_ANY as u64);
    match inserted {
        Ok(()) => {
            overflowed(home.tag());
            Ok(())
        }
        Err(_) => Err(NotRecorded::Failed),
    }
}

/// Reads the tag of the first buddy of reply `key`'s home slot, without waiting for it:
/// called on a SYN-ACK just before its reply lookup reads the home (a cache miss in a
/// large table, and the home's one line), so that the two reads of one page go out
/// together and take about as long as that one, and the connection's first ACK finds
/// the slot it takes in the caches. Without it the ACK that finds its home taken reads
/// the buddy's line cold, one more miss. The other two buddies are not read: with them
/// the SYN-ACK cost more and the first ACK no less (measured, docs/performance.md).
#[inline(always)]
pub fn warm_block(key: &FlowKey) {
    let buddy = buddies(reply_index(key, flow_slot_mask()))[0];
    if let Some(slot) = FLOW_SLOTS.get_ptr_mut(buddy) {
        unsafe {
            let _ = read_volatile(addr_of_mut!((*slot).tag));
        }
    }
}

/// Zeroes a connection by explicit word stores: a zero `NextHop` (byte-array MACs)
/// written or copied as a value becomes a `memset` call, whose variable stack offsets
/// the verifier refuses without CAP_PERFMON.
#[inline(always)]
fn zero_conn(p: *mut ConnSlot) {
    const WORDS: usize = core::mem::size_of::<ConnSlot>() / 8;
    const _: () = assert!(WORDS == 8);
    let words = p as *mut u64;
    unsafe {
        write_volatile(words, 0);
        write_volatile(words.add(1), 0);
        write_volatile(words.add(2), 0);
        write_volatile(words.add(3), 0);
        write_volatile(words.add(4), 0);
        write_volatile(words.add(5), 0);
        write_volatile(words.add(6), 0);
        write_volatile(words.add(7), 0);
    }
}
