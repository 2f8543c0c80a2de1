//! The XDP data path. One program per attached NIC handles both directions of NAT mode:
//!
//! parse -> lookup (service / flow / return flow) -> select -> rewrite -> forward -> count
//!
//! Every stage is a file; this one only wires the entry point.
#![no_std]
#![no_main]
#![expect(
    internal_features,
    reason = "core_intrinsics: atomic read-modify-write on map values (see flow_state.rs)"
)]
#![feature(core_intrinsics)]

mod count;
mod flow_state;
mod forward;
mod ingress;
mod maps;
mod packet;
mod parse;
mod reply_miss;
mod ret;
mod return_entry;
mod rewrite;
mod select;
mod syn_cache;
mod trace;
mod wire;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use lb_common::{
    counters::Reason,
    filter::{FILTER_BACKENDS, FILTER_VIPS},
    limits::PROGRAMS_SLOT_REPLY,
    net::{TCP_RST, TCP_SYN},
};

#[xdp]
pub fn lb_xdp(ctx: XdpContext) -> u32 {
    let at = match parse::addresses(&ctx) {
        Ok(at) => at,
        Err(reason) => return count::pass(reason),
    };
    // Most of what a gateway forwards is neither to a VIP nor from a backend: two bitmap
    // reads send it on before the rest of the packet is even parsed.
    let to_vip = maps::may_be(FILTER_VIPS, at.dst);
    let from_backend = maps::may_be(FILTER_BACKENDS, at.src);
    if !to_vip && !from_backend {
        return count::pass(Reason::PassNoService);
    }
    let pkt = match parse::tcp(&ctx, at) {
        Ok(pkt) => pkt,
        Err(reason) => return count::pass(reason),
    };
    if to_vip {
        if let Some(action) = ingress::handle(&ctx, &pkt) {
            return action;
        }
    }
    if from_backend {
        if let Some(nat) = maps::return_flow_of(&pkt) {
            return ret::handle(&ctx, &pkt, nat);
        }
        // Without a return entry, a handshake's answer (SYN-ACK, or RST refusing it)
        // belongs to a SYN in the SYN cache; any other reply may answer a client packet
        // forwarded without a flow entry (see `lb_reply`), or be someone else's.
        if pkt.tcp_flags & (TCP_SYN | TCP_RST) != 0 {
            let set = syn_cache::set(pkt.flow.dst_addr, pkt.flow.dst_port);
            if let Some(handshake) = set.and_then(|s| s.answered_by(&pkt.flow, false)) {
                return ret::handle_handshake_answer(&ctx, &pkt, &handshake);
            }
        } else {
            // That path runs as a program of its own: its stack would not fit in this
            // one's 512 bytes (see `lb_reply`).
            unsafe { maps::PROGRAMS.tail_call(&ctx, PROGRAMS_SLOT_REPLY) };
        }
    }
    count::pass(Reason::PassNoService)
}

/// A backend's reply (neither SYN nor RST) that found no return entry, tail-called by
/// `lb_xdp`: translated back and its flow recorded if it answers a client packet that was
/// forwarded without a flow entry (see `reply_miss`), passed untouched otherwise. The frame is
/// parsed again, as a tail call keeps only the context; nothing of `lb_xdp`'s stack
/// survives the call, which is what gives this path a stack of its own.
#[xdp]
pub fn lb_reply(ctx: XdpContext) -> u32 {
    let pkt = match parse::addresses(&ctx).and_then(|at| parse::tcp(&ctx, at)) {
        Ok(pkt) => pkt,
        Err(reason) => return count::pass(reason),
    };
    reply_miss::handle(&ctx, &pkt).unwrap_or_else(|| count::pass(Reason::PassNoService))
}

/// Passes every frame. It is the floor that benchmarks subtract, and what the veth peers
/// of a namespace lab run: the kernel's veth driver flushes XDP_TX frames towards its
/// peer only when the peer runs an XDP program (`veth_xdp_flush()`), so without it a
/// one-NIC lab's XDP_TX frames wait in a ring until unrelated traffic flushes them.
#[xdp]
pub fn lb_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any reachable panic path; this is never linked in.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
