//! The SYN cache (see `lb_common::syn_cache`): where a SYN that recorded no flow went,
//! for its SYN-ACK and for the client's ACK; and where a client packet forwarded without
//! a flow entry went, for its backend's reply.
use core::intrinsics::{atomic_cxchg, AtomicOrdering::Relaxed};

use lb_common::{
    flow::FlowKey,
    service_index::{key_of_word, SLOT_EMPTY, SLOT_REMOVED},
    syn_cache::{
        forwarded_hash, syn_ack_proof, syn_handshake_hash, syn_handshake_hash_of_flow, syn_set,
        syn_tag_for, syn_way_to_write, SynEntry, SynSet, SynWay,
    },
};

use crate::{
    lookup,
    maps::{hash_seed, syn_cache_mask, SYN_CACHE},
};

/// A handshake's set, found once per packet and then read or written in place.
pub struct Set(*mut SynSet);

/// The set of the handshake `flow` (client -> VIP), with the handshake's hash: what its
/// client's packets (the SYN, the ACK) look up.
pub struct FlowSlot {
    set: Set,
    handshake: u32,
}

/// What the SYN-ACK of a handshake is translated and counted with.
pub struct Handshake {
    /// VIP and port the client sent its SYN to (wire order).
    pub vip_addr: u32,
    pub vip_port: u16,
    pub service: u32,
    pub backend: u32,
    /// The way holding it, where a SYN-ACK leaves its proof: its address, taken in the
    /// branch that read it (see [`FlowSlot::find_acked`] for why not its number).
    way: *mut SynWay,
}

impl Handshake {
    /// Leaves the proof of the SYN-ACK with sequence number `seq` beside the way holding
    /// this handshake, for the client's ACK. A retransmitted SYN-ACK writes the same proof; one
    /// with a new sequence number replaces it, as the client acknowledges the last it got.
    #[inline(always)]
    pub fn note_syn_ack(&self, seq: u32) {
        let proof = syn_ack_proof(seq.wrapping_add(1));
        let p = self.way;
        unsafe { core::ptr::write_volatile(core::ptr::addr_of_mut!((*p).ack), proof) }
    }
}

/// What the SYN cache says of a client's ACK of a handshake (see
/// `lb_common::syn_cache::syn_ack_proof`).
pub enum Acked {
    /// It acknowledges the SYN-ACK that passed: the slot is spent, and its backend is
    /// where the flow is recorded.
    Proven(u32),
    /// A slot holds its handshake (sent to this backend), but the ACK acknowledges no
    /// SYN-ACK that passed.
    Unproven(u32),
    /// No slot holds its handshake.
    NoSlot,
}

/// The set of a handshake (see `lb_common::syn_cache::syn_set`).
#[inline(always)]
pub fn set(client_addr: u32, client_port: u16) -> Option<Set> {
    let index = syn_set(hash_seed(), client_addr, client_port, syn_cache_mask());
    SYN_CACHE.get_ptr_mut(index).map(Set)
}

/// The set and hash of the handshake `flow` (client -> VIP).
#[inline(always)]
pub fn slot_of_flow(flow: &FlowKey) -> Option<FlowSlot> {
    Some(FlowSlot {
        set: set(flow.src_addr, flow.src_port)?,
        handshake: syn_handshake_hash_of_flow(hash_seed(), flow),
    })
}

/// The set and hash of a client packet of `flow` (client -> VIP) forwarded without a
/// flow entry: a slot of the other kind (see `lb_common::syn_cache::forwarded_hash`).
#[inline(always)]
pub fn forwarded_slot_of_flow(flow: &FlowKey) -> Option<FlowSlot> {
    Some(FlowSlot {
        set: set(flow.src_addr, flow.src_port)?,
        handshake: forwarded_hash(syn_handshake_hash_of_flow(hash_seed(), flow)),
    })
}

impl Set {
    #[inline(always)]
    pub fn way(&self, way: usize) -> *mut SynWay {
        // Constant offsets only: the verifier then needs no bounds for the way.
        unsafe {
            if way == 0 {
                core::ptr::addr_of_mut!((*self.0).ways[0])
            } else {
                core::ptr::addr_of_mut!((*self.0).ways[1])
            }
        }
    }

    /// A way's slot, in one load: another CPU may be storing it.
    #[inline(always)]
    fn read(&self, way: usize) -> SynEntry {
        unsafe { core::ptr::read_volatile(core::ptr::addr_of!((*self.way(way)).entry)) }
    }

    /// Writes a way's slot, its proof zeroed first, so that no reader finds the new slot
    /// beside the proof of the handshake it replaces; both through the way's one address.
    #[inline(always)]
    fn write(&self, way: usize, entry: SynEntry) {
        let p = self.way(way);
        unsafe {
            core::ptr::write_volatile(core::ptr::addr_of_mut!((*p).ack), 0);
            core::ptr::write_volatile(core::ptr::addr_of_mut!((*p).entry), entry);
        }
    }

    /// The handshake the reply `reply` (backend -> client) answers, if a way holds one
    /// from that client to that backend: a SYN's slot, or with `forwarded` a slot left
    /// by a client packet forwarded without a flow entry.
    #[inline(always)]
    pub fn answered_by(&self, reply: &FlowKey, forwarded: bool) -> Option<Handshake> {
        self.answered_in(0, reply, forwarded)
            .or_else(|| self.answered_in(1, reply, forwarded))
    }

