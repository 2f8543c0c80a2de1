//! Backend -> client for an IPv6 TCP service with `stateless_return`, with no return
//! entry and no SYN-cache slot: translated by the IPv6 reverse map (see
//! `lb_common::reverse6`), as `to_client_reverse` translates IPv4 replies, with the same
//! two checks (the reply is not addressed to this node, and it arrived on the NIC through
//! which the kernel routes to its backend). Runs in `lb_v6_syn`, whose stack holds the
//! FIB parameter blocks. Nothing is recorded.
use core::mem::MaybeUninit;

use aya_ebpf::{
    bindings::{
        bpf_fib_lookup as FibParams, BPF_FIB_LKUP_RET_NOT_FWDED, BPF_FIB_LKUP_RET_SUCCESS,
        BPF_FIB_LOOKUP_SKIP_NEIGH,
    },
    helpers::generated::bpf_fib_lookup,
    programs::XdpContext,
};
use lb_common::{counters::Reason, ipv6::Addr6, reverse6::ReverseKey6};

use crate::{count, forward::zero_fill, forward6, maps::REVERSE6, parse6::Packet6, rewrite6};

const AF_INET6: u8 = 10;

/// Translates the reply if the IPv6 reverse map names its source; `None` otherwise (not
/// ours: passed untouched by the caller).
#[inline(always)]
pub fn handle(ctx: &XdpContext, pkt: &Packet6) -> Option<u32> {
    let key = ReverseKey6 {
        addr: pkt.flow.src_addr,
        port: pkt.flow.src_port,
        proto: pkt.flow.proto,
        family: pkt.flow.family,
    };
    // Copied out: the controller may replace the entry meanwhile.
    let target = unsafe { REVERSE6.get(key) }.copied()?;
    let ingress = ctx.ingress_ifindex() as u32;
    // Addressed to one of the node's own addresses (a health probe's reply): the FIB
    // would deliver it locally rather than forward it.
    let (rc, _) = fib(ctx, pkt, (&pkt.flow.src_addr, &pkt.flow.dst_addr), 0);
    if rc == BPF_FIB_LKUP_RET_NOT_FWDED {
        return Some(count::pass(Reason::PassReplyToNode));
    }
    // The reverse-path check: the way to its backend leaves through the NIC it came in on.
    let (rc, out) = fib(
        ctx,
        pkt,
        (&pkt.flow.dst_addr, &pkt.flow.src_addr),
        BPF_FIB_LOOKUP_SKIP_NEIGH,
    );
    if rc != BPF_FIB_LKUP_RET_SUCCESS || out != ingress {
        return Some(count::pass(Reason::PassReplyWrongInterface));
    }
    if !pkt.hop_allows() {
        return Some(count::pass(Reason::PassTtlExpired));
    }
    rewrite6::snat_tcp(pkt, &target.vip, target.vport);
    count::to_client(target.service, target.backend, pkt.frame_len);
    count::answer_from_backend(target.backend, pkt.tcp_flags);
    count::reply_reverse_mapped(target.service, target.backend);
    // No entry to cache the route to the client in: the FIB decides.
    Some(forward6::forward(ctx, pkt, core::ptr::null_mut()))
}

/// A FIB lookup from `src` to `dst` as if the packet came in on its ingress NIC: its
/// answer and the NIC it names.
#[inline(always)]
fn fib(ctx: &XdpContext, pkt: &Packet6, (src, dst): (&Addr6, &Addr6), flags: u32) -> (u32, u32) {
    let mut params = MaybeUninit::<FibParams>::uninit();
    let fib = params.as_mut_ptr();
    unsafe {
        zero_fill(fib);
        (*fib).family = AF_INET6;
        (*fib).l4_protocol = pkt.flow.proto;
        (*fib).ifindex = ctx.ingress_ifindex() as u32;
        (*fib).__bindgen_anon_3.ipv6_src = *src;
        (*fib).__bindgen_anon_4.ipv6_dst = *dst;
        let rc = bpf_fib_lookup(
            ctx.ctx as *mut _,
            fib,
            core::mem::size_of::<FibParams>() as i32,
            flags,
        );
        (rc as u32, (*fib).ifindex)
    }
}
