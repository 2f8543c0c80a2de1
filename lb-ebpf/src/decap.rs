//! The backend's decapsulation program, an object of its own (`lb-decap`, loaded by the
//! `lb-decap` binary): it removes the outer IPv4 header (IPIP) or outer IPv4 + UDP (GUE
//! variant 1) that the load balancer put in front of a client's IPv4 packet, and for an
//! IPv6 service's the outer IPv6 header (IPv6-in-IPv6, next header 41) or outer IPv6 +
//! UDP in front of the client's IPv6 packet (`lb_common::encap6`), so the backend's
//! kernel delivers the client's own packet to the socket on the VIP (held on `lo`). The
//! layouts, counters and prefix check are `lb_common::decap`'s.
//!
//! Two entry points with one decision ([`classify`]): `lb_decap_tc` on tc ingress (the
//! default: any driver, GRO'd packets) and `lb_decap_xdp`.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{
        bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, xdp_action, BPF_F_ADJ_ROOM_DECAP_L3_IPV4,
        BPF_F_ADJ_ROOM_DECAP_L3_IPV6, BPF_F_ADJ_ROOM_FIXED_GSO, TC_ACT_OK, TC_ACT_SHOT,
    },
    helpers::generated::{bpf_skb_load_bytes, bpf_xdp_adjust_head},
    macros::{classifier, map, xdp},
    maps::{Array, PerCpuArray},
    programs::{TcContext, XdpContext},
};
use lb_common::{
    decap::{DecapConfig, DecapCounter, DECAP_COUNTER_COUNT},
    encap::{PROTO_IPIP, PROTO_UDP},
    encap6::PROTO_IPV6,
    ipv6::ETH_P_IPV6,
    net::ETH_P_IPV4,
};

#[map]
static DECAP_CONFIG: Array<DecapConfig> = Array::with_max_entries(1, 0);

#[map]
static DECAP_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(DECAP_COUNTER_COUNT, 0);

const ETH_LEN: usize = 14;
/// The outer headers' lengths (`lb_common::encap`'s overheads).
const IPIP_OVERHEAD: usize = lb_common::encap::IPIP_OVERHEAD as usize;
const GUE_OVERHEAD: usize = lb_common::encap::GUE_OVERHEAD as usize;
/// Over IPv6 (`lb_common::encap6`'s overheads).
const IP6IP6_OVERHEAD: usize = lb_common::encap6::IP6IP6_OVERHEAD as usize;
const GUE6_OVERHEAD: usize = lb_common::encap6::GUE6_OVERHEAD as usize;
/// The bytes [`classify`] reads: Ethernet, the outer IPv6 header (the longer), a UDP
/// header, and the first byte of the inner header behind a GUE outer.
const HEAD_LEN: usize = ETH_LEN + GUE6_OVERHEAD + 1;

/// What to do with a frame.
enum Verdict {
    Pass,
    Drop(DecapCounter),
    /// Remove this many bytes behind the Ethernet header; the inner packet is IPv6 if the
    /// flag says so (IPv4 otherwise).
    Strip(u32, DecapCounter, bool),
}

