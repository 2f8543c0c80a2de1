//! Forward for IPv6: route the rewritten packet with the kernel's FIB (`AF_INET6`), act as
//! the router hop (hop limit, MACs), send it out without leaving XDP, as `forward.rs`
//! does for IPv4, with the same next-hop caches (per backend id towards backends, in the
//! return entry towards clients).
use core::mem::MaybeUninit;

use aya_ebpf::{
    bindings::{
        bpf_fib_lookup as FibParams, xdp_action, BPF_FIB_LKUP_RET_NO_NEIGH,
        BPF_FIB_LKUP_RET_SUCCESS,
    },
    helpers::generated::bpf_fib_lookup,
    programs::XdpContext,
};
use lb_common::{counters::Reason, nexthop::NextHop};

use crate::{
    count,
    forward::zero_fill,
    maps::{EGRESS, NEXTHOP_GEN},
    parse6::{Packet6, IP6_LEN},
    v6::addr_at,
    wire,
};

const AF_INET6: u8 = 10;

/// Routes and sends the rewritten packet. `cache` (null for none) holds the last routing
/// decision for this destination; a current one skips the FIB lookup.
#[inline(always)]
pub fn forward(ctx: &XdpContext, pkt: &Packet6, cache: *mut NextHop) -> u32 {
    let generation = NEXTHOP_GEN.get(0).copied().unwrap_or(0);
    if !cache.is_null() {
        let hop = unsafe { *cache };
        if hop.ifindex != 0 && hop.generation == generation {
            return send(ctx, pkt, &hop);
        }
    }
    let ingress = ctx.ingress_ifindex() as u32;
    let mut params = MaybeUninit::<FibParams>::uninit();
    let fib = params.as_mut_ptr();
    let ip = pkt.ip;
    let rc = unsafe {
        zero_fill(fib);
        (*fib).family = AF_INET6;
        (*fib).l4_protocol = pkt.flow.proto;
        // The whole packet, for the helper's MTU check.
        (*fib).__bindgen_anon_1.tot_len = (pkt.frame_len as usize - 14) as u16;
        (*fib).ifindex = ingress;
        (*fib).__bindgen_anon_3.ipv6_src = addr_at(ip.add(8) as usize);
        (*fib).__bindgen_anon_4.ipv6_dst = addr_at(ip.add(24) as usize);
        bpf_fib_lookup(
            ctx.ctx as *mut _,
            fib,
            core::mem::size_of::<FibParams>() as i32,
            0,
        )
    };
    match rc as u32 {
        BPF_FIB_LKUP_RET_SUCCESS => {}
        // The kernel forwards the (already rewritten) packet and resolves the neighbour.
        BPF_FIB_LKUP_RET_NO_NEIGH => return count::pass(Reason::PassNoNeighbour),
        _ => return count::pass(Reason::PassFibFailed),
    }
    let hop = unsafe {
        NextHop {
            ifindex: (*fib).ifindex,
            generation,
            src_mac: (*fib).smac,
            dst_mac: (*fib).dmac,
        }
    };
    if !cache.is_null() {
        unsafe { *cache = hop };
    }
    send(ctx, pkt, &hop)
}

/// The router hop: hop limit down (IPv6 has no header checksum to patch), MACs of the
/// next hop, out of the right NIC.
#[inline(always)]
fn send(ctx: &XdpContext, pkt: &Packet6, hop: &NextHop) -> u32 {
    const _: () = assert!(IP6_LEN == 40);
    unsafe {
        *pkt.ip.add(7) -= 1;
        let eth = pkt.eth as *mut u8;
        wire::copy_mac(eth, hop.dst_mac.as_ptr());
        wire::copy_mac(eth.add(6), hop.src_mac.as_ptr());
    }
    if hop.ifindex == ctx.ingress_ifindex() as u32 {
        count::reason(Reason::TxSameInterface);
        return xdp_action::XDP_TX;
    }
    match EGRESS.redirect(hop.ifindex, 0) {
        Ok(action) => {
            count::reason(Reason::RedirectInterface);
            action
        }
        Err(_) => count::pass(Reason::PassEgressNotAttached),
    }
}
