//! Edge protection (see `lb_common::edge`): the source rules and SYN rate limit of a
//! protected service's packets without a flow entry, and VIP addresses' unlisted ports.
//! The checks run in `lb_edge`, which `lb_xdp` tail-calls ([`hand_over`]); a packet they
//! admit is tail-called on to `lb_place` ([`to_placement`]): `lb_xdp`'s own path compiled
//! without the hand-over, which places it like any other. Programs of their own for
//! stacks of their own: `lb_xdp`'s frame had no room for the checks while the build kept
//! every spill in a slot of its own, and a copy of the placement beside them overflowed
//! one 512-byte frame (docs/architecture.md, The stack). Established flows never reach
//! them.
use aya_ebpf::{
    bindings::BPF_ANY, helpers::generated::bpf_ktime_get_coarse_ns, maps::lpm_trie::Key,
    programs::XdpContext,
};
use lb_common::{
    counters::Reason,
    edge::{
        drop_memo_slot, first_take, take_token, DropMemo, EdgeAddr, EdgeService, RateKey4, Take,
        DROP_MEMO_NOT_ALLOWED, DROP_MEMO_NO_RULE, EDGE_DENY, EDGE_DROP_MEMO_SECS, EDGE_LOOKUP_LEN,
        EDGE_S_ALLOW_LIST, EDGE_S_RATE_LIMIT, EDGE_S_RULES, EDGE_UNLISTED_DROP,
    },
    limits::{PROGRAMS_SLOT_EDGE, PROGRAMS_SLOT_PLACE},
    net::{TCP_ACK, TCP_SYN},
};

use crate::{
    count, lookup,
    maps::{
        unlisted_ports, EDGE_COUNTERS, EDGE_DROP_MEMO, EDGE_RULES, EDGE_RULE_HITS, EDGE_SERVICES,
        PROGRAMS, RATE_BUCKETS, VIP_ADDRS,
    },
    packet::Packet,
    trace, wire,
};

/// IP protocol number of ICMP, which `unlisted_ports: drop` leaves to the kernel.
const PROTO_ICMP: u8 = 1;

/// `lb_xdp`'s action words for a packet of a protected service without a flow entry,
/// to be handed to `lb_edge` (dropped if that fails): this plus the service id (below
/// 2^16, see `limits::MAX_SERVICES`), which the drop memo needs ([`remembered_drop`]).
/// XDP actions are 0..=4, so the hand-overs take the top of the range.
const HAND_OVER_PROTECTED: u32 = 0xfffe_0000;
/// `lb_xdp`'s action word for a packet to a VIP address no service listens for, to be
/// handed to `lb_edge`, plus the reason it is passed as if that fails.
const HAND_OVER_UNLISTED: u32 = 0xffff_ff00;
const _: () = assert!(lb_common::limits::MAX_SERVICES <= 1 << 16);

/// Whether `lb_xdp`'s action word is a hand-over to `lb_edge`.
#[inline(always)]
pub fn is_hand_over(action: u32) -> bool {
    action >= HAND_OVER_PROTECTED
}

/// `lb_xdp`'s action word for a packet of protected service `service` without a flow
/// entry.
#[inline(always)]
pub fn protected_action(service: u32) -> u32 {
    HAND_OVER_PROTECTED | service
}

/// The service of a hand-over for a protected service's packet, if `action` is one.
#[inline(always)]
pub fn protected_service(action: u32) -> Option<u32> {
    (action >> 16 == HAND_OVER_PROTECTED >> 16).then_some(action & 0xffff)
}

/// `lb_xdp`'s action word for a packet to a maybe-VIP address that no service listens
/// for, otherwise passed as `why`: handed over to `lb_edge` with `unlisted_ports: drop`
/// ([`hands_over`]), passed as `why` otherwise ([`hand_over_failed`]).
#[inline(always)]
pub fn unlisted_action(why: Reason) -> u32 {
    HAND_OVER_UNLISTED | UNLISTED_TO_VIP | why as u32
}

/// `lb_xdp`'s action word for a TCP packet to no VIP:port and no tracked flow: to a
/// maybe-VIP address, an unlisted port ([`unlisted_action`]); otherwise passed as
/// `pass_no_service` ([`hand_over_failed`]).
#[inline(always)]
pub fn no_service_action(to_vip: bool) -> u32 {
    HAND_OVER_UNLISTED | (to_vip as u32) << UNLISTED_TO_VIP_SHIFT | Reason::PassNoService as u32
}

/// The bit of an unlisted action word that says the packet is to a maybe-VIP address.
const UNLISTED_TO_VIP_SHIFT: u32 = 8;
const UNLISTED_TO_VIP: u32 = 1 << UNLISTED_TO_VIP_SHIFT;

