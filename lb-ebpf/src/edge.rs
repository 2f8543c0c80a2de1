//! Edge protection (see `lb_common::edge`): the source rules and SYN rate limit of a
//! protected service's packets without a flow entry, and VIP addresses' unlisted ports.
//! The checks run in `lb_edge`, which `lb_xdp` tail-calls ([`hand_over`]); a packet they
//! admit is tail-called back into `lb_xdp` ([`back_to_placement`]), which places it like
//! any other. A program of its own for a stack of its own: `lb_xdp`'s has no room for the
//! checks, and a copy of the placement beside them overflows one 512-byte frame (the
//! build keeps every spill in a slot of its own). Established flows never reach it.
use aya_ebpf::{bindings::BPF_ANY, maps::lpm_trie::Key, programs::XdpContext};
use lb_common::{
    counters::Reason,
    edge::{
        first_take, take_token, EdgeAddr4, EdgeService, RateKey4, Take, EDGE_DENY, EDGE_LOOKUP_LEN,
        EDGE_S_ALLOW_LIST, EDGE_S_RATE_LIMIT, EDGE_S_RULES, EDGE_UNLISTED_DROP,
    },
    limits::{PROGRAMS_SLOT_EDGE, PROGRAMS_SLOT_XDP},
    net::{TCP_ACK, TCP_SYN},
};

use crate::{
    count, lookup,
    maps::{
        EDGE_COUNTERS, EDGE_HANDOVER, EDGE_RULES, EDGE_RULE_HITS, EDGE_SERVICES, EDGE_SETTINGS,
        PROGRAMS, RATE_BUCKETS, VIP_ADDRS,
    },
    packet::Packet,
};

/// IP protocol number of ICMP, which `unlisted_ports: drop` leaves to the kernel.
const PROTO_ICMP: u8 = 1;

/// Tail-calls `lb_edge` with the packet. Returns only if the call failed (no `lb_edge`
/// in the program array).
#[inline(always)]
pub fn hand_over(ctx: &XdpContext) {
    unsafe { PROGRAMS.tail_call(ctx, PROGRAMS_SLOT_EDGE) };
}

/// A tag of the packet's tuple, never 0 (0: no packet admitted).
#[inline(always)]
fn tag(pkt: &Packet) -> u32 {
    (pkt.flow.src_addr ^ ((pkt.flow.src_port as u32) << 16 | pkt.flow.dst_port as u32)) | 1
}

/// Hands a packet `lb_edge` admitted back to `lb_xdp`, which places it as if it had no
/// checks to pass ([`admitted`]). Returns only if the call failed.
#[inline(always)]
pub fn back_to_placement(ctx: &XdpContext, pkt: &Packet) {
    // Per CPU: an XDP program runs to completion on its CPU, so the packet that finds
    // the tag is this one, handed back.
    if let Some(word) = EDGE_HANDOVER.get_ptr_mut(0) {
        unsafe { *word = tag(pkt) };
    }
    unsafe { PROGRAMS.tail_call(ctx, PROGRAMS_SLOT_XDP) };
}

/// Whether `lb_edge` admitted this packet and handed it back; consumes the admission.
/// A tag left unconsumed (the packet found a flow entry on its second pass) can only
/// admit a later packet of the same tuple once, unchecked: a retransmit of the
/// connection that was admitted.
#[inline(always)]
pub fn admitted(pkt: &Packet) -> bool {
    let Some(word) = EDGE_HANDOVER.get_ptr_mut(0) else {
        return false;
    };
    if unsafe { *word } != tag(pkt) {
        return false;
    }
    unsafe { *word = 0 };
    true
}

/// Whether packets to a VIP address on a port or protocol no service listens on are
/// dropped (else passed).
#[inline(always)]
pub fn drops_unlisted() -> bool {
    EDGE_SETTINGS
        .get(0)
        .is_some_and(|w| *w & EDGE_UNLISTED_DROP != 0)
}

/// A packet to `dst` on a port or protocol no service listens on, `why` being what it
/// would be passed as: dropped if `dst` is a VIP address (ICMP excepted: echo and the
/// errors path MTU discovery needs stay the kernel's).
#[inline(always)]
pub fn unlisted(dst: u32, proto: u8, why: Reason) -> u32 {
    if proto == PROTO_ICMP || unsafe { VIP_ADDRS.get(dst) }.is_none() {
        return count::pass(why);
    }
    count::drop(Reason::DropUnlistedPort)
}

/// The edge verdict on a packet without a flow entry to service `service`: `None` lets
/// it be placed (by `lb_place`), a reason drops it.
#[inline(always)]
pub fn admit(pkt: &Packet, service: u32) -> Option<Reason> {
    let syn = pkt.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
    match verdict(service, pkt.flow.src_addr, syn as u32) {
        ADMITTED => None,
        DENIED => Some(Reason::DropEdgeDenied),
        NOT_ALLOWED => Some(Reason::DropEdgeNotAllowed),
        _ => Some(Reason::DropRateLimited),
    }
}

const ADMITTED: u32 = 0;
const DENIED: u32 = 1;
const NOT_ALLOWED: u32 = 2;
const RATE_LIMITED: u32 = 3;

/// The edge verdict on a packet from `src` (wire order) without a flow entry to service
/// `service`, `syn` (1) if it opens a connection. The most specific rule matching the
/// source decides (counted on that rule); with an allow list and no match it is refused;
/// a SYN then takes a token from its source's bucket.
#[inline(always)]
fn verdict(service: u32, src: u32, syn: u32) -> u32 {
    let Some(settings) = EDGE_SERVICES.get(service).copied() else {
        return ADMITTED;
    };
    if settings.flags & EDGE_S_RULES != 0 {
        let key = Key::new(EDGE_LOOKUP_LEN, EdgeAddr4::new(service, src));
        match EDGE_RULES.get(&key).copied() {
            Some(rule) => {
                if let Some(hits) = EDGE_RULE_HITS.get_ptr_mut(rule.counter) {
                    unsafe { *hits += 1 };
                }
                if rule.verdict == EDGE_DENY {
                    return DENIED;
                }
            }
            None if settings.flags & EDGE_S_ALLOW_LIST != 0 => {
                if let Some(c) = EDGE_COUNTERS.get_ptr_mut(service) {
                    unsafe { (*c).not_allowed += 1 };
                }
                return NOT_ALLOWED;
            }
            None => {}
        }
    }
    if syn != 0
        && settings.flags & EDGE_S_RATE_LIMIT != 0
        && take(service, src, &settings) == Take::Drop
    {
        if let Some(c) = EDGE_COUNTERS.get_ptr_mut(service) {
            unsafe { (*c).rate_limited += 1 };
        }
        return RATE_LIMITED;
    }
    ADMITTED
}

/// Takes a token for a SYN from its source's bucket, creating a full one for a source
/// not seen (or evicted).
#[inline(always)]
fn take(service: u32, src: u32, settings: &EdgeService) -> Take {
    let key = RateKey4 { service, addr: src };
    let now = lookup::now_secs();
    match RATE_BUCKETS.get_ptr_mut(key) {
        Some(slot) => {
            let mut bucket = unsafe { *slot };
            let took = take_token(&mut bucket, settings, now);
            unsafe { *slot = bucket };
            took
        }
        None => {
            let (bucket, took) = first_take(settings, now);
            // A full map evicts its least recently used bucket; a failed insert only
            // means the next SYN starts a fresh one.
            let _ = RATE_BUCKETS.insert(key, bucket, BPF_ANY as u64);
            took
        }
    }
}
