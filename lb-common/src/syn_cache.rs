//! The SYN cache: an array of two-slot sets ([`SynSet`]), indexed by a hash of the
//! client's address and port, whose slot a SYN to a `SERVICE_F_STATELESS_SYN` service
//! writes instead of recording its flow. It serves the two other packets of the handshake:
//!
//! - the SYN-ACK (backend -> client) finds no return entry and is translated back only
//!   if a slot of the set names its client and backend: so replies of other traffic to the
//!   backends (health probes, clients reaching a backend directly) are never rewritten;
//! - the client's ACK misses the flow table and records the flow on the slot's backend,
//!   so a handshake stays on its backend even if the table changed since the SYN. The SYN
//!   looks up no flow: if its tuple still has the entry of an earlier connection (closed,
//!   idle, or on a backend taking no new flows), the ACK finds the slot naming its flow
//!   and replaces that entry.
//!
//! The ACK must also prove that its client saw the backend's SYN-ACK, or anyone could
//! record flows with a spoofed SYN and a spoofed ACK of the same tuple, never seeing the
//! SYN-ACK: the SYN-ACK, as it passes through, leaves beside its way a proof of its
//! sequence number ([`syn_ack_proof`]), and only an ACK whose acknowledgment number is
//! that sequence number + 1 records the flow. Any other ACK of the handshake records
//! nothing, leaves the slot to the client that saw the SYN-ACK, and is forwarded like a
//! packet without a slot, but to the SYN's backend rather than by the table. A
//! retransmitted SYN-ACK leaves the same proof; one with a new initial sequence number (a
//! backend that lost the first handshake and answered a retransmitted SYN afresh)
//! replaces it, as the client will acknowledge the newest SYN-ACK it gets, and a client
//! that acknowledges an older one still reaches the SYN's backend, unrecorded (its
//! backend's answer records the flow, as for any packet forwarded without an entry).
//!
//! An ACK that records its flow empties the slot, so the cache holds handshakes in
//! flight and the SYNs never answered. A SYN takes an empty slot of its set if there is
//! one ([`syn_way_to_write`]): it overwrites a handshake still in flight only when both
//! slots hold one. A SYN flood only overwrites slots (a handshake whose slot was
//! overwritten within one round trip has its SYN-ACK passed, and the client retransmits
//! the SYN) instead of evicting live flows from the flow table.
//!
//! A slot of a second kind vouches for a client packet without a flow entry that
//! completed no handshake of ours (an evicted or ECMP-moved connection, or a spoofed
//! segment): the data path forwards it by the table, recording no flow, and leaves a slot
//! tagged from [`forwarded_hash`] instead. Only the backend's reply (neither SYN nor
//! RST) can use it, to record the flow; a client packet never takes it, so a spoofed
//! packet sent twice records nothing either.
//!
//! A slot is one 64-bit word, written and read with one access, so two CPUs writing a
//! slot at once leave one whole entry, never a mix. It holds no addresses: the backend's
//! come from its id, the VIP's from the service-index slot the SYN matched, and a tag
//! hashed from the whole handshake (client, VIP, backend) tells whether the slot is that
//! handshake's. Small slots keep the cache small, and that is what a SYN pays for: it
//! writes one set at random (see `limits::syn_cache_slots`).
use crate::{flow::FlowKey, hash::mix32, service_index::key_word};

/// One slot: backend id (bits 0..20), service-index slot of the VIP (20..36), tag
/// (36..64). All zero is an empty slot: no tag is 0.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SynEntry(pub u64);
const _: () = assert!(core::mem::size_of::<SynEntry>() == 8);

/// Bits of a backend id in a slot: backend ids stay below `1 << SYN_BACKEND_BITS`.
pub const SYN_BACKEND_BITS: u32 = 20;
/// Bits of a service-index slot number in a slot.
pub const SYN_SERVICE_AT_BITS: u32 = 16;
const SERVICE_AT_SHIFT: u32 = SYN_BACKEND_BITS;
const TAG_SHIFT: u32 = SYN_BACKEND_BITS + SYN_SERVICE_AT_BITS;
const TAG_BITS: u32 = 64 - TAG_SHIFT;

