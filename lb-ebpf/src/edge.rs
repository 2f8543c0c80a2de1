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
    bindings::BPF_ANY,
    helpers::generated::bpf_ktime_get_coarse_ns,
    maps::{lpm_trie::Key, LruHashMap},
    programs::XdpContext,
};
use lb_common::{
    counters::Reason,
    edge::{
        drop_memo_slot, first_take, take_token, DropMemo, EdgeAddr, EdgeService, RateKey4, Take,
        TokenBucket, DROP_MEMO_NOT_ALLOWED, DROP_MEMO_NO_RULE, EDGE_DENY, EDGE_DROP_MEMO_SECS,
        EDGE_LOOKUP_LEN, EDGE_S_ALLOW_LIST, EDGE_S_RATE_LIMIT, EDGE_S_RULES, EDGE_UNLISTED_DROP,
    },
    filter::FILTER_PROTECTED,
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
/// 2^16, see `limits::MAX_SERVICES`).
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

/// The drop of a SYN whose source a rule (or its rate limit's block) refused on this
/// VIP:port a moment ago (see `lb_common::edge::DropMemo`), counted as the rule would
/// count it; `None` goes on as before. Read right after the parse, before the service
/// lookup: a flood's SYNs are the packets that must cost least. SYNs only, as no
/// established flow has one: any other packet of a refused source may belong to a
/// connection it opened before the refusal, which keeps going ([`remembered_drop`] takes
/// those that find no flow entry).
#[inline(always)]
pub fn remembered_syn_drop(pkt: &Packet) -> Option<u32> {
    if pkt.tcp_flags & (TCP_SYN | TCP_ACK) != TCP_SYN {
        return None;
    }
    let flow = &pkt.flow;
    // Only a protected service's VIP has memo entries: any other SYN pays one bitmap read.
    if !lookup::may_be(FILTER_PROTECTED, flow.dst_addr) {
        return None;
    }
    let slot = drop_memo_slot(flow.dst_addr, flow.dst_port, flow.src_addr);
    // Inline up to the source's compare: the SYNs of every other source (nearly all of
    // them) pay no call.
    let memo = EDGE_DROP_MEMO.get_ptr(slot)?;
    if unsafe { (*memo).addr } != flow.src_addr {
        return None;
    }
    match memo_drop(slot, (flow.dst_addr, flow.dst_port), flow.src_addr, true) {
        0 => None,
        action => Some(action),
    }
}

/// The drop of a protected service's packet without a flow entry whose source a rule
/// refused a moment ago, as [`remembered_syn_drop`] for the packets that are not a SYN
/// (a SYN's memo was read before the service lookup). `None` hands it over to `lb_edge`.
/// Reads only the addresses, the ports and the TCP flags: the packet was parsed (IPv4
/// without options, TCP) before `lb_xdp` decided on the hand-over.
#[inline(always)]
pub fn remembered_drop(ctx: &XdpContext) -> Option<u32> {
    const SRC_AT: usize = 14 + 12;
    const DST_AT: usize = 14 + 16;
    const DST_PORT_AT: usize = 14 + 20 + 2;
    const TCP_FLAGS_AT: usize = 14 + 20 + 13;
    if ctx.data() + TCP_FLAGS_AT + 1 > ctx.data_end() {
        return None;
    }
    // SAFETY: every byte read is inside the frame (checked above).
    let (src, dst, dst_port, flags) = unsafe {
        let at = ctx.data() as *const u8;
        (
            wire::get32(at.add(SRC_AT)),
            wire::get32(at.add(DST_AT)),
            wire::get16(at.add(DST_PORT_AT)),
            *at.add(TCP_FLAGS_AT),
        )
    };
    if flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
        return None;
    }
    match memo_drop(
        drop_memo_slot(dst, dst_port, src),
        (dst, dst_port),
        src,
        false,
    ) {
        0 => None,
        action => Some(action),
    }
}

