//! Backend -> client: put the VIP back as source, forward, count. A reply finds its
//! flow's return entry, or, when it answers a SYN that recorded no flow, that SYN's slot
//! in the SYN cache.
use lb_common::{
    counters::Reason,
    net::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    syn_proxy::NAT_F_SYN_PROXY,
};

use crate::{
    count,
    flow::{self, Side},
    flow_table::{self, ReturnEntry},
    forward,
    frame::Frame,
    packet::Packet,
    rewrite,
    syn_cache::Handshake,
    syn_proxy,
};

#[inline(always)]
pub fn handle(ctx: &impl Frame, pkt: &Packet, entry: ReturnEntry) -> u32 {
    if !forward::ttl_allows(pkt) {
        return count::pass(Reason::PassTtlExpired);
    }
    let nat = entry.translation();
    if nat.flags & NAT_F_SYN_PROXY != 0
        && !syn_proxy::to_client(pkt.tcp, &pkt.flow, nat.vip, nat.vport)
    {
        return count::drop(Reason::DropSynCookieInvalid);
    }
    if pkt.tcp_flags & (TCP_FIN | TCP_RST) != 0 {
        let forward = entry
            .forward()
            .or_else(|| flow_table::find(&pkt.flow.forward_of_reply(nat.vip, nat.vport)));
        if let Some(flow) = forward {
            flow::observe(flow, pkt.tcp_flags, Side::Backend);
        }
    }
    rewrite::snat(pkt, nat.vip, nat.vport);
    count::to_client(nat.service, nat.backend, pkt.frame_len);
    count::answer_from_backend(nat.backend, pkt.tcp_flags);
    forward::forward(ctx, pkt, entry.route())
}

/// The SYN-ACK (or refusing RST) of a handshake whose SYN recorded no flow. Nothing is
/// recorded here either: the client's ACK records the flow, if it acknowledges this
/// SYN-ACK, whose proof is left in the SYN cache.
#[inline(always)]
pub fn handle_handshake_answer(ctx: &impl Frame, pkt: &Packet, handshake: &Handshake) -> u32 {
    if !forward::ttl_allows(pkt) {
        return count::pass(Reason::PassTtlExpired);
    }
    if is_syn_ack(pkt) {
        handshake.note_syn_ack(pkt.seq());
    }
    rewrite::snat(pkt, handshake.vip_addr, handshake.vip_port);
    count::to_client(handshake.service, handshake.backend, pkt.frame_len);
    count::answer_from_backend(handshake.backend, pkt.tcp_flags);
    // No entry to cache the route to the client in: the FIB decides.
    forward::forward(ctx, pkt, core::ptr::null_mut())
}

/// A SYN-ACK (not refusing anything with RST as well).
#[inline(always)]
pub fn is_syn_ack(pkt: &Packet) -> bool {
    pkt.tcp_flags & (TCP_SYN | TCP_ACK | TCP_RST) == TCP_SYN | TCP_ACK
}
