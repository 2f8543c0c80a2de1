//! The route to an IPv6 DSR backend, as `dsr_hop` finds IPv4's: the kernel's FIB with
//! `AF_INET6` answers where the packet leaves, with which MACs, from which of the node's
//! addresses (`BPF_FIB_LOOKUP_SRC`), and whether the backend is on-link; the egress MTU
//! comes from `bpf_check_mtu`. Cached per backend id in `DSR_HOPS6`, refreshed with every
//! next-hop generation.
use core::mem::MaybeUninit;

use aya_ebpf::{
    bindings::bpf_fib_lookup as FibParams, helpers::generated::bpf_fib_lookup, programs::XdpContext,
};
use lb_common::{
    encap::DSR_HOP_F_VIA_GATEWAY, encap6::DsrHop6, ipv6::Addr6, net::PROTO_TCP, nexthop::NextHop,
};

use crate::{
    dsr_hop::{cached, egress, Aligned, FIB_LOOKUP_SRC},
    forward::{current, zero_fill},
    forward6::AF_INET6,
    maps::{DSR_HOPS6, NEXTHOP_GEN},
};

/// The route to backend `id` at `dst`, cached or looked up; `Err` carries the action for a
/// backend that cannot be reached (counted).
#[inline(always)]
pub fn of(ctx: &XdpContext, id: u32, dst: &Addr6) -> Result<DsrHop6, u32> {
    let generation = NEXTHOP_GEN.get(0).copied().unwrap_or(0);
    cached(
        DSR_HOPS6.get_ptr_mut(id),
        |hop: &DsrHop6| current(&hop.hop, generation),
        || look_up(ctx, dst, generation),
    )
}

#[inline(always)]
fn look_up(ctx: &XdpContext, dst: &Addr6, generation: u32) -> Result<DsrHop6, u32> {
    let mut params = Aligned(MaybeUninit::uninit());
    let fib = params.0.as_mut_ptr();
    let rc = unsafe {
        zero_fill(fib);
        (*fib).family = AF_INET6;
        (*fib).l4_protocol = PROTO_TCP;
        (*fib).ifindex = ctx.ingress_ifindex() as u32;
        (*fib).__bindgen_anon_4.ipv6_dst = *dst;
        bpf_fib_lookup(
            ctx.ctx as *mut _,
            fib,
            core::mem::size_of::<FibParams>() as i32,
            FIB_LOOKUP_SRC,
        )
    };
    let (ifindex, mtu) = egress(ctx, rc, fib)?;
    unsafe {
        Ok(DsrHop6 {
            hop: NextHop {
                ifindex,
                generation,
                src_mac: (*fib).smac,
                dst_mac: (*fib).dmac,
            },
            src_addr: (*fib).__bindgen_anon_3.ipv6_src,
            mtu,
            // The lookup leaves the gateway's address in `ipv6_dst` when there is one
            // (`bpf_ipv6_fib_lookup`).
            flags: if (*fib).__bindgen_anon_4.ipv6_dst != *dst {
                DSR_HOP_F_VIA_GATEWAY
            } else {
                0
            },
        })
    }
}