/// Whether an action word that [`is_hand_over`] goes to `lb_edge` now.
#[inline(always)]
pub fn hands_over(action: u32) -> bool {
    protected_service(action).is_some() || (action & UNLISTED_TO_VIP != 0 && drops_unlisted())
}

/// What a hand-over that did not happen does: `lb_edge` missing from the program array
/// (each start puts it there), where a protected service takes no unchecked connection;
/// or an unlisted port's packet with `unlisted_ports: pass`, passed as before.
#[inline(always)]
pub fn hand_over_failed(action: u32) -> u32 {
    if protected_service(action).is_some() {
        return count::drop(Reason::DropEdgeDenied);
    }
    let why = action & 0xff;
    count::reason_slot(why);
    aya_ebpf::bindings::xdp_action::XDP_PASS
}

/// The drop of a protected service's packet whose source a rule refused a moment ago
/// (see `lb_common::edge::DropMemo`), counted as the rule would count it; `None` hands
/// it over to `lb_edge` as before (no memo, or a sampled packet, which `lb_edge` traces).
/// Reads only the source address and the TCP flags: the packet was parsed (IPv4 without
/// options, TCP) before `lb_xdp` decided on the hand-over.
#[inline(always)]
pub fn remembered_drop(ctx: &XdpContext, service: u32) -> Option<u32> {
    const SRC_AT: usize = 14 + 12;
    const TCP_FLAGS_AT: usize = 14 + 20 + 13;
    if ctx.data() + TCP_FLAGS_AT + 1 > ctx.data_end() {
        return None;
    }
    // SAFETY: the 4 bytes and the flag byte are inside the frame (checked above).
    let (src, flags) = unsafe {
        let at = ctx.data() as *const u8;
        (wire::get32(at.add(SRC_AT)), *at.add(TCP_FLAGS_AT))
    };
    let syn = flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
    match memo_drop(service, src, syn) {
        0 => None,
        action => Some(action),
    }
}

/// [`remembered_drop`]'s memo read and counting, or 0 (no XDP action) for none. A BPF
/// function of its own, so that its locals take a frame of their own rather than room in
/// `lb_xdp`'s, and its code stays out of the path of every other packet (inlined, it
/// made no remembered drop measurably cheaper).
#[inline(never)]
fn memo_drop(service: u32, src: u32, syn: bool) -> u32 {
    let Some(memo) = EDGE_DROP_MEMO.get(drop_memo_slot(service, src)).copied() else {
        return 0;
    };
    if memo.service != service || memo.addr != src || memo.until <= lookup::now_secs() {
        return 0;
    }
    if trace::sampled(service) {
        return 0;
    }
    if memo.reason == Reason::DropRateLimited as u32 && !still_blocked(service, src, syn) {
        return 0;
    }
    count_rule_drop(service, memo.counter);
    count::reason_slot(memo.reason);
    aya_ebpf::bindings::xdp_action::XDP_DROP
}

/// For a remembered rate limit's block: whether this packet is a SYN its source's bucket
/// still blocks, taken from the bucket as `lb_edge` takes it (the drop counted there and
/// on the service). Anything else (no SYN, the block over, the bucket evicted) goes to
/// `lb_edge`, which decides as it would have without the memo.
#[inline(always)]
fn still_blocked(service: u32, src: u32, syn: bool) -> bool {
    if !syn {
        return false;
    }
    let Some(settings) = EDGE_SERVICES.get(service).copied() else {
        return false;
    };
    let Some(slot) = RATE_BUCKETS.get_ptr_mut(RateKey4 { service, addr: src }) else {
        return false;
    };
    let mut bucket = unsafe { *slot };
    let now = bucket_clock_secs();
    // A blocked bucket drops without refilling; past the block it might not.
    if now >= bucket.blocked_until {
        return false;
    }
    take_token(&mut bucket, &settings, now);
    unsafe { *slot = bucket };
    count_rate_limited(service);
    true
}

/// Counts a SYN the rate limit dropped on its service.
#[inline(always)]
fn count_rate_limited(service: u32) {
    if let Some(c) = EDGE_COUNTERS.get_ptr_mut(service) {
        unsafe { (*c).rate_limited += 1 };
    }
}

/// Counts a rule's drop: on the rule's hit counter, or (no allow rule matched) on the
/// service's `not_allowed`, or nowhere ([`DROP_MEMO_NO_RULE`]).
#[inline(always)]
fn count_rule_drop(service: u32, counter: u32) {
    if counter == DROP_MEMO_NO_RULE {
        return;
    }
    if counter == DROP_MEMO_NOT_ALLOWED {
        if let Some(c) = EDGE_COUNTERS.get_ptr_mut(service) {
            unsafe { (*c).not_allowed += 1 };
        }
    } else if let Some(hits) = EDGE_RULE_HITS.get_ptr_mut(counter) {
        unsafe { *hits += 1 };
    }
}