impl SynEntry {
    /// The slot of a handshake sent to backend `backend` of the service at
    /// `service_at` in the index, with tag `tag` ([`syn_tag_for`]). Ids wider than their
    /// fields are cut, and the tag then no longer matches what the slot names.
    #[inline(always)]
    pub const fn new(tag: u32, service_at: u32, backend: u32) -> SynEntry {
        SynEntry(
            (backend & ((1 << SYN_BACKEND_BITS) - 1)) as u64
                | ((service_at & ((1 << SYN_SERVICE_AT_BITS) - 1)) as u64) << SERVICE_AT_SHIFT
                | (tag as u64) << TAG_SHIFT,
        )
    }

    #[inline(always)]
    pub const fn backend(self) -> u32 {
        self.0 as u32 & ((1 << SYN_BACKEND_BITS) - 1)
    }

    #[inline(always)]
    pub const fn service_at(self) -> u32 {
        (self.0 >> SERVICE_AT_SHIFT) as u32 & ((1 << SYN_SERVICE_AT_BITS) - 1)
    }

    #[inline(always)]
    pub const fn tag(self) -> u32 {
        (self.0 >> TAG_SHIFT) as u32
    }
}

/// Slots of a set: the ones a handshake may take.
pub const SYN_CACHE_WAYS: usize = 2;

/// One way of a set: a slot, and beside it the proof its handshake's SYN-ACK left.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SynWay {
    pub entry: SynEntry,
    /// The proof ([`syn_ack_proof`]); 0 until a SYN-ACK passes. A SYN writing the way
    /// zeroes it first, so a proof never outlives the handshake it was left for. It sits
    /// in the way, not in an array of its own, so the data path reaches it from the
    /// way's address at a constant offset: a proof at a run-time offset of the map value
    /// (an array indexed by the way a SYN picked) compiles to pointer arithmetic that the
    /// verifier refuses to a loader without `CAP_PERFMON`.
    pub ack: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<SynWay>() == 16);

impl SynWay {
    /// A way holding `entry`, with no proof yet.
    pub const fn new(entry: SynEntry) -> SynWay {
        SynWay {
            entry,
            ack: 0,
            _pad: 0,
        }
    }
}

/// One set of the cache: a SYN writes one of its ways, and the SYN-ACK and the ACK look
/// at both. Two ways make a SYN overwrite another handshake still in flight only when
/// both ways hold one, where a single slot would whenever two handshakes in flight share
/// it; the ways sit side by side, so reading both costs no more memory traffic than one.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SynSet {
    pub ways: [SynWay; SYN_CACHE_WAYS],
}
const _: () = assert!(core::mem::size_of::<SynSet>() == 32);

/// The set of a handshake in a cache of `mask + 1` sets, from what all three of its
/// packets carry: the client's address and port.
#[inline(always)]
pub const fn syn_set(seed: u32, client_addr: u32, client_port: u16, mask: u32) -> u32 {
    mix32(mix32(client_addr ^ seed) ^ client_port as u32) & mask
}

/// The hash of a handshake's client and VIP (its service key word, [`key_word`]), seeded;
/// the tag of each backend it may have gone to follows from it ([`syn_tag_for`]), so a
/// packet hashes its handshake once and then checks both ways cheaply.
#[inline(always)]
pub const fn syn_handshake_hash(seed: u32, client_addr: u32, client_port: u16, vip: u64) -> u32 {
    let mut h = mix32(seed ^ client_addr ^ 0x2c1b_3c6d);
    h = mix32(h ^ client_port as u32);
    h = mix32(h ^ vip as u32);
    mix32(h ^ (vip >> 32) as u32)
}

/// The hash a slot of the other kind is tagged from: a client packet without a flow entry
/// that the data path forwarded by the table (not a SYN), for the same client and VIP as
/// `handshake` ([`syn_handshake_hash`]). Such a slot vouches only for the backend's
/// reply (which then records the flow), never for a client's packet: its tag is of an
/// unrelated hash, so looking it up as a SYN's slot ([`SynEntry::is_of`]) misses (and
/// the other way round), and a spoofed packet sent twice records nothing.
#[inline(always)]
pub const fn forwarded_hash(handshake: u32) -> u32 {
    mix32(handshake ^ 0x5f0d_2a4b)
}

/// [`syn_handshake_hash`] of the handshake `flow` (client -> VIP).
#[inline(always)]
pub fn syn_handshake_hash_of_flow(seed: u32, flow: &FlowKey) -> u32 {
    syn_handshake_hash(
        seed,
        flow.src_addr,
        flow.src_port,
        key_word(&flow.service_key()),
    )
}

