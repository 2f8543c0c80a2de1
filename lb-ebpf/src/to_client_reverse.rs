//! Backend -> client with no return entry and no SYN-cache slot: translated by the reverse
//! map (see `lb_common::reverse`) when the backend's address:port serves one VIP:port of a
//! `stateless_return` service. In a tier of LB nodes behind ECMP the routers send a reply
//! to any node, mostly not the one that saw the client's packets; this is how that node
//! translates it without the other's state. Nothing is recorded: the client's next packet
//! is placed by the table wherever it lands, and its reply is translated here again.
//!
//! Two kinds of packet from a backend's address:port must stay untouched:
//! - anything addressed to this node itself: the reply to one of `lbd`'s health probes
//!   (sent from the node's own address), or any connection the node opened. The FIB says
//!   so: a destination the kernel delivers locally is not forwarded
//!   (`BPF_FIB_LKUP_RET_NOT_FWDED`, the lookup of an `RTN_LOCAL` route). Probes need no
//!   port range of their own this way, and neither do other local connections;
//! - a "reply" a client sends itself with the backend's address as source, to have it
//!   leave from the VIP: it must have arrived on the NIC through which the kernel routes
//!   to the backend (the reverse-path check of `to_client_miss`).
use core::mem::MaybeUninit;

use aya_ebpf::{
    bindings::{bpf_fib_lookup as FibParams, BPF_FIB_LKUP_RET_NOT_FWDED},
    helpers::generated::bpf_fib_lookup,
};
use lb_common::{counters::Reason, reverse::ReverseKey};

use crate::{count, forward, frame::Frame, maps::REVERSE, packet::Packet, rewrite, to_client_miss};

/// Translates the reply if the reverse map names its source; `None` otherwise (not ours:
/// passed untouched by the caller, as before the map existed).
#[inline(always)]
pub fn handle(ctx: &impl Frame, pkt: &Packet) -> Option<u32> {
    let key = ReverseKey {
        addr: pkt.flow.src_addr,
        port: pkt.flow.src_port,
        proto: pkt.flow.proto,
        family: pkt.flow.family,
    };
    // Copied out: the controller may replace the entry meanwhile.
    let target = unsafe { REVERSE.get(key) }.copied()?;
    if addressed_to_this_node(ctx, pkt) {
        return Some(count::pass(Reason::PassReplyToNode));
    }
    if !to_client_miss::arrived_from_backend_side(ctx, pkt) {
        return Some(count::pass(Reason::PassReplyWrongInterface));
    }
    if !forward::ttl_allows(pkt) {
        return Some(count::pass(Reason::PassTtlExpired));
    }
    rewrite::snat(pkt, target.vip, target.vport);
    count::to_client(target.service, target.backend, pkt.frame_len);
    count::answer_from_backend(target.backend, pkt.tcp_flags);
    count::reply_reverse_mapped(target.service, target.backend);
    // No entry to cache the route to the client in: the FIB decides.
    Some(forward::forward(ctx, pkt, core::ptr::null_mut()))
}

/// Whether the kernel would deliver the packet to this node rather than forward it: its
/// destination is one of the node's own addresses (or a broadcast or multicast one).
#[inline(always)]
fn addressed_to_this_node(ctx: &impl Frame, pkt: &Packet) -> bool {
    let mut params = MaybeUninit::<FibParams>::uninit();
    let fib = params.as_mut_ptr();
    let rc = unsafe {
        forward::zero_fill(fib);
        (*fib).family = forward::AF_INET;
        (*fib).l4_protocol = pkt.flow.proto;
        (*fib).ifindex = ctx.ingress_ifindex();
        (*fib).__bindgen_anon_3.ipv4_src = pkt.flow.src_addr;
        (*fib).__bindgen_anon_4.ipv4_dst = pkt.flow.dst_addr;
        bpf_fib_lookup(
            ctx.as_ctx() as *mut _,
            fib,
            core::mem::size_of::<FibParams>() as i32,
            0,
        )
    };
    rc as u32 == BPF_FIB_LKUP_RET_NOT_FWDED
}
