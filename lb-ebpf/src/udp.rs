//! UDP services (NAT mode), in `lb_udp`: a program of its own, tail-called by `lb_xdp`
//! for every UDP datagram to a maybe-VIP address or from a maybe-backend, since
//! `lb_xdp`'s frame has no room for a second client path. Its stages:
//!
//! | stage | file |
//! | --- | --- |
//! | parse (Ethernet, IPv4, UDP) | `datagram.rs` |
//! | client -> VIP: follow or record the flow, rewrite, forward | `udp_to_backend.rs` |
//! | backend -> client: by the return entry | `udp_to_client.rs` |
//! | ICMP errors from a backend about a NAT flow (TCP or UDP) | `icmp_nat.rs` |
//!
//! A UDP service's flows live in the TCP flows' tables (`flow_table`), told
//! apart by the key's protocol, so an IPv4 flow costs the same memory whatever it
//! carries. A datagram to a VIP address that no UDP service listens on goes on as any
//! other unlisted protocol (`edge::unlisted`).
use aya_ebpf::{macros::xdp, programs::XdpContext};
use lb_common::{
    counters::Reason,
    encap::{PROTO_ICMP, PROTO_UDP},
    filter::FILTER_VIPS,
    limits::PROGRAMS_SLOT_UDP,
};

use crate::{
    count,
    datagram::{self, Datagram},
    edge, flow_table, icmp_nat, lookup,
    maps::PROGRAMS,
    udp_to_backend, udp_to_client,
};

/// `lb_xdp`'s action word for a UDP datagram, handed to `lb_udp` ([`hand_over`]): in
/// the hand-over range of `edge::is_hand_over`, apart from its words and `dsr`'s (whose
/// low half is at least 0xff00).
pub const HAND_OVER: u32 = 0xffff_fe00;

/// Offset of the IPv4 protocol byte in the frame.
const PROTO_AT: usize = 14 + 9;

/// Whether `lb_udp` takes the frame, which `route`'s parse found to be plain IPv4 but not
/// TCP: UDP, or ICMP not to a maybe-VIP address (so from a maybe-backend: an error about
/// a client's packet, see `icmp_nat`). One byte read again rather than kept, so that
/// `route`'s frame does not grow. ICMP to a VIP goes to `lb_dsr` as any other protocol
/// no service listens on (`icmp_to_backend`).
#[inline(always)]
pub fn carried(ctx: &XdpContext, to_vip: bool) -> bool {
    match protocol(ctx) {
        Some(PROTO_UDP) => true,
        Some(PROTO_ICMP) => !to_vip,
        _ => false,
    }
}

/// The IPv4 protocol byte of the frame, if the frame reaches it.
#[inline(always)]
fn protocol(ctx: &XdpContext) -> Option<u8> {
    let at = ctx.data() + PROTO_AT;
    // SAFETY: the byte is inside the frame (checked first).
    (at < ctx.data_end()).then(|| unsafe { *(at as *const u8) })
}

/// Tail-calls `lb_udp`. If the call fails (no `lb_udp` in the program array, as in a
/// data path an older `lbd` filled), the datagram is passed as before UDP services.
#[inline(always)]
pub fn hand_over(ctx: &XdpContext) -> u32 {
    unsafe { PROGRAMS.tail_call(ctx, PROGRAMS_SLOT_UDP) };
    count::pass(Reason::PassNotTcp)
}

/// A UDP datagram tail-called by `lb_xdp`: to a UDP service's VIP:port, placed and
/// rewritten towards its backend; from a backend, with a return entry, rewritten back
/// towards its client; anything else passed (or, to a VIP address, treated as an
/// unlisted port). Also an ICMP error from a backend about a client's packet, translated
/// back towards the client (`icmp_nat`).
#[xdp]
#[inline(always)]
pub fn lb_udp(ctx: XdpContext) -> u32 {
    if protocol(&ctx) != Some(PROTO_UDP) {
        return icmp_nat::from_backend(&ctx);
    }
    let dg = match datagram::parse(&ctx) {
        Ok(dg) => dg,
        Err(reason) => return count::pass(reason),
    };
    let to_vip = lookup::may_be(FILTER_VIPS, dg.flow.dst_addr);
    if to_vip {
        if let Some(action) = udp_to_backend::handle(&ctx, &dg) {
            return action;
        }
    }
    if let Some(entry) = flow_table::find_return(&dg.flow) {
        return udp_to_client::handle(&ctx, &dg, entry);
    }
    not_ours(&dg, to_vip)
}

/// A datagram no UDP service or flow claims.
#[inline(always)]
fn not_ours(dg: &Datagram, to_vip: bool) -> u32 {
    if to_vip && edge::drops_unlisted() {
        return edge::unlisted(dg.flow.dst_addr, PROTO_UDP, Reason::PassNotTcp);
    }
    count::pass(Reason::PassNotTcp)
}