/// The tag of the handshake hashed `handshake` sent to `backend`: never 0,
/// [`TAG_BITS`] wide. A slot holding another handshake matches by chance once in about
/// 134 million reads (and the data path also checks that the backend serves the
/// packet's service).
#[inline(always)]
pub const fn syn_tag_for(handshake: u32, backend: u32) -> u32 {
    (mix32(handshake ^ backend) >> (32 - TAG_BITS)) | 1
}

/// The proof a SYN-ACK with sequence number `ack - 1` leaves beside its handshake's slot,
/// and that the client's ACK, acknowledging `ack`, must match: the acknowledgment number
/// itself, with the low bit set so that it is never 0, which stands for "no SYN-ACK
/// seen" (else an ACK acknowledging 0 would match a slot whose SYN-ACK never came).
///
/// What makes it unforgeable is the backend's initial sequence number, which a client
/// that never saw the SYN-ACK must guess (one chance in 2^31 per ACK). A keyed hash of
/// it would add nothing: the seed is no secret, and the cache is readable only by
/// whoever loads the program. Nor is a hash needed to tie a proof to its slot: a SYN
/// zeroes a way's proof before it writes the way (see `SynWay::ack`), so a proof is
/// read beside another handshake's slot only in a race between CPUs (a SYN-ACK writing
/// its proof just after another SYN took the way), and then matches only an ACK that
/// acknowledges the first handshake's SYN-ACK, which its own client alone has seen. A
/// copy is also what keeps the program's stack within bounds: the two hash rounds of a
/// keyed proof cost the client path 72 of its 512 bytes.
#[inline(always)]
pub const fn syn_ack_proof(ack: u32) -> u32 {
    ack | 1
}

impl SynEntry {
    /// Whether the slot holds the handshake hashed `handshake` (to whichever backend).
    #[inline(always)]
    pub const fn is_of(self, handshake: u32) -> bool {
        self.tag() == syn_tag_for(handshake, self.backend())
    }
}