/// The verdict on a frame whose first bytes are `head` (`have` of them are real; a
/// shorter frame is zero-filled past its end).
#[inline(always)]
fn classify(head: &[u8; HEAD_LEN], have: usize) -> Verdict {
    let ether_type = u16::from_be_bytes([head[12], head[13]]);
    if ether_type == ETH_P_IPV6 {
        return classify6(head, have);
    }
    if have < ETH_LEN + IPIP_OVERHEAD || ether_type != ETH_P_IPV4 {
        return Verdict::Pass;
    }
    let ip = ETH_LEN;
    let proto = head[ip + 9];
    let dst_port = u16::from_ne_bytes([head[ip + 22], head[ip + 23]]);
    let config = match DECAP_CONFIG.get(0) {
        Some(c) => *c,
        None => return Verdict::Pass,
    };
    let (overhead, counter) = if proto == PROTO_IPIP {
        (IPIP_OVERHEAD, DecapCounter::DecapIpip)
    } else if proto == PROTO_UDP && have >= ETH_LEN + GUE_OVERHEAD && dst_port == config.gue_port {
        (GUE_OVERHEAD, DecapCounter::DecapGue)
    } else {
        return Verdict::Pass;
    };
    let src = u32::from_ne_bytes([head[ip + 12], head[ip + 13], head[ip + 14], head[ip + 15]]);
    if !config.admits(src) {
        return Verdict::Drop(DecapCounter::DropOutsidePrefix);
    }
    // Outer options (IHL other than 5) or a fragment cannot be undone here; the inner
    // header must be IPv4 (version 4, the first byte GUE variant 1 reads too).
    let fragment = u16::from_be_bytes([head[ip + 6], head[ip + 7]]) & 0x3fff != 0;
    let inner = ip + overhead;
    if head[ip] != 0x45 || fragment || have <= inner || head[inner] >> 4 != 4 {
        return Verdict::Drop(DecapCounter::DropMalformed);
    }
    Verdict::Strip(overhead as u32, counter, false)
}

/// [`classify`] for an IPv6 frame: IPv6-in-IPv6 (next header 41 right after the fixed
/// header) or UDP to the GUE port, from an LB-tier IPv6 address, carrying an IPv6 packet.
/// The outer header's extension headers are not followed (the LB sends none): such a
/// frame is not taken for encapsulated and passes.
#[inline(always)]
fn classify6(head: &[u8; HEAD_LEN], have: usize) -> Verdict {
    if have < ETH_LEN + IP6IP6_OVERHEAD {
        return Verdict::Pass;
    }
    let ip = ETH_LEN;
    let next = head[ip + 6];
    let dst_port = u16::from_ne_bytes([head[ip + 42], head[ip + 43]]);
    let config = match DECAP_CONFIG.get(0) {
        Some(c) => *c,
        None => return Verdict::Pass,
    };
    let (overhead, counter) = if next == PROTO_IPV6 {
        (IP6IP6_OVERHEAD, DecapCounter::DecapIpip)
    } else if next == PROTO_UDP && have >= ETH_LEN + GUE6_OVERHEAD && dst_port == config.gue_port {
        (GUE6_OVERHEAD, DecapCounter::DecapGue)
    } else {
        return Verdict::Pass;
    };
    let word = |at: usize| u32::from_ne_bytes([head[at], head[at + 1], head[at + 2], head[at + 3]]);
    let src = [word(ip + 8), word(ip + 12), word(ip + 16), word(ip + 20)];
    if !config.admits6(&src) {
        return Verdict::Drop(DecapCounter::DropOutsidePrefix);
    }
    let inner = ip + overhead;
    if have <= inner || head[inner] >> 4 != 6 {
        return Verdict::Drop(DecapCounter::DropMalformed);
    }
    Verdict::Strip(overhead as u32, counter, true)
}

#[inline(always)]
fn count(counter: DecapCounter) {
    if let Some(slot) = DECAP_COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: a per-CPU slot, written only by this CPU.
        unsafe { *slot += 1 };
    }
}

/// Copies the frame's first `len` bytes (a constant at each call) into `head`.
#[inline(always)]
fn load_head(ctx: &TcContext, head: &mut [u8; HEAD_LEN], len: usize) -> bool {
    // SAFETY: `head` holds HEAD_LEN >= len bytes; the helper writes at most `len`.
    unsafe {
        bpf_skb_load_bytes(
            ctx.skb.skb as *const _,
            0,
            head.as_mut_ptr() as *mut _,
            len as u32,
        ) == 0
    }
}

