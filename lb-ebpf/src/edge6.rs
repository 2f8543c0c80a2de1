//! Edge protection over IPv6 (see `edge` for IPv4, docs/edge-protection.md): the source
//! rules and the SYN rate limit (per source prefix, `lb_common::edge::RateKey6`) of a
//! protected IPv6 service's packets without a flow entry, and IPv6 VIP addresses'
//! unlisted ports ([`unlisted`]). They run in
//! `lb_edge6`, a program of its own that `lb_v6` tail-calls before placement ([`check`]),
//! as `lb_v6`'s frame is shared by every IPv6 stage. A packet `lb_edge6` admits is handed
//! back to `lb_v6`, which places it: `lb_edge6` leaves the packet's tuple in the per-CPU
//! `EDGE6_ADMITTED`, and `lb_v6`'s check takes it there instead of handing the packet over
//! again. A tail call runs on the CPU that made it and nothing else runs there in between,
//! so only the packet itself finds its tuple; the tuple is compared whole, so a mark that
//! a vanished service left behind admits nothing else. Established flows never reach it.
use aya_ebpf::{macros::xdp, maps::lpm_trie::Key, programs::XdpContext};
use lb_common::{
    counters::Reason,
    edge::{
        EdgeAddr, RateKey6, Take, DROP_MEMO_NOT_ALLOWED, EDGE_DENY, EDGE_LOOKUP_LEN6,
        EDGE_S_ALLOW_LIST, EDGE_S_RATE_LIMIT, EDGE_S_RULES,
    },
    filter::{FILTER_BACKENDS, FILTER_VIPS},
    ipv6::{fold, Addr6, FlowKey6, FAMILY_IPV6, PROTO_ICMPV6},
    limits::{PROGRAMS_SLOT_EDGE6, PROGRAMS_SLOT_V6},
    net::{PROTO_TCP, TCP_ACK, TCP_SYN},
    service::SERVICE_F_EDGE,
    service_index::PackedMeta,
};

use crate::{
    count,
    edge::{self, count_rate_limited, count_rule_drop, take_from},
    flow6, lookup,
    maps::{EDGE6_ADMITTED, EDGE_RULES, EDGE_SERVICES, PROGRAMS, RATE_BUCKETS6, VIP_ADDRS6},
    parse6::{self, Packet6},
    trace6,
    v6::addr_at,
    wire,
};

/// `lb_v6`'s edge check of a packet without a live flow entry to `service`, before it is
/// placed: `None` places it (an unprotected service, or a packet `lb_edge6` admitted);
/// otherwise it is handed to `lb_edge6`, and dropped if that fails (no `lb_edge6` in the
/// program array: a protected service takes no unchecked connection).
#[inline(always)]
pub fn check(ctx: &XdpContext, pkt: &Packet6, service: PackedMeta) -> Option<u32> {
    if service.flags() & SERVICE_F_EDGE == 0 || admitted(&pkt.flow) {
        return None;
    }
    unsafe { PROGRAMS.tail_call(ctx, PROGRAMS_SLOT_EDGE6) };
    Some(count::drop(Reason::DropEdgeDenied))
}

/// Whether `lb_edge6` admitted this packet (its tuple is the mark), taking the mark.
#[inline(always)]
fn admitted(flow: &FlowKey6) -> bool {
    let Some(mark) = EDGE6_ADMITTED.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: a per-CPU slot, written only by this CPU's `lb_edge6`.
    unsafe {
        if (*mark).family != FAMILY_IPV6 {
            return false;
        }
        let same = *mark == *flow;
        (*mark).family = 0;
        same
    }
}

/// A packet `lb_v6` handed over: of a protected service ([`check`]), checked against its
/// service's rules and limit, then dropped or handed back to `lb_v6` to be placed; or to
/// a maybe-VIP address that no service takes ([`unlisted`]), dropped if that address is a
/// VIP. Parsed again, as a tail call keeps only the context.
#[xdp]
#[inline(always)]
pub fn lb_edge6(ctx: XdpContext) -> u32 {
    let pkt = match parse6::parse(&ctx) {
        Ok(pkt) => pkt,
        Err(reason) => return unlisted_verdict(&ctx, reason, false),
    };
    let tcp = pkt.flow.proto == PROTO_TCP;
    // A packet of a service (TCP or UDP) was handed over by `check`; anything else came
    // from `unlisted`, which only a packet no service takes reaches.
    let Some(service) = flow6::service6(&pkt.flow) else {
        let why = if tcp {
            Reason::PassNoService
        } else {
            Reason::PassNotTcp
        };
        return unlisted_verdict(&ctx, why, tcp);
    };
    // A UDP service takes no rate limit (validation), and its datagram is no SYN.
    let syn = tcp && pkt.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
    if let Some(why) = verdict(service.id(), &pkt.flow.src_addr, syn) {
        return trace6::refused(&pkt, service.id(), count::drop(why), why);
    }
    let Some(mark) = EDGE6_ADMITTED.get_ptr_mut(0) else {
        return count::drop(Reason::DropEdgeDenied);
    };
    // SAFETY: this CPU's slot (see the module documentation).
    unsafe { *mark = pkt.flow };
    unsafe { PROGRAMS.tail_call(&ctx, PROGRAMS_SLOT_V6) };
    // Only if `lb_v6` is missing from the program array.
    unsafe { (*mark).family = 0 };
    count::drop(Reason::DropEdgeDenied)
}