/// The way of `set` that a SYN of the handshake hashed `handshake` writes: the one
/// already holding that handshake (a retransmitted SYN placed afresh), else an empty one
/// (a spent slot is empty too), else the one a bit of the hash picks.
#[inline(always)]
pub const fn syn_way_to_write(set: &[SynEntry; SYN_CACHE_WAYS], handshake: u32) -> usize {
    if set[0].is_of(handshake) {
        0
    } else if set[1].is_of(handshake) {
        1
    } else if set[0].0 == 0 {
        0
    } else if set[1].0 == 0 {
        1
    } else {
        (handshake >> 31) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::{FAMILY_IPV4, PROTO_TCP};

    fn flow(src_port: u16) -> FlowKey {
        FlowKey {
            src_addr: 0x0b00_010a,
            dst_addr: 0x0200_0a0a,
            src_port,
            dst_port: 0x4e9c,
            proto: PROTO_TCP,
            family: FAMILY_IPV4,
            _pad: [0; 2],
        }
    }

    #[test]
    fn a_slot_gives_back_each_field_at_its_widest() {
        let tag = syn_tag_for(
            syn_handshake_hash_of_flow(7, &flow(0x901f)),
            (1 << SYN_BACKEND_BITS) - 1,
        );
        let e = SynEntry::new(
            tag,
            (1 << SYN_SERVICE_AT_BITS) - 1,
            (1 << SYN_BACKEND_BITS) - 1,
        );
        assert_eq!(e.tag(), tag);
        assert_eq!(e.service_at(), (1 << SYN_SERVICE_AT_BITS) - 1);
        assert_eq!(e.backend(), (1 << SYN_BACKEND_BITS) - 1);
        let e = SynEntry::new(tag, 3, 0);
        assert_eq!((e.tag(), e.service_at(), e.backend()), (tag, 3, 0));
    }

    fn syn_tag(seed: u32, client_addr: u32, client_port: u16, vip: u64, backend: u32) -> u32 {
        syn_tag_for(
            syn_handshake_hash(seed, client_addr, client_port, vip),
            backend,
        )
    }

    #[test]
    fn a_tag_is_never_zero_and_covers_every_part_of_the_handshake() {
        let f = flow(0x901f);
        let vip = key_word(&f.service_key());
        let base = syn_tag(7, f.src_addr, f.src_port, vip, 1);
        let changed = [
            syn_tag(8, f.src_addr, f.src_port, vip, 1),
            syn_tag(7, f.src_addr ^ 1, f.src_port, vip, 1),
            syn_tag(7, f.src_addr, f.src_port ^ 1, vip, 1),
            syn_tag(7, f.src_addr, f.src_port, vip ^ 1, 1),
            syn_tag(7, f.src_addr, f.src_port, vip ^ 1 << 32, 1),
            syn_tag(7, f.src_addr, f.src_port, vip ^ 1 << 48, 1),
            syn_tag(7, f.src_addr, f.src_port, vip, 2),
        ];
        assert!(changed.iter().all(|c| *c != base), "{base:#x} {changed:x?}");
        for port in 0..20_000u16 {
            let tag = syn_tag_for(syn_handshake_hash_of_flow(0, &flow(port)), 0);
            assert_ne!(tag, 0);
            assert!(tag < 1 << TAG_BITS);
            assert!(
                !SynEntry::default().is_of(syn_handshake_hash_of_flow(0, &flow(port))),
                "an empty slot never names a handshake"
            );
        }
    }

    #[test]
    fn tags_of_different_handshakes_rarely_agree() {
        let mut same = 0;
        for port in 0..50_000u16 {
            let a = syn_tag_for(syn_handshake_hash_of_flow(1, &flow(port)), 5);
            let b = syn_tag_for(
                syn_handshake_hash_of_flow(1, &flow(port.wrapping_add(1))),
                5,
            );
            same += (a == b) as u32;
        }
        assert!(
            same <= 1,
            "{same} of 50,000 neighbouring handshakes share a tag"
        );
    }

    #[test]
    fn a_forwarded_packets_slot_never_passes_for_a_syns_and_back() {
        for port in 0..20_000u16 {
            let h = syn_handshake_hash_of_flow(3, &flow(port));
            let syn = SynEntry::new(syn_tag_for(h, 5), 1, 5);
            let forwarded = SynEntry::new(syn_tag_for(forwarded_hash(h), 5), 1, 5);
            assert!(syn.is_of(h) && forwarded.is_of(forwarded_hash(h)));
            assert!(
                !forwarded.is_of(h),
                "port {port}: a forwarded slot is no SYN's"
            );
            assert!(
                !syn.is_of(forwarded_hash(h)),
                "port {port}: a SYN's slot is no forward's"
            );
        }
    }

    #[test]
    fn a_proof_is_never_zero_and_matches_only_its_own_ack_number_or_its_low_bit_twin() {
        let proof = syn_ack_proof(0x1234_5679);
        assert_eq!(
            proof,
            syn_ack_proof(0x1234_5679),
            "a retransmit's is the same"
        );
        for ack in [0, 1, 2, u32::MAX, 0x1234_5678, 0x1234_567a] {
            assert_ne!(syn_ack_proof(ack), 0, "ack {ack:#x}");
        }
        let matching: Vec<u32> = (0x1234_0000..0x1235_0000u32)
            .filter(|a| syn_ack_proof(*a) == proof)
            .collect();
        assert_eq!(matching, [0x1234_5678, 0x1234_5679]);
    }

    fn entry_of(port: u16, backend: u32) -> SynEntry {
        let h = syn_handshake_hash_of_flow(3, &flow(port));
        SynEntry::new(syn_tag_for(h, backend), 1, backend)
    }

    #[test]
    fn a_syn_takes_its_own_way_then_an_empty_one_and_overwrites_only_a_full_set() {
        let h = syn_handshake_hash_of_flow(3, &flow(1000));
        let (other, third, empty) = (entry_of(2000, 4), entry_of(3000, 5), SynEntry(0));
        let own = entry_of(1000, 9);
        assert_eq!(syn_way_to_write(&[other, own], h), 1, "its own way");
        assert_eq!(syn_way_to_write(&[own, other], h), 0, "its own way");
        assert_eq!(syn_way_to_write(&[other, empty], h), 1, "the empty way");
        assert_eq!(syn_way_to_write(&[empty, other], h), 0, "the empty way");
        assert_eq!(syn_way_to_write(&[empty, empty], h), 0);
        // Both ways taken: the hash picks, so different handshakes pick both ways.
        let picks: std::collections::HashSet<usize> = (0..64u16)
            .map(|p| syn_way_to_write(&[other, third], syn_handshake_hash_of_flow(3, &flow(p))))
            .collect();
        assert_eq!(picks.len(), 2);
        assert!(own.is_of(h) && !other.is_of(h) && !empty.is_of(h));
    }
}
