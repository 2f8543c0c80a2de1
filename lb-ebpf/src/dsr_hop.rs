//! The route to a DSR backend: the kernel's FIB answers where the wrapped packet leaves,
//! with which MACs, from which of the node's addresses (`BPF_FIB_LOOKUP_SRC`, Linux 6.8),
//! and whether the backend is on-link; the egress MTU comes from `bpf_check_mtu`. Cached
//! per backend id like `forward`'s next hops (see `lb_common::nexthop`).
use core::mem::MaybeUninit;

use aya_ebpf::{
    bindings::{bpf_fib_lookup as FibParams, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS},
    helpers::generated::{bpf_check_mtu, bpf_fib_lookup},
    programs::XdpContext,
};
use lb_common::{
    counters::Reason,
    encap::{DsrHop, DSR_HOP_F_VIA_GATEWAY},
    net::PROTO_TCP,
    nexthop::NextHop,
};

use crate::{
    count,
    forward::{current, zero_fill, AF_INET},
    maps::{DSR_HOPS, NEXTHOP_GEN},
};

/// `BPF_FIB_LOOKUP_SRC` (include/uapi/linux/bpf.h): the lookup also sets `ipv4_src` (or
/// `ipv6_src`) to the address the kernel would send from.
pub const FIB_LOOKUP_SRC: u32 = 1 << 4;

/// The route to backend `id` at `dst` (wire order), cached or looked up; `Err` carries
/// the action for a backend that cannot be reached (counted).
#[inline(always)]
pub fn of(ctx: &XdpContext, id: u32, dst: u32) -> Result<DsrHop, u32> {
    let generation = NEXTHOP_GEN.get(0).copied().unwrap_or(0);
    cached(
        DSR_HOPS.get_ptr_mut(id),
        |hop: &DsrHop| current(&hop.hop, generation),
        || look_up(ctx, dst, generation),
    )
}

/// The route in `cache` if `fresh` says it holds, else the one `look_up` finds, written
/// back; for both families' caches.
#[inline(always)]
pub fn cached<T: Copy>(
    cache: Option<*mut T>,
    fresh: impl Fn(&T) -> bool,
    look_up: impl FnOnce() -> Result<T, u32>,
) -> Result<T, u32> {
    if let Some(c) = cache {
        let hop = unsafe { *c };
        if fresh(&hop) {
            return Ok(hop);
        }
    }
    let hop = look_up()?;
    if let Some(c) = cache {
        unsafe { *c = hop };
    }
    Ok(hop)
}

/// The FIB parameter block on an 8-byte boundary, for `zero_fill`'s 8-byte stores (the
/// verifier refuses a misaligned stack access).
#[repr(C, align(8))]
pub struct Aligned(pub MaybeUninit<FibParams>);

/// The route's egress NIC and its MTU after the lookup on `fib` answered `rc`; `Err`
/// carries the action for a backend that cannot be reached (counted).
#[inline(always)]
pub fn egress(ctx: &XdpContext, rc: i64, fib: *const FibParams) -> Result<(u32, u32), u32> {
    match rc as u32 {
        BPF_FIB_LKUP_RET_SUCCESS => {}
        BPF_FIB_LKUP_RET_NO_NEIGH => return Err(count::drop(Reason::DropDsrNoNeighbour)),
        _ => return Err(count::drop(Reason::DropDsrNoRoute)),
    }
    let ifindex = unsafe { (*fib).ifindex };
    // Set to the device's MTU whatever the verdict on this packet's length.
    let mut mtu: u32 = 0;
    unsafe { bpf_check_mtu(ctx.ctx as *mut _, ifindex, &mut mtu, 0, 0) };
    Ok((ifindex, mtu))
}

#[inline(always)]
fn look_up(ctx: &XdpContext, dst: u32, generation: u32) -> Result<DsrHop, u32> {
    let mut params = Aligned(MaybeUninit::uninit());
    let fib = params.0.as_mut_ptr();
    let rc = unsafe {
        zero_fill(fib);
        (*fib).family = AF_INET;
        (*fib).l4_protocol = PROTO_TCP;
        (*fib).ifindex = ctx.ingress_ifindex() as u32;
        (*fib).__bindgen_anon_4.ipv4_dst = dst;
        bpf_fib_lookup(
            ctx.ctx as *mut _,
            fib,
            core::mem::size_of::<FibParams>() as i32,
            FIB_LOOKUP_SRC,
        )
    };
    let (ifindex, mtu) = egress(ctx, rc, fib)?;
    unsafe {
        Ok(DsrHop {
            hop: NextHop {
                ifindex,
                generation,
                src_mac: (*fib).smac,
                dst_mac: (*fib).dmac,
            },
            src_addr: (*fib).__bindgen_anon_3.ipv4_src,
            mtu,
            // The lookup leaves the gateway's address in `ipv4_dst` when there is one.
            flags: if (*fib).__bindgen_anon_4.ipv4_dst != dst {
                DSR_HOP_F_VIA_GATEWAY
            } else {
                0
            },
        })
    }
}
