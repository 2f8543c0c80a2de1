//! Edge protection over IPv6 (see `edge` for IPv4, docs/edge-protection.md): the source
//! rules and the SYN rate limit (per source prefix, `lb_common::edge::RateKey6`) of a
//! protected IPv6 service's packets without a flow entry. They run in
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
    ipv6::{Addr6, FlowKey6, FAMILY_IPV6},
    limits::{PROGRAMS_SLOT_EDGE6, PROGRAMS_SLOT_V6},
    net::{TCP_ACK, TCP_SYN},
    service::SERVICE_F_EDGE,
    service_index::PackedMeta,
};

use crate::{
    count,
    edge::{count_rate_limited, count_rule_drop, take_from},
    flow6,
    maps::{EDGE6_ADMITTED, EDGE_RULES, EDGE_SERVICES, PROGRAMS, RATE_BUCKETS6},
    parse6::{self, Packet6},
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

/// A packet `lb_v6` handed over ([`check`]): checked against its service's rules, then
/// dropped or handed back to `lb_v6` to be placed. Parsed again, as a tail call keeps only
/// the context.
#[xdp]
pub fn lb_edge6(ctx: XdpContext) -> u32 {
    let pkt = match parse6::parse(&ctx) {
        Ok(pkt) => pkt,
        Err(reason) => return count::pass(reason),
    };
    let Some(service) = flow6::service6(&pkt.flow) else {
        return count::pass(Reason::PassNoService);
    };
    let syn = pkt.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
    if let Some(why) = verdict(service.id(), &pkt.flow.src_addr, syn) {
        return count::drop(why);
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