/// Remembers that a rule refused `src` of `service` (see [`remembered_drop`]).
#[inline(always)]
fn remember_drop(service: u32, src: u32, why: Reason, counter: u32) {
    if let Some(slot) = EDGE_DROP_MEMO.get_ptr_mut(drop_memo_slot(service, src)) {
        let memo = DropMemo {
            service,
            addr: src,
            until: lookup::now_secs().wrapping_add(EDGE_DROP_MEMO_SECS),
            reason: why as u32,
            counter,
            _pad: 0,
        };
        unsafe { *slot = memo };
    }
}

/// Tail-calls `lb_edge` with the packet. Returns only if the call failed (no `lb_edge`
/// in the program array).
#[inline(always)]
pub fn hand_over(ctx: &XdpContext) {
    unsafe { PROGRAMS.tail_call(ctx, PROGRAMS_SLOT_EDGE) };
}

/// Tail-calls `lb_place` with a packet `lb_edge` admitted: `lb_xdp`'s own path, compiled
/// without the hand-over, places it. Returns only if the call failed.
#[inline(always)]
pub fn to_placement(ctx: &XdpContext) {
    unsafe { PROGRAMS.tail_call(ctx, PROGRAMS_SLOT_PLACE) };
}

/// Whether packets to a VIP address on a port or protocol no service listens on are
/// dropped (else passed).
#[inline(always)]
pub fn drops_unlisted() -> bool {
    unlisted_ports() & EDGE_UNLISTED_DROP != 0
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
    // The rule that admitted the source, for a rate limit's block to remember.
    let mut admitted_by = DROP_MEMO_NO_RULE;
    if settings.flags & EDGE_S_RULES != 0 {
        let key = Key::new(EDGE_LOOKUP_LEN, EdgeAddr::v4(service, src));
        match EDGE_RULES.get(&key).copied() {
            Some(rule) => {
                admitted_by = rule.counter;
                count_rule_drop(service, rule.counter);
                if rule.verdict == EDGE_DENY {
                    remember_drop(service, src, Reason::DropEdgeDenied, rule.counter);
                    return DENIED;
                }
            }
            None if settings.flags & EDGE_S_ALLOW_LIST != 0 => {
                count_rule_drop(service, DROP_MEMO_NOT_ALLOWED);
                remember_drop(
                    service,
                    src,
                    Reason::DropEdgeNotAllowed,
                    DROP_MEMO_NOT_ALLOWED,
                );
                return NOT_ALLOWED;
            }
            None => {}
        }
    }
    if syn != 0 && settings.flags & EDGE_S_RATE_LIMIT != 0 {
        let (took, blocked) = take(service, src, &settings);
        if took == Take::Drop {
            count_rate_limited(service);
            if blocked {
                let why = Reason::DropRateLimited;
                remember_drop(service, src, why, admitted_by);
            }
            return RATE_LIMITED;
        }
    }
    ADMITTED
}

/// The buckets' clock: the kernel's coarse monotonic clock in whole seconds. Read here
/// rather than from the controller's clock map, so a limit keeps refilling while `lbd`
/// is stopped or restarting (with the map, a limited source would get its burst only,
/// for as long as `lbd` is away). Coarse: a tick's resolution is plenty for whole
/// seconds, and it is the cheapest kernel clock.
#[inline(always)]
fn bucket_clock_secs() -> u32 {
    // SAFETY: a helper without arguments, allowed in XDP programs.
    let ns = unsafe { bpf_ktime_get_coarse_ns() };
    (ns / 1_000_000_000) as u32
}

/// Takes a token for a SYN from its source's bucket, creating a full one for a source
/// not seen (or evicted); and whether the bucket is blocked now.
#[inline(always)]
fn take(service: u32, src: u32, settings: &EdgeService) -> (Take, bool) {
    let key = RateKey4 { service, addr: src };
    let now = bucket_clock_secs();
    match RATE_BUCKETS.get_ptr_mut(key) {
        Some(slot) => {
            let mut bucket = unsafe { *slot };
            let took = take_token(&mut bucket, settings, now);
            unsafe { *slot = bucket };
            (took, now < bucket.blocked_until)
        }
        None => {
            let (bucket, took) = first_take(settings, now);
            // A full map evicts its least recently used bucket; a failed insert only
            // means the next SYN starts a fresh one.
            let _ = RATE_BUCKETS.insert(key, bucket, BPF_ANY as u64);
            (took, false)
        }
    }
}
