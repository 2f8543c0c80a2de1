//! Forward for IPv6: route the rewritten packet with the kernel's FIB (`AF_INET6`), act as
//! the router hop (hop limit, MACs), send it out without leaving XDP, as `forward.rs`
//! does for IPv4, with the same next-hop caches (per backend id towards backends, in the
//! return entry towards clients).
use core::mem::MaybeUninit;

use aya_ebpf::{
    bindings::bpf_fib_lookup as FibParams, helpers::generated::bpf_fib_lookup, programs::XdpContext,
};
use lb_common::nexthop::NextHop;

use crate::{
    forward::{current_hop, hop_of, nexthop_generation, out, zero_fill},
    parse6::{Packet6, IP6_LEN},
    v6::addr_at,
};

pub(crate) const AF_INET6: u8 = 10;

/// Routes and sends the rewritten packet. `cache` (null for none) holds the last routing
/// decision for this destination; a current one skips the FIB lookup.
#[inline(always)]
pub fn forward(ctx: &XdpContext, pkt: &Packet6, cache: *mut NextHop) -> u32 {
    let generation = nexthop_generation();
    if let Some(hop) = current_hop(cache, generation) {
        return send(ctx, pkt, &hop);
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
    match hop_of(rc, fib, generation, cache) {
        Ok(hop) => send(ctx, pkt, &hop),
        Err(action) => action,
    }
}

/// The router hop: hop limit down (IPv6 has no header checksum to patch), then the next
/// hop's MACs and out of the right NIC, as for IPv4.
#[inline(always)]
fn send(ctx: &XdpContext, pkt: &Packet6, hop: &NextHop) -> u32 {
    const _: () = assert!(IP6_LEN == 40);
    unsafe { *pkt.ip.add(7) -= 1 };
    out(ctx, pkt.eth as *mut u8, hop)
}