#[classifier]
#[inline(always)]
pub fn lb_decap_tc(ctx: TcContext) -> i32 {
    let mut head = [0u8; HEAD_LEN];
    // bpf_skb_load_bytes fails for bytes past the frame: a frame too short for the whole
    // head (a small IPIP packet) still has its IPv4 header read. Constant lengths: the
    // verifier refuses a length it cannot bound away from zero.
    let have = if load_head(&ctx, &mut head, HEAD_LEN) {
        HEAD_LEN
    } else if load_head(&ctx, &mut head, ETH_LEN + IPIP_OVERHEAD) {
        ETH_LEN + IPIP_OVERHEAD
    } else {
        0
    };
    match classify(&head, have) {
        Verdict::Pass => {
            count(DecapCounter::PassNotEncapsulated);
            TC_ACT_OK
        }
        Verdict::Drop(why) => {
            count(why);
            TC_ACT_SHOT
        }
        Verdict::Strip(len, counter, ipv6) => {
            // FIXED_GSO: a GRO'd train keeps its segment size (the inner TCP segments are
            // as long as they were); DECAP_L3_IPV4 (IPV6) names the inner header's family
            // and clears the skb's tunnel state.
            let l3 = if ipv6 {
                BPF_F_ADJ_ROOM_DECAP_L3_IPV6
            } else {
                BPF_F_ADJ_ROOM_DECAP_L3_IPV4
            };
            let flags = (BPF_F_ADJ_ROOM_FIXED_GSO | l3) as u64;
            match ctx.adjust_room(-(len as i32), BPF_ADJ_ROOM_MAC, flags) {
                Ok(()) => {
                    count(counter);
                    TC_ACT_OK
                }
                Err(_) => {
                    count(DecapCounter::DropShrinkFailed);
                    TC_ACT_SHOT
                }
            }
        }
    }
}

#[xdp]
#[inline(always)]
pub fn lb_decap_xdp(ctx: XdpContext) -> u32 {
    let (start, end) = (ctx.data(), ctx.data_end());
    let mut head = [0u8; HEAD_LEN];
    let have = if start + HEAD_LEN <= end {
        // SAFETY: HEAD_LEN bytes from `start` are inside the frame (checked above).
        head = unsafe { *(start as *const [u8; HEAD_LEN]) };
        HEAD_LEN
    } else if start + ETH_LEN + IPIP_OVERHEAD <= end {
        let src = start as *const [u8; ETH_LEN + IPIP_OVERHEAD];
        // SAFETY: that many bytes from `start` are inside the frame (checked above).
        let short = unsafe { *src };
        head[..ETH_LEN + IPIP_OVERHEAD].copy_from_slice(&short);
        ETH_LEN + IPIP_OVERHEAD
    } else {
        0
    };
    match classify(&head, have) {
        Verdict::Pass => {
            count(DecapCounter::PassNotEncapsulated);
            xdp_action::XDP_PASS
        }
        Verdict::Drop(why) => {
            count(why);
            xdp_action::XDP_DROP
        }
        Verdict::Strip(len, counter, _) => {
            // The Ethernet header moves forward over the outer headers, then the frame's
            // start moves to it.
            let at = start + len as usize;
            if at + ETH_LEN > end {
                count(DecapCounter::DropMalformed);
                return xdp_action::XDP_DROP;
            }
            let mut eth = [0u8; ETH_LEN];
            eth.copy_from_slice(&head[..ETH_LEN]);
            // SAFETY: ETH_LEN bytes from `at` are inside the frame (checked above).
            unsafe { *(at as *mut [u8; ETH_LEN]) = eth };
            // SAFETY: the context is the program's own; the kernel checks the length.
            if unsafe { bpf_xdp_adjust_head(ctx.ctx, len as i32) } != 0 {
                count(DecapCounter::DropShrinkFailed);
                return xdp_action::XDP_DROP;
            }
            count(counter);
            xdp_action::XDP_PASS
        }
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any reachable panic path; this is never linked in.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