    #[inline(always)]
    fn answered_in(&self, way: usize, reply: &FlowKey, forwarded: bool) -> Option<Handshake> {
        let e = self.read(way);
        let backend = lookup::backend_by_id(e.backend())?;
        if backend.addr != reply.src_addr || backend.port != reply.src_port {
            return None;
        }
        let vip = lookup::service_key_word_at(e.service_at());
        if vip == SLOT_EMPTY || vip == SLOT_REMOVED {
            return None;
        }
        let mut handshake = syn_handshake_hash(hash_seed(), reply.dst_addr, reply.dst_port, vip);
        if forwarded {
            handshake = forwarded_hash(handshake);
        }
        if syn_tag_for(handshake, e.backend()) != e.tag() {
            return None;
        }
        let vip = key_of_word(vip);
        Some(Handshake {
            vip_addr: vip.addr,
            vip_port: vip.port,
            service: backend.service,
            backend: e.backend(),
            way: self.way(way),
        })
    }
}

impl FlowSlot {
    /// The handshake hashed `handshake` in `set`: an IPv6 one (see `syn_cache6`).
    #[inline(always)]
    pub fn of(set: Set, handshake: u32) -> FlowSlot {
        FlowSlot { set, handshake }
    }

    /// The way holding this handshake, and its entry.
    #[inline(always)]
    fn find(&self) -> Option<(usize, SynEntry)> {
        let first = self.set.read(0);
        if first.is_of(self.handshake) {
            return Some((0, first));
        }
        let second = self.set.read(1);
        second.is_of(self.handshake).then_some((1, second))
    }

    /// The backend the handshake went to, if its set holds it.
    #[inline(always)]
    pub fn backend(&self) -> Option<u32> {
        self.find().map(|(_, e)| e.backend())
    }

    /// The way holding this handshake (its address), its entry, and whether a client's
    /// ACK acknowledging `ack` proves that its client saw the SYN-ACK that passed. Each
    /// way is read through an address of its own branch, and that address is what the
    /// caller writes through: an address picked from the way number afterwards compiles to
    /// an offset added to the map pointer, which the verifier refuses to a loader without
    /// `CAP_PERFMON`.
    #[inline(always)]
    fn find_acked(&self, ack: u32) -> Option<(*mut SynWay, SynEntry, bool)> {
        let proof = syn_ack_proof(ack);
        let seen = |p: *mut SynWay| unsafe {
            (
                core::ptr::read_volatile(core::ptr::addr_of!((*p).entry)),
                core::ptr::read_volatile(core::ptr::addr_of!((*p).ack)),
            )
        };
        let first = self.set.way(0);
        let (e, ack) = seen(first);
        if e.is_of(self.handshake) {
            return Some((first, e, ack == proof));
        }
        let second = self.set.way(1);
        let (e, ack) = seen(second);
        e.is_of(self.handshake).then_some((second, e, ack == proof))
    }

    /// The backend the handshake went to, if its set holds it, and whether a client's
    /// packet acknowledging `ack` proves that its client saw the SYN-ACK that passed; the
    /// slot is left as it is (see [`FlowSlot::take_acked`] for the ACK that spends it).
    #[inline(always)]
    pub fn acked(&self, ack: u32) -> Option<(u32, bool)> {
        self.find_acked(ack)
            .map(|(_, e, proven)| (e.backend(), proven))
    }

    /// Takes the handshake's backend for the client's ACK acknowledging `ack`, if that
    /// proves the client saw the SYN-ACK: a slot serves its handshake once, so a later miss
    /// of the same flow (its entries purged with a drained backend, or evicted) is placed
    /// by the table again. The slot is emptied only if it still holds this handshake:
    /// another CPU's SYN may have just taken it. An unproven ACK leaves the slot to the
    /// client that did see the SYN-ACK, unless `trusted` (a tier's service, which records
    /// the flow on it all the same): then it spends the slot too, or every later packet of
    /// the connection would find its own handshake there and take itself for a new one on
    /// the tuple (see `to_backend::opened_by_a_syn`).
    #[inline(always)]
    pub fn take_acked(&self, ack: u32, trusted: bool) -> Acked {
        let Some((way, e, proven)) = self.find_acked(ack) else {
            return Acked::NoSlot;
        };
        if !proven && !trusted {
            return Acked::Unproven(e.backend());
        }
        let entry = unsafe { core::ptr::addr_of_mut!((*way).entry) };
        unsafe { atomic_cxchg::<u64, { Relaxed }, { Relaxed }>(entry.cast(), e.0, 0) };
        if proven {
            Acked::Proven(e.backend())
        } else {
            Acked::Unproven(e.backend())
        }
    }

    /// Remembers that the handshake, to the service at `service_at` in the index, went
    /// to backend `backend` (its proof zeroed, see [`Set::write`]).
    #[inline(always)]
    pub fn record(&self, service_at: u32, backend: u32) {
        let ways = [self.set.read(0), self.set.read(1)];
        let way = syn_way_to_write(&ways, self.handshake);
        let tag = syn_tag_for(self.handshake, backend);
        self.set.write(way, SynEntry::new(tag, service_at, backend));
    }
}
