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
//! protection, the SYN proxy; ICMP errors) has no tc path: `lbd` refuses a config that
//! needs one with a tc interface, and such a packet that reaches `lb_tc` anyway is
//! dropped and counted (UDP, IPv6 and ICMP go to the kernel). A VLAN-tagged frame (the
//! kernel has moved its tag out of the frame by now) goes to the kernel too, as XDP
//! passes it.
//!
//! Whatever `lb_tc` does not take goes on with `TC_ACT_UNSPEC`: the next program at the
//! NIC's tc ingress (a CNI's, say) or the filters after them, then the kernel, see it as
//! if `lb_tc` were not there; `TC_ACT_OK` would end the chain there.
use aya_ebpf::{
    bindings::{xdp_action, BPF_F_PSEUDO_HDR, TC_ACT_REDIRECT, TC_ACT_SHOT, TC_ACT_UNSPEC},
    macros::classifier,
    programs::TcContext,
};
use lb_common::{
    counters::Reason,
    filter::{FILTER_BACKENDS, FILTER_VIPS},
};

use crate::{count, dsr, edge, flow_table, lookup, parse, reply, to_backend, to_client, wire};

/// Ethernet, an option-less IPv4 header and a whole TCP header: what `lb_tc` needs in
/// the skb's linear part.
const HEADERS: usize = 14 + 20 + 20;
/// Where the IPv4 addresses and the TCP ports, sequence and acknowledgement numbers and
/// checksum sit in such a frame.
const ADDRS_AT: usize = 14 + 12;
const PORTS_AT: usize = 14 + 20;
const SEQ_AT: usize = 14 + 20 + 4;
const ACK_AT: usize = 14 + 20 + 8;
const CHECK_AT: usize = 14 + 20 + 16;

#[classifier]
#[inline(always)]
pub fn lb_tc(ctx: TcContext) -> i32 {
    // The frame of a VLAN-tagged skb no longer holds the tag: forwarded, it would
    // leave with the tag on another NIC's VLAN.
    if unsafe { (*ctx.skb.skb).vlan_present } != 0 {
        count::pass(Reason::PassNotIpv4);
        return TC_ACT_UNSPEC;
    }
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
        if to_client::is_syn_ack(&pkt) {
            // A hash-placed service's flow is recorded by the client's ACK that follows
            // (see `flow_table::warm_block`).
            flow_table::warm_block(&pkt.flow);
        }
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

/// The words `route` may rewrite in a frame with the headers of an IPv4 TCP packet
/// (addresses and ports by NAT; sequence and acknowledgement numbers by the SYN proxy's
/// translation of a proxied flow recorded while the NIC ran XDP), and the TCP checksum,
/// whatever the frame carries: compared after `route` to see what it rewrote. Every
/// field is always written (no `Option`): the verifier refuses a copy of a value whose
/// bytes were never set, which an `Option`'s `None` leaves.
#[derive(Clone, Copy)]
struct Tuple {
    src: u32,
    dst: u32,
    ports: u32,
    seq: u32,
    ack: u32,
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
            seq: 0,
            ack: 0,
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
            seq: wire::get32(at.add(SEQ_AT)),
            ack: wire::get32(at.add(ACK_AT)),
            check: wire::get16(at.add(CHECK_AT)),
            read: true,
        }
    }
}

/// `route`'s XDP action as tc's, after patching the TCP checksum of a rewritten packet
/// for what the skb is (see the module doc). Only `route` rewrites those words, and only
/// of IPv4 TCP packets without options.
#[inline(always)]
fn finish(ctx: &TcContext, before: Tuple, action: u32) -> i32 {
    let tc_action = match action {
        xdp_action::XDP_PASS => TC_ACT_UNSPEC,
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
    let words = |t: &Tuple| (t.src, t.dst, t.ports, t.seq, t.ack);
    if before.read && after.read && words(&before) != words(&after) {
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
    // Words the segment's own checksum covers: nothing to do for a partial checksum.
    for (old, new) in [
        (before.ports, after.ports),
        (before.seq, after.seq),
        (before.ack, after.ack),
    ] {
        if old != new {
            let _ = ctx.l4_csum_replace(CHECK_AT, old as u64, new as u64, 4);
        }
    }
}
