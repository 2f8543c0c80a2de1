//! Forward: route the rewritten packet with the kernel's FIB, act as the router hop (TTL,
//! MACs), and send it out without leaving the hook (see `frame`): at XDP, XDP_TX when the
//! next hop is behind the ingress NIC, XDP_REDIRECT through the EGRESS devmap otherwise.
use core::{mem::MaybeUninit, ptr::write_volatile};

use aya_ebpf::{
    bindings::{bpf_fib_lookup as FibParams, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS},
    helpers::generated::bpf_fib_lookup,
};
use lb_common::{checksum::replace2, counters::Reason, nexthop::NextHop};
use network_types::{eth::EthHdr, ip::Ipv4Hdr};

use crate::{count, frame::Frame, maps::NEXTHOP_GEN, packet::Packet, wire};

pub(crate) const AF_INET: u8 = 2;

/// Zeroes the 64-byte FIB parameter block with eight explicit 8-byte stores. The helper
/// reads all of it, and without CAP_PERFMON the verifier wants every byte initialised;
/// `mem::zeroed()` or zero array literals become a `memset` loop with a variable stack
/// offset, which the verifier refuses without CAP_PERFMON too.
#[inline(always)]
pub(crate) unsafe fn zero_fill(params: *mut FibParams) {
    const _: () = assert!(core::mem::size_of::<FibParams>() == 64);
    let words = params as *mut u64;
    write_volatile(words, 0);
    write_volatile(words.add(1), 0);
    write_volatile(words.add(2), 0);
    write_volatile(words.add(3), 0);
    write_volatile(words.add(4), 0);
    write_volatile(words.add(5), 0);
    write_volatile(words.add(6), 0);
    write_volatile(words.add(7), 0);
}

/// A router must not forward a packet whose TTL would reach zero; the kernel answers
/// with the ICMP time-exceeded, so such packets are passed untouched.
#[inline(always)]
pub fn ttl_allows(pkt: &Packet) -> bool {
    unsafe { (*pkt.ip).ttl > 1 }
}

/// Routes and sends the rewritten packet. `cache` (null for none) holds the last routing
/// decision for this destination; a current one skips the FIB lookup.
#[inline(always)]
pub fn forward(ctx: &impl Frame, pkt: &Packet, cache: *mut NextHop) -> u32 {
    forward_frame(ctx, pkt.eth, pkt.ip, pkt.flow.proto, cache)
}

/// [`forward`] for any rewritten frame: its Ethernet header, its IPv4 header (without
/// options, both proven inside the frame) and the IP protocol it carries.
#[inline(always)]
pub fn forward_frame(
    ctx: &impl Frame,
    eth: *mut EthHdr,
    ip: *mut Ipv4Hdr,
    proto: u8,
    cache: *mut NextHop,
) -> u32 {
    let generation = nexthop_generation();
    if let Some(hop) = current_hop(cache, generation) {
        return send(ctx, eth, ip, &hop);
    }
    let ingress = ctx.ingress_ifindex();
    let mut params = MaybeUninit::<FibParams>::uninit();
    let fib = params.as_mut_ptr();
    let rc = unsafe {
        zero_fill(fib);
        (*fib).family = AF_INET;
        (*fib).l4_protocol = proto;
        (*fib).__bindgen_anon_1.tot_len = ctx.fib_tot_len(u16::from_be_bytes((*ip).tot_len));
        (*fib).ifindex = ingress;
        (*fib).__bindgen_anon_2.tos = (*ip).tos;
        (*fib).__bindgen_anon_3.ipv4_src = u32::from_ne_bytes((*ip).src_addr);
        (*fib).__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes((*ip).dst_addr);
        bpf_fib_lookup(
            ctx.as_ctx() as *mut _,
            fib,
            core::mem::size_of::<FibParams>() as i32,
            0,
        )
    };
    match hop_of(rc, fib, generation, cache) {
        Ok(hop) => send(ctx, eth, ip, &hop),
        Err(action) => action,
    }
}

/// The generation a cached next hop must carry to be current.
#[inline(always)]
pub(crate) fn nexthop_generation() -> u32 {
    NEXTHOP_GEN.get(0).copied().unwrap_or(0)
}

/// The next hop in `cache` (null for none) if it is current.
#[inline(always)]
pub(crate) fn current_hop(cache: *mut NextHop, generation: u32) -> Option<NextHop> {
    if cache.is_null() {
        return None;
    }
    let hop = unsafe { *cache };
    current(&hop, generation).then_some(hop)
}

/// Whether a cached next hop was looked up (a zero ifindex: never) in the current
/// next-hop `generation`.
#[inline(always)]
pub(crate) fn current(hop: &NextHop, generation: u32) -> bool {
    hop.ifindex != 0 && hop.generation == generation
}

/// The next hop a FIB lookup answered (`rc`, the filled `fib`), kept in `cache` (null
/// for none); or the action for a lookup that found none, counted.
#[inline(always)]
pub(crate) fn hop_of(
    rc: i64,
    fib: *const FibParams,
    generation: u32,
    cache: *mut NextHop,
) -> Result<NextHop, u32> {
    match rc as u32 {
        BPF_FIB_LKUP_RET_SUCCESS => {}
        // The kernel forwards the (already rewritten) packet and resolves the neighbour,
        // so the next packets of the flow find it resolved.
        BPF_FIB_LKUP_RET_NO_NEIGH => return Err(count::pass(Reason::PassNoNeighbour)),
        _ => return Err(count::pass(Reason::PassFibFailed)),
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
    Ok(hop)
}

/// The router hop: TTL down, MACs of the next hop, out of the right NIC; or, for a
/// packet too big for that NIC, to the kernel with only its addresses rewritten, which
/// forwards or reports it as a router does.
#[inline(always)]
fn send(ctx: &impl Frame, eth: *mut EthHdr, ip_hdr: *mut Ipv4Hdr, hop: &NextHop) -> u32 {
    if !ctx.fits(hop.ifindex) {
        return count::pass(Reason::PassFibFailed);
    }
    unsafe {
        // TTL and protocol share the 16-bit word at offset 8, the checksum is at 10.
        let ip = ip_hdr as *mut u8;
        let old = wire::get16(ip.add(8));
        (*ip_hdr).ttl -= 1;
        let new = wire::get16(ip.add(8));
        wire::set16(ip.add(10), replace2(wire::get16(ip.add(10)), old, new));
    }
    out(ctx, eth as *mut u8, hop)
}

/// The part of the router hop both families share: the next hop's MACs on the frame at
/// `eth` (inside it, checked by the caller), and out of the right NIC.
#[inline(always)]
pub(crate) fn out(ctx: &impl Frame, eth: *mut u8, hop: &NextHop) -> u32 {
    unsafe {
        wire::copy_mac(eth, hop.dst_mac.as_ptr());
        wire::copy_mac(eth.add(6), hop.src_mac.as_ptr());
    }
    ctx.send_out(hop.ifindex)
}
