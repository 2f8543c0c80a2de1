//! A backend's reply that `route` leaves to a path of its own (`lb_reply` at XDP, where
//! it is a program of its own for the stack; inline in `lb_tc`): a SYN-ACK, or any reply
//! that found no return entry.
use lb_common::{
    counters::Reason,
    net::{TCP_RST, TCP_SYN},
};

use crate::{
    count, frame::Frame, lookup, packet::Packet, syn_cache, syn_proxy, to_client, to_client_miss,
    to_client_reverse,
};

/// The reply's action. `to_proxy` hands a proxied flow's SYN-ACK to the SYN proxy (a
/// tail call that does not return); if it returns, the SYN-ACK is dropped.
#[inline(always)]
pub fn handle(ctx: &impl Frame, pkt: &Packet, to_proxy: impl FnOnce()) -> u32 {
    if pkt.tcp_flags & (TCP_SYN | TCP_RST) == 0 {
        return to_client_miss::handle(ctx, pkt).unwrap_or_else(|| not_ours(ctx, pkt));
    }
    let nat = lookup::return_flow_of(pkt);
    if let Some(entry) = nat {
        if syn_proxy::is_proxied(&entry) && to_client::is_syn_ack(pkt) {
            // The answer to the proxy's SYN: the client has had its SYN-ACK already.
            to_proxy();
            return count::drop(Reason::DropSynCookieInvalid);
        }
    }
    if let Some(set) = syn_cache::set(pkt.flow.dst_addr, pkt.flow.dst_port) {
        if let Some(handshake) = set.answered_by(&pkt.flow, false) {
            let Some(nat) = nat else {
                return to_client::handle_handshake_answer(ctx, pkt, &handshake);
            };
            // A SYN-ACK of a client reusing the tuple of a recorded flow, whose new SYN
            // the table sent to the same backend: translated by the old flow's return
            // entry, while the client's ACK still needs the proof that it saw it (see
            // `to_backend::opened_by_a_syn`).
            handshake.note_syn_ack(pkt.seq());
            return to_client::handle(ctx, pkt, nat);
        }
    }
    match nat {
        Some(nat) => to_client::handle(ctx, pkt, nat),
        None => not_ours(ctx, pkt),
    }
}

/// A backend's reply that no state of this node claims: the reverse map's, or passed.
#[inline(always)]
fn not_ours(ctx: &impl Frame, pkt: &Packet) -> u32 {
    to_client_reverse::handle(ctx, pkt).unwrap_or_else(|| count::pass(Reason::PassNoService))
}
