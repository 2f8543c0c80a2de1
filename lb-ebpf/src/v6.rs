//! IPv6 (NAT66: the client's address kept), in `lb_v6`: a program of its own, tail-called
//! by `lb_xdp` for every IPv6 frame to a maybe-VIP address or from a maybe-backend (the
//! prefilter's bit of `ipv6::fold`), since `lb_xdp`'s frame has no room for a second
//! address family. Its stages:
//!
//! | stage | file |
//! | --- | --- |
//! | parse (Ethernet, IPv6, TCP or UDP; which headers are followed) | `parse6.rs` |
//! | the IPv6 flow entries, services and backends | `flow6.rs` |
//! | select a backend (the IPv4 policies over the IPv6 hash) | `select6.rs` |
//! | client -> VIP, TCP | `to_backend6.rs` |
//! | SYN cache: a hash-placed service's handshake (`lb_v6_syn`) | `v6_syn.rs`, `syn_cache6.rs` |
//! | backend -> client, TCP | `to_client6.rs` |
//! | both directions, UDP | `udp6.rs` |
//! | ICMPv6 errors about a flow, translated | `icmp6_nat.rs` |
//! | rewrite (NAT66, checksums) | `rewrite6.rs` |
//! | forward (FIB, hop limit, MACs) | `forward6.rs` |
//! | direct server return (tail-called `lb_dsr6`) | `dsr6.rs` |
//!
//! IPv6 flows live in maps of their own (`FLOWS6`, `RETURN_FLOWS6`); the flow value,
//! its state word and the active counts are IPv4's (`flow.rs`), as are the counters.
//! A hash-placed service's handshake goes through the SYN cache, as over IPv4, in
//! `lb_v6_syn` (`v6_syn.rs`, `syn_cache6.rs`). What IPv4 has and IPv6 has not yet (a
//! flow recorded by a backend's reply, direct server return, edge protection, the packet
//! trace): docs/ipv6.md, "Data path".
use aya_ebpf::{macros::xdp, programs::XdpContext};
use lb_common::{
    counters::Reason,
    encap::PROTO_UDP,
    filter::{FILTER_BACKENDS, FILTER_VIPS},
    ipv6::{fold, Addr6, ETH_P_IPV6},
    limits::PROGRAMS_SLOT_V6,
};

use crate::{
    count, edge6, icmp6_nat, lookup,
    maps::{PROGRAMS, RETURN_FLOWS6},
    parse6, to_backend6, to_client6, udp6, v6_syn, wire,
};

/// `lb_xdp`'s action word for an IPv6 frame, handed to `lb_v6` ([`hand_over`]): in the
/// hand-over range of `edge::is_hand_over`, apart from `udp`'s, `dsr`'s and `edge`'s.
pub const HAND_OVER: u32 = 0xffff_fd00;

const ETH_LEN: usize = 14;
/// Where the source and destination addresses start in the frame.
const SRC_AT: usize = ETH_LEN + 8;
const DST_AT: usize = ETH_LEN + 24;

/// `lb_xdp`'s look at a frame that is not IPv4: [`HAND_OVER`] for an IPv6 frame that the
/// prefilter says may be to a VIP or from a backend; anything else passed and counted
/// here (`pass_not_ipv4` for other EtherTypes, `pass_no_service` for IPv6 that is
/// neither, as for IPv4). Reads only the EtherType, the version and the two addresses.
#[inline(always)]
pub fn screen(ctx: &XdpContext) -> u32 {
    let start = ctx.data();
    if start + DST_AT + 16 > ctx.data_end() {
        return count::pass(if start + ETH_LEN > ctx.data_end() {
            Reason::PassShortEthernet
        } else if is_ipv6(start) {
            Reason::PassMalformedIpv6
        } else {
            Reason::PassNotIpv4
        });
    }
    if !is_ipv6(start) {
        return count::pass(Reason::PassNotIpv4);
    }
    // SAFETY: the fixed IPv6 header is inside the frame (checked above).
    let (version, src, dst) = unsafe {
        (
            *((start + ETH_LEN) as *const u8) >> 4,
            addr_at(start + SRC_AT),
            addr_at(start + DST_AT),
        )
    };
    if version != 6 {
        return count::pass(Reason::PassMalformedIpv6);
    }
    if lookup::may_be(FILTER_VIPS, fold(&dst)) || lookup::may_be(FILTER_BACKENDS, fold(&src)) {
        return HAND_OVER;
    }
    count::pass(Reason::PassNoService)
}

/// Whether the frame at `start`, whose Ethernet header is inside it, is IPv6.
#[inline(always)]
fn is_ipv6(start: usize) -> bool {
    // SAFETY: callers checked the Ethernet header is inside the frame.
    unsafe { wire::get16((start + 12) as *const u8) == ETH_P_IPV6.to_be() }
}

/// The address at `at` (inside the frame, even).
#[inline(always)]
pub unsafe fn addr_at(at: usize) -> Addr6 {
    let p = at as *const u8;
    [
        wire::get32(p),
        wire::get32(p.add(4)),
        wire::get32(p.add(8)),
        wire::get32(p.add(12)),
    ]
}

/// Tail-calls `lb_v6`. If the call fails (no `lb_v6` in the program array, as in a data
/// path an older `lbd` filled), the frame is passed as before IPv6 services.
#[inline(always)]
pub fn hand_over(ctx: &XdpContext) -> u32 {
    unsafe { PROGRAMS.tail_call(ctx, PROGRAMS_SLOT_V6) };
    count::pass(Reason::PassNotIpv4)
}

/// An IPv6 frame tail-called by `lb_xdp`: to an IPv6 service's VIP:port, placed and
/// rewritten towards its backend; from a backend, with a return entry, rewritten back
/// towards its client; anything else passed untouched, counted.
#[xdp]
#[inline(always)]
pub fn lb_v6(ctx: XdpContext) -> u32 {
    let pkt = match parse6::parse(&ctx) {
        Ok(pkt) => pkt,
        // Neither TCP nor UDP: an ICMPv6 error about a flow is translated.
        Err(Reason::PassNotTcp) if edge6::is_icmp6(&ctx) => return icmp6_nat::handle(&ctx),
        Err(reason) => return edge6::unlisted(&ctx, reason),
    };
    let udp = pkt.flow.proto == PROTO_UDP;
    if lookup::may_be(FILTER_VIPS, fold(&pkt.flow.dst_addr)) {
        let placed = if udp {
            udp6::to_backend(&ctx, &pkt)
        } else {
            to_backend6::handle::<false>(&ctx, &pkt)
        };
        if let Some(action) = placed {
            return action;
        }
    }
    if lookup::may_be(FILTER_BACKENDS, fold(&pkt.flow.src_addr)) {
        let entry = RETURN_FLOWS6.get_ptr_mut(pkt.flow);
        if !udp && v6_syn::hands_over_reply(pkt.tcp_flags, entry.is_some()) {
            // Its SYN may have left only a SYN-cache slot, or it may be a tier's reply
            // (returns only if `lb_v6_syn` is missing).
            v6_syn::hand_over(&ctx, false);
        }
        if let Some(entry) = entry {
            return if udp {
                udp6::to_client(&ctx, &pkt, entry)
            } else {
                to_client6::handle(&ctx, &pkt, entry)
            };
        }
    }
    let why = if udp {
        Reason::PassNotTcp
    } else {
        Reason::PassNoService
    };
    edge6::unlisted(&ctx, why)
}