/// The edge verdict on source `src` (wire order) of a packet to service `service`, as
/// IPv4's (`edge::verdict`): the most specific rule matching the source decides (counted
/// on that rule); with an allow list and no match it is refused; a SYN (`syn`) then takes
/// a token from its source prefix's bucket. `None`: admitted.
#[inline(always)]
fn verdict(service: u32, src: &Addr6, syn: bool) -> Option<Reason> {
    let settings = EDGE_SERVICES.get(service).copied()?;
    if settings.flags & EDGE_S_RULES != 0 {
        let key = Key::new(EDGE_LOOKUP_LEN6, EdgeAddr::v6(service, *src));
        match EDGE_RULES.get(&key).copied() {
            Some(rule) => {
                count_rule_drop(service, rule.counter);
                if rule.verdict == EDGE_DENY {
                    return Some(Reason::DropEdgeDenied);
                }
            }
            None if settings.flags & EDGE_S_ALLOW_LIST != 0 => {
                count_rule_drop(service, DROP_MEMO_NOT_ALLOWED);
                return Some(Reason::DropEdgeNotAllowed);
            }
            None => {}
        }
    }
    if syn && settings.flags & EDGE_S_RATE_LIMIT != 0 {
        let key = RateKey6::of(service, src, settings.prefix6_len);
        if take_from(&RATE_BUCKETS6, key, &settings).0 == Take::Drop {
            count_rate_limited(service);
            return Some(Reason::DropRateLimited);
        }
    }
    None
}

/// Where the addresses start in the frame.
const SRC_AT: usize = 14 + 8;
const DST_AT: usize = 14 + 24;

/// `lb_v6`'s pass of a packet it does not place, `why`: with `unlisted_ports: drop`, one
/// to a maybe-VIP address is handed to `lb_edge6` ([`unlisted_verdict`]) if it is
/// something a VIP's unlisted port may be sent (TCP or UDP to no service, another
/// protocol but ICMPv6, an extension header, a fragment); passed and counted otherwise,
/// or if the hand-over fails. Reads only the destination, as a fold (no array on
/// `lb_v6`'s stack).
#[inline(always)]
pub fn unlisted(ctx: &XdpContext, why: Reason) -> u32 {
    if !may_drop(why) || !edge::drops_unlisted() {
        return count::pass(why);
    }
    let start = ctx.data();
    if start + DST_AT + 16 > ctx.data_end() {
        return count::pass(why);
    }
    // SAFETY: the destination address is inside the frame (checked above).
    let folded = unsafe {
        let at = (start + DST_AT) as *const u8;
        wire::get32(at) ^ wire::get32(at.add(4)) ^ wire::get32(at.add(8)) ^ wire::get32(at.add(12))
    };
    if lookup::may_be(FILTER_VIPS, folded) {
        unsafe { PROGRAMS.tail_call(ctx, PROGRAMS_SLOT_EDGE6) };
    }
    count::pass(why)
}

/// Whether a packet `lb_v6` passes as `why` may be one to a VIP's unlisted port (as IPv4's
/// `unlisted_ports` takes TCP to no service, other protocols, IP options and fragments).
#[inline(always)]
fn may_drop(why: Reason) -> bool {
    matches!(
        why,
        Reason::PassNoService
            | Reason::PassNotTcp
            | Reason::PassIpv6Extension
            | Reason::PassFragment
    )
}

/// Whether the frame, which `parse6` found to be neither TCP nor UDP, is ICMPv6: neighbour
/// discovery, echo and errors stay the kernel's (or `icmp6_nat`'s) whatever
/// `unlisted_ports` says.
#[inline(always)]
pub fn is_icmp6(ctx: &XdpContext) -> bool {
    let start = ctx.data();
    if start + 14 + 7 > ctx.data_end() {
        return false;
    }
    // SAFETY: the next-header byte is inside the frame (checked above).
    unsafe { *((start + 14 + 6) as *const u8) == PROTO_ICMPV6 }
}

/// `lb_edge6`'s verdict on a packet [`unlisted`] handed over (passed as `why` if kept):
/// dropped if its destination is a VIP address. As over IPv4, a TCP packet from a maybe-
/// backend address is passed: a backend's own connections are the kernel's.
#[inline(always)]
fn unlisted_verdict(ctx: &XdpContext, why: Reason, tcp: bool) -> u32 {
    if !may_drop(why) {
        return count::pass(why);
    }
    let start = ctx.data();
    if start + DST_AT + 16 > ctx.data_end() {
        return count::pass(why);
    }
    // SAFETY: both addresses are inside the frame (checked above).
    let (src, dst) = unsafe { (addr_at(start + SRC_AT), addr_at(start + DST_AT)) };
    if tcp && lookup::may_be(FILTER_BACKENDS, fold(&src)) {
        return count::pass(why);
    }
    if unsafe { VIP_ADDRS6.get(dst) }.is_none() {
        return count::pass(why);
    }
    count::drop(Reason::DropUnlistedPort)
}