/// The memo read and counting of [`remembered_syn_drop`] and [`remembered_drop`], or 0
/// (no XDP action) for none: `slot` is the memo's slot for `to` (VIP and port) and `src`. A BPF function of its own, so that its locals take a frame
/// of their own rather than room in `lb_xdp`'s, and its code stays out of the path of
/// every other packet. A sampled packet is left to the full check, which traces it.
#[inline(never)]
fn memo_drop(slot: u32, to: (u32, u16), src: u32, syn: bool) -> u32 {
    let (vip, vport) = to;
    let Some(memo) = EDGE_DROP_MEMO.get(slot).copied() else {
        return 0;
    };
    if memo.addr != src || memo.vip != vip || memo.vport != vport {
        return 0;
    }
    if memo.until <= lookup::now_secs() || trace::sampled(memo.service) {
        return 0;
    }
    let service = memo.service;
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
pub fn count_rate_limited(service: u32) {
    if let Some(c) = EDGE_COUNTERS.get_ptr_mut(service) {
        unsafe { (*c).rate_limited += 1 };
    }
}

/// Counts a rule's drop: on the rule's hit counter, or (no allow rule matched) on the
/// service's `not_allowed`, or nowhere ([`DROP_MEMO_NO_RULE`]).
#[inline(always)]
pub fn count_rule_drop(service: u32, counter: u32) {
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

/// Remembers that a rule of `service` refused `src` on `vip`:`vport` (see
/// [`remembered_syn_drop`]).
#[inline(always)]
fn remember_drop(service: u32, to: (u32, u16), src: u32, why: Reason, counter: u32) {
    let (vip, vport) = to;
    if let Some(slot) = EDGE_DROP_MEMO.get_ptr_mut(drop_memo_slot(vip, vport, src)) {
        let memo = DropMemo {
            service,
            addr: src,
            vip,
            vport,
            _pad16: 0,
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
    let to = (pkt.flow.dst_addr, pkt.flow.dst_port);
    match verdict(service, to, pkt.flow.src_addr, syn as u32) {
        ADMITTED => None,
        DENIED => Some(Reason::DropEdgeDenied),
        NOT_ALLOWED => Some(Reason::DropEdgeNotAllowed),
        _ => Some(Reason::DropRateLimited),
    }
}

/// The source rules' verdict on a UDP datagram from `src` (wire order) without a flow
/// entry to service `service`: `None` lets it be placed, a reason drops it (counted on
/// the rule, as a TCP packet's). Nothing is remembered: the drop memo has no protocol,
/// and a TCP service on the same VIP and port must not inherit a UDP service's refusal.
#[inline(always)]
pub fn admit_datagram(service: u32, src: u32) -> Option<Reason> {
    let settings = EDGE_SERVICES.get(service).copied()?;
    match by_rules(service, src, &settings) {
        Ok(_) => None,
        Err((_, why, _)) => Some(why),
    }
}

const ADMITTED: u32 = 0;
const DENIED: u32 = 1;
const NOT_ALLOWED: u32 = 2;
const RATE_LIMITED: u32 = 3;

/// The edge verdict on a packet from `src` (wire order) without a flow entry to service
/// `service` on `to` (its VIP and port), `syn` (1) if it opens a connection. The most specific rule matching the
/// source decides (counted on that rule); with an allow list and no match it is refused;
/// a SYN then takes a token from its source's bucket.
#[inline(always)]
fn verdict(service: u32, to: (u32, u16), src: u32, syn: u32) -> u32 {
    let Some(settings) = EDGE_SERVICES.get(service).copied() else {
        return ADMITTED;
    };
    // The rule that admitted the source, for a rate limit's block to remember.
    let admitted_by = match by_rules(service, src, &settings) {
        Ok(admitted_by) => admitted_by,
        Err((verdict, why, counter)) => {
            remember_drop(service, to, src, why, counter);
            return verdict;
        }
    };
    if syn != 0 && settings.flags & EDGE_S_RATE_LIMIT != 0 {
        let (took, blocked) = take(service, src, &settings);
        if took == Take::Drop {
            count_rate_limited(service);
            if blocked {
                let why = Reason::DropRateLimited;
                remember_drop(service, to, src, why, admitted_by);
            }
            return RATE_LIMITED;
        }
    }
    ADMITTED
}

/// The source rules' part of [`verdict`], counted on the rule that decided: `Ok` with
/// the counter slot of the rule that admitted `src` (or [`DROP_MEMO_NO_RULE`]), or
/// `Err` with the verdict, its reason and the counter slot to remember.
#[inline(always)]
fn by_rules(service: u32, src: u32, settings: &EdgeService) -> Result<u32, (u32, Reason, u32)> {
    if settings.flags & EDGE_S_RULES == 0 {
        return Ok(DROP_MEMO_NO_RULE);
    }
    let key = Key::new(EDGE_LOOKUP_LEN, EdgeAddr::v4(service, src));
    match EDGE_RULES.get(&key).copied() {
        Some(rule) => {
            count_rule_drop(service, rule.counter);
            if rule.verdict == EDGE_DENY {
                return Err((DENIED, Reason::DropEdgeDenied, rule.counter));
            }
            Ok(rule.counter)
        }
        None if settings.flags & EDGE_S_ALLOW_LIST != 0 => {
            count_rule_drop(service, DROP_MEMO_NOT_ALLOWED);
            let why = Reason::DropEdgeNotAllowed;
            Err((NOT_ALLOWED, why, DROP_MEMO_NOT_ALLOWED))
        }
        None => Ok(DROP_MEMO_NO_RULE),
    }
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
    take_from(&RATE_BUCKETS, RateKey4 { service, addr: src }, settings)
}

/// [`take`] from the bucket at `key` in `buckets` (IPv4's or IPv6's map).
#[inline(always)]
pub fn take_from<K>(
    buckets: &LruHashMap<K, TokenBucket>,
    key: K,
    settings: &EdgeService,
) -> (Take, bool) {
    let now = bucket_clock_secs();
    match buckets.get_ptr_mut(&key) {
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
            let _ = buckets.insert(&key, bucket, BPF_ANY as u64);
            (took, false)
        }
    }
}
