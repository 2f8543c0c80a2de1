//! The route to an IPv6 DSR backend, as `dsr_hop` finds IPv4's: the kernel's FIB with
//! `AF_INET6` answers where the packet leaves, with which MACs, from which of the node's
//! addresses (`BPF_FIB_LOOKUP_SRC`), and whether the backend is on-link; the egress MTU
//! comes from `bpf_check_mtu`. Cached per backend id in `DSR_HOPS6`, refreshed with every
//! next-hop generation.
use core::mem::MaybeUninit;

use aya_ebpf::{
    bindings::{bpf_fib_lookup as FibParams, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS},
    helpers::generated::{bpf_check_mtu, bpf_fib_lookup},
    programs::XdpContext,
};
use lb_common::{
    counters::Reason, encap::DSR_HOP_F_VIA_GATEWAY, encap6::DsrHop6, ipv6::Addr6, net::PROTO_TCP,
    nexthop::NextHop,
};

use crate::{
    count,
    forward::zero_fill,
    forward6::AF_INET6,
    maps::{DSR_HOPS6, NEXTHOP_GEN},
};

/// `BPF_FIB_LOOKUP_SRC` (include/uapi/linux/bpf.h): the lookup also sets `ipv6_src` to the
/// address the kernel would send from.
const FIB_LOOKUP_SRC: u32 = 1 << 4;

/// The route to backend `id` at `dst`, cached or looked up; `Err` carries the action for a
/// backend that cannot be reached (counted).
#[inline(always)]
pub fn of(ctx: &XdpContext, id: u32, dst: &Addr6) -> Result<DsrHop6, u32> {
    let generation = NEXTHOP_GEN.get(0).copied().unwrap_or(0);
    let cache = DSR_HOPS6.get_ptr_mut(id);
    if let Some(c) = cache {
        let hop = unsafe { *c };
        if hop.hop.ifindex != 0 && hop.hop.generation == generation {
            return Ok(hop);
        }
    }
    let hop = look_up(ctx, dst, generation)?;
    if let Some(c) = cache {
        unsafe { *c = hop };
    }
    Ok(hop)
}

/// The FIB parameter block on an 8-byte boundary, for `zero_fill`'s 8-byte stores.
#[repr(C, align(8))]
struct Aligned(MaybeUninit<FibParams>);

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
    match rc as u32 {
        BPF_FIB_LKUP_RET_SUCCESS => {}
        BPF_FIB_LKUP_RET_NO_NEIGH => return Err(count::drop(Reason::DropDsrNoNeighbour)),
        _ => return Err(count::drop(Reason::DropDsrNoRoute)),
    }
    let ifindex = unsafe { (*fib).ifindex };
    // Set to the device's MTU whatever the verdict on this packet's length.
    let mut mtu: u32 = 0;
    unsafe { bpf_check_mtu(ctx.ctx as *mut _, ifindex, &mut mtu, 0, 0) };
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
