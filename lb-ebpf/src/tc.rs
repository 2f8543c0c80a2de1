//! The data path at tc ingress (`lb_tc`), for NICs where XDP costs more than it saves:
//! veth and other virtual NICs, whose XDP copies every frame into a page of its own and
//! rules out the sender's segmentation and checksum offloads (docs/performance.md). The
//! program sees the kernel's skb as it is, GSO packets and partial checksums included,
//! and runs the same stages as `lb_xdp` for IPv4 TCP in NAT mode: parse, lookups,
//! selection, flow table, rewrite, forward (`bpf_redirect`), count.
//!
//! What differs from XDP is the TCP checksum. A packet whose checksum the sender left to
//! offload (`CHECKSUM_PARTIAL`) carries only the pseudo-header's sum, which a rewrite must
//! move the other way, and a port change must leave alone; the skb's own checksum
//! (`CHECKSUM_COMPLETE`) must follow the pseudo-header too. The program cannot see which
//! the skb is, so the shared rewrite patches the field as for a whole checksum, and
//! [`finish`] puts the field back and lets the kernel's helper patch it for what the skb
//! is.
//!
//! What `lb_xdp` hands to programs of its own (UDP, IPv6, direct server return, edge
//! protection, the SYN proxy) has no tc path: `lbd` refuses a config that needs one with
//! a tc interface, and such a packet that reaches `lb_tc` anyway is dropped and counted.
use aya_ebpf::{
    bindings::{xdp_action, BPF_F_PSEUDO_HDR, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT},
    macros::classifier,
    programs::TcContext,
};
use lb_common::{
    counters::Reason,
    filter::{FILTER_BACKENDS, FILTER_VIPS},
};

use crate::{count, dsr, edge, lookup, parse, reply, to_backend, to_client, wire};

/// Bytes from the start of the frame to the end of the TCP checksum of an option-less
/// IPv4 header: what `lb_tc` needs in the skb's linear part.
const HEADERS: usize = 14 + 20 + 18;
/// Where the IPv4 addresses, the TCP ports and the TCP checksum sit in such a frame.
const ADDRS_AT: usize = 14 + 12;
const PORTS_AT: usize = 14 + 20;
const CHECK_AT: usize = 14 + 20 + 16;

#[classifier]
pub fn lb_tc(ctx: TcContext) -> i32 {
    // A GSO or GRO skb may keep headers in its pages; direct access reaches only the
    // linear part.
    if ctx.data() + HEADERS > ctx.data_end() && ctx.len() as usize >= HEADERS {
        let _ = ctx.pull_data(HEADERS as u32);
    }
    let before = tuple(&ctx);
    let action = route(&ctx);
    finish(&ctx, before, action)
}

/// `lb_xdp`'s `route` for what the tc path carries.
#[inline(always)]
fn route(ctx: &TcContext) -> u32 {
    let at = match parse::addresses(ctx) {
        Ok(at) => at,
        Err(reason) => return count::pass(reason),
    };
    let to_vip = lookup::may_be(FILTER_VIPS, at.dst);
    let from_backend = lookup::may_be(FILTER_BACKENDS, at.src);
    if !to_vip && !from_backend {
        return count::pass(Reason::PassNoService);
    }
    let pkt = match parse::tcp(ctx, at) {
        Ok(pkt) => pkt,
        Err(reason) => return count::pass(reason),
    };
    if to_vip {
        if let Some(action) = to_backend::handle::<false>(ctx, &pkt) {
            return action;
        }
    }
    if from_backend {
        if let Some(nat) = lookup::return_flow_of(&pkt) {
            if !to_client::is_syn_ack(&pkt) {
                return to_client::handle(ctx, &pkt, nat);
            }
        }
        // No SYN proxy at tc: a proxied flow's SYN-ACK is dropped.
        return reply::handle(ctx, &pkt, || {});
    }
    count::pass(Reason::PassNoService)
}

/// The addresses, ports and checksum words of a frame with the headers of an IPv4 TCP
/// packet, whatever it carries: compared after `route` to see what it rewrote. Every
/// field is always written (no `Option`): the verifier refuses a copy of a value whose
/// bytes were never set, which an `Option`'s `None` leaves.
#[derive(Clone, Copy)]
struct Tuple {
    src: u32,
    dst: u32,
    ports: u32,
    check: u16,
    /// The frame is long enough to hold the words.
    read: bool,
}

#[inline(always)]
fn tuple(ctx: &TcContext) -> Tuple {
    let start = ctx.data();
    if start + HEADERS > ctx.data_end() {
        return Tuple {
            src: 0,
            dst: 0,
            ports: 0,
            check: 0,
            read: false,
        };
    }
    let at = start as *const u8;
    unsafe {
        Tuple {
            src: wire::get32(at.add(ADDRS_AT)),
            dst: wire::get32(at.add(ADDRS_AT + 4)),
            ports: wire::get32(at.add(PORTS_AT)),
            check: wire::get16(at.add(CHECK_AT)),
            read: true,
        }
    }
}

/// `route`'s XDP action as tc's, after patching the TCP checksum of a rewritten packet
/// for what the skb is (see the module doc). Only `route`'s rewrite changes addresses or
/// ports, and only of IPv4 TCP packets without options.
#[inline(always)]
fn finish(ctx: &TcContext, before: Tuple, action: u32) -> i32 {
    let tc_action = match action {
        xdp_action::XDP_PASS => TC_ACT_OK,
        xdp_action::XDP_TX | xdp_action::XDP_REDIRECT => TC_ACT_REDIRECT,
        xdp_action::XDP_DROP | xdp_action::XDP_ABORTED => return TC_ACT_SHOT,
        // A hand-over to a program `lb_xdp` has and `lb_tc` has not.
        dsr::HAND_OVER_DSR => {
            count::drop(Reason::DropDsrUnavailable);
            return TC_ACT_SHOT;
        }
        _ if edge::is_hand_over(action) => {
            count::drop(Reason::DropEdgeDenied);
            return TC_ACT_SHOT;
        }
        _ => return TC_ACT_SHOT,
    };
    let after = tuple(ctx);
    if before.read
        && after.read
        && (before.src, before.dst, before.ports) != (after.src, after.dst, after.ports)
    {
        patch_l4_checksum(ctx, &before, &after);
    }
    tc_action
}

/// The TCP checksum of `before`, patched by the kernel for each word that changed.
#[inline(always)]
fn patch_l4_checksum(ctx: &TcContext, before: &Tuple, after: &Tuple) {
    let start = ctx.data();
    if start + HEADERS > ctx.data_end() {
        return;
    }
    unsafe { wire::set16((start as *mut u8).add(CHECK_AT), before.check) };
    // Each helper call may move the frame: nothing below reads it directly.
    let pseudo = BPF_F_PSEUDO_HDR as u64 | 4;
    if before.src != after.src {
        let _ = ctx.l4_csum_replace(CHECK_AT, before.src as u64, after.src as u64, pseudo);
    }
    if before.dst != after.dst {
        let _ = ctx.l4_csum_replace(CHECK_AT, before.dst as u64, after.dst as u64, pseudo);
    }
    if before.ports != after.ports {
        let _ = ctx.l4_csum_replace(CHECK_AT, before.ports as u64, after.ports as u64, 4);
    }
}
