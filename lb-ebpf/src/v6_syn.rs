//! `lb_v6_syn`: IPv6 handshakes through the SYN cache (`syn_cache6.rs`), a program of its
//! own, tail-called by `lb_v6`, whose stack has no room for them (`lb_v6`'s deepest slot
//! is `r10-480` of 512 with the SYN cache in, see docs/syn-cache.md). `lb_v6` hands over:
//!
//! - a client's TCP segment to a hash-placed service (`maglev`, `source_hash`) without a
//!   live flow entry: a SYN, which leaves a slot; the ACK completing a handshake, which
//!   records the flow; any other packet, forwarded by the table;
//! - a client's segment whose entry may belong to an earlier connection on its tuple
//!   (closed, half-closed, idle, on a backend taking no new flows), which the SYN cache
//!   tells from the new connection's first packet;
//! - a backend's SYN, or a segment without a return entry: the answer to a handshake
//!   that left only a slot, or a reply of a `stateless_return` service that another node
//!   placed, translated by the IPv6 reverse map (`to_client_reverse6.rs`).
//!
//! The frame is parsed again (a tail call keeps only the context) and told apart as
//! `lb_v6` tells it: to a VIP:port that a flow entry or a service claims, else a reply.
use aya_ebpf::{macros::xdp, programs::XdpContext};
use lb_common::{
    counters::Reason,
    encap::PROTO_UDP,
    filter::{FILTER_BACKENDS, FILTER_VIPS},
    ipv6::fold,
    limits::PROGRAMS_SLOT_V6_SYN,
    net::{TCP_RST, TCP_SYN},
};

use crate::{
    count, edge6, lookup,
    maps::{PROGRAMS, RETURN_FLOWS6, V6_SYN_HAND_OVER},
    parse6, syn_cache6, to_backend6, to_client6, to_client_reverse6,
};

/// Tail-calls `lb_v6_syn`; returns only if the call failed (no program in the slot).
/// `no_entry`: `lb_v6` looked the segment's flow entry up (or needed none, a SYN) and
/// found none, so `lb_v6_syn` need not look again (a per-CPU word: a tail call runs on
/// the CPU that made it, so nothing else writes it in between).
#[inline(always)]
pub fn hand_over(ctx: &XdpContext, no_entry: bool) {
    if let Some(word) = V6_SYN_HAND_OVER.get_ptr_mut(0) {
        unsafe { *word = no_entry as u32 };
    }
    unsafe { PROGRAMS.tail_call(ctx, PROGRAMS_SLOT_V6_SYN) };
}

/// In `lb_v6_syn`: whether `lb_v6` found no flow entry for this segment.
#[inline(always)]
pub fn no_entry() -> bool {
    V6_SYN_HAND_OVER.get(0).is_some_and(|w| *w != 0)
}

/// Whether `lb_v6` hands a backend's TCP segment over: a SYN, which may answer a
/// handshake in the SYN cache, or any segment without a return entry (a RST refusing a
/// handshake, a reply the reverse map translates); a RST with a return entry is the
/// flow's.
#[inline(always)]
pub fn hands_over_reply(tcp_flags: u8, has_return_entry: bool) -> bool {
    tcp_flags & TCP_SYN != 0 || !has_return_entry
}

#[xdp]
#[inline(always)]
pub fn lb_v6_syn(ctx: XdpContext) -> u32 {
    let pkt = match parse6::parse(&ctx) {
        Ok(pkt) if pkt.flow.proto != PROTO_UDP => pkt,
        Ok(_) => return count::pass(Reason::PassNotTcp),
        Err(reason) => return count::pass(reason),
    };
    if lookup::may_be(FILTER_VIPS, fold(&pkt.flow.dst_addr)) {
        if let Some(action) = to_backend6::handle::<true>(&ctx, &pkt) {
            return action;
        }
    }
    if lookup::may_be(FILTER_BACKENDS, fold(&pkt.flow.src_addr)) {
        if pkt.tcp_flags & (TCP_SYN | TCP_RST) != 0 {
            if let Some(action) = syn_cache6::answer(&ctx, &pkt) {
                return action;
            }
        }
        if let Some(entry) = RETURN_FLOWS6.get_ptr_mut(pkt.flow) {
            return to_client6::handle(&ctx, &pkt, entry);
        }
        // No state of this node claims it: a `stateless_return` service's reply.
        if let Some(action) = to_client_reverse6::handle(&ctx, &pkt) {
            return action;
        }
    }
    // As `lb_v6` ends: to a VIP address on a port no service has, dropped if asked.
    edge6::unlisted(&ctx, Reason::PassNoService)
}
