//! lbd's health probes to direct-server-return backends, sent the way clients' packets
//! reach them (see `lb_common::probe_tunnel`): an object of its own (`lb-probe-tunnel`),
//! attached by lbd on tc egress. A packet whose mark is a probe's gets the outer headers
//! of its backend's mode (`lb_common::encap`'s builders, as the data path uses them) and
//! is redirected to the NIC toward the backend with the neighbour's MAC
//! (`bpf_redirect_neigh`); every other packet passes after one compare.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{
        bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, bpf_redir_neigh, BPF_F_ADJ_ROOM_ENCAP_L3_IPV4,
        BPF_F_ADJ_ROOM_ENCAP_L3_IPV6, BPF_F_ADJ_ROOM_ENCAP_L4_UDP, TC_ACT_OK, TC_ACT_SHOT,
    },
    helpers::generated::{bpf_redirect_neigh, bpf_skb_load_bytes, bpf_skb_store_bytes},
    macros::{classifier, map},
    maps::HashMap,
    programs::TcContext,
};
use lb_common::{
    encap::{
        gue_source_port, gue_udp, outer_ipv4, BACKEND_F_GUE, BACKEND_F_IPIP, OUTER_TTL, PROTO_IPIP,
        PROTO_UDP, UDP_HEADER_LEN,
    },
    encap6::{gue6_checksum, gue_source_port6, InnerHeader6, IPV6_HEADER_LEN, PROTO_IPV6},
    flow::FlowKey,
    ipv6::{Addr6, FlowKey6, ETH_P_IPV6, FAMILY_IPV6},
    net::{ETH_P_IPV4, FAMILY_IPV4, PROTO_TCP},
    probe_tunnel::{is_probe_mark, ProbeTunnel, ProbeTunnel6, MAX_PROBE_TUNNELS},
};

#[map]
static PROBE_TUNNELS: HashMap<u32, ProbeTunnel> = HashMap::with_max_entries(MAX_PROBE_TUNNELS, 0);

#[map]
static PROBE_TUNNELS6: HashMap<u32, ProbeTunnel6> = HashMap::with_max_entries(MAX_PROBE_TUNNELS, 0);

const ETH_LEN: u32 = 14;
const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;
/// Ethernet, the inner IPv4 header (no options: the kernel's own TCP sockets send none)
/// and the inner ports.
const HEAD_LEN: usize = 14 + 20 + 4;
/// Ethernet, the inner IPv6 header (no extension headers: the kernel's own TCP and UDP
/// sockets send none) and the inner ports.
const HEAD6_LEN: usize = 14 + IPV6_HEADER_LEN + 4;
/// The outer headers of an IPv6 probe: IPv6 and, for `gue`, UDP.
const OUTER6_LEN: usize = IPV6_HEADER_LEN + UDP_HEADER_LEN;

#[classifier]
#[inline(always)]
pub fn lb_probe_tunnel(ctx: TcContext) -> i32 {
    // SAFETY: the context's skb pointer is the program's own for this call.
    let mark = unsafe { (*ctx.skb.skb).mark };
    if !is_probe_mark(mark) {
        return TC_ACT_OK;
    }
    // One mark names one backend, of one family: at most one of the maps has it.
    // SAFETY: hash map lookups; the value is copied out at once.
    let sent = if let Some(tunnel) = (unsafe { PROBE_TUNNELS.get(mark) }).copied() {
        // The redirected packet passes tc egress again (of this NIC or another that runs
        // this program): without its mark it is sent as it is, not tunnelled twice.
        ctx.set_mark(0);
        send(&ctx, &tunnel)
    } else if let Some(tunnel) = (unsafe { PROBE_TUNNELS6.get(mark) }).copied() {
        ctx.set_mark(0);
        send6(&ctx, &tunnel)
    } else {
        return TC_ACT_OK;
    };
    match sent {
        Some(action) => action,
        // A probe packet that cannot take the clients' path must not take another one:
        // dropped, the probe fails, which is what it is for.
        None => TC_ACT_SHOT,
    }
}

#[inline(always)]
fn send(ctx: &TcContext, t: &ProbeTunnel) -> Option<i32> {
    let mut head = [0u8; HEAD_LEN];
    // SAFETY: `head` holds HEAD_LEN bytes; the helper writes at most that many.
    if unsafe {
        bpf_skb_load_bytes(
            ctx.skb.skb as *const _,
            0,
            head.as_mut_ptr() as *mut _,
            HEAD_LEN as u32,
        )
    } != 0
    {
        return None;
    }
    if u16::from_be_bytes([head[12], head[13]]) != ETH_P_IPV4 || head[14] != 0x45 {
        return None;
    }
    let ip = 14;
    let encap = t.mode & (BACKEND_F_IPIP | BACKEND_F_GUE) != 0;
    if encap {
        let inner_len = u16::from_be_bytes([head[ip + 2], head[ip + 3]]);
        let tos = head[ip + 1];
        let frag_off = u16::from_ne_bytes([head[ip + 6], head[ip + 7]]);
        let gue = t.mode & BACKEND_F_GUE != 0;
        let (proto, extra, flags) = if gue {
            (
                PROTO_UDP,
                UDP_HEADER_LEN as u16,
                BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 | BPF_F_ADJ_ROOM_ENCAP_L4_UDP,
            )
        } else {
            (PROTO_IPIP, 0, BPF_F_ADJ_ROOM_ENCAP_L3_IPV4)
        };
        let outer = outer_ipv4(t.source, t.backend, proto, inner_len, extra, tos, frag_off);
        ctx.adjust_room(20 + extra as i32, BPF_ADJ_ROOM_MAC, flags as u64)
            .ok()?;
        store(ctx, ETH_LEN, &outer)?;
        if gue {
            let key = FlowKey {
                src_addr: u32::from_ne_bytes([
                    head[ip + 12],
                    head[ip + 13],
                    head[ip + 14],
                    head[ip + 15],
                ]),
                dst_addr: u32::from_ne_bytes([
                    head[ip + 16],
                    head[ip + 17],
                    head[ip + 18],
                    head[ip + 19],
                ]),
                src_port: u16::from_ne_bytes([head[ip + 20], head[ip + 21]]),
                dst_port: u16::from_ne_bytes([head[ip + 22], head[ip + 23]]),
                proto: head[ip + 9],
                family: FAMILY_IPV4,
                _pad: [0; 2],
            };
            let udp = gue_udp(
                gue_source_port(&key, 0),
                u16::from_be(t.gue_port),
                inner_len,
            );
            store(ctx, ETH_LEN + 20, &udp)?;
        }
        // SAFETY: no parameters: the kernel looks the outer destination up itself.
        Some(unsafe { bpf_redirect_neigh(t.ifindex, core::ptr::null_mut(), 0, 0) } as i32)
    } else {
        // dsr_l2: the packet as it is, to the backend's MAC on the node's own segment.
        let mut nh = bpf_redir_neigh {
            nh_family: AF_INET,
            __bindgen_anon_1: aya_ebpf::bindings::bpf_redir_neigh__bindgen_ty_1 {
                ipv4_nh: t.backend,
            },
        };
        // SAFETY: `nh` is a valid parameter block of the size given.
        Some(unsafe {
            bpf_redirect_neigh(
                t.ifindex,
                &mut nh,
                core::mem::size_of::<bpf_redir_neigh>() as i32,
                0,
            )
        } as i32)
    }
}

/// [`send`] for an IPv6 probe: the outer IPv6 header (its first word the inner one's, as
/// the data path's `dsr6` writes it) with next header 41 (`ipip`) or a UDP header to the
/// GUE port with its checksum (`gue`), or the packet as it is to the backend's MAC.
#[inline(always)]
fn send6(ctx: &TcContext, t: &ProbeTunnel6) -> Option<i32> {
    let mut head = [0u8; HEAD6_LEN];
    // SAFETY: `head` holds HEAD6_LEN bytes; the helper writes at most that many.
    if unsafe {
        bpf_skb_load_bytes(
            ctx.skb.skb as *const _,
            0,
            head.as_mut_ptr() as *mut _,
            HEAD6_LEN as u32,
        )
    } != 0
    {
        return None;
    }
    let ip = 14;
    let next = head[ip + 6];
    if u16::from_be_bytes([head[12], head[13]]) != ETH_P_IPV6
        || head[ip] >> 4 != 6
        || (next != PROTO_TCP && next != PROTO_UDP)
    {
        return None;
    }
    if t.mode & (BACKEND_F_IPIP | BACKEND_F_GUE) == 0 {
        // dsr_l2: the packet as it is, to the backend's MAC on the node's own segment.
        let mut nh = bpf_redir_neigh {
            nh_family: AF_INET6,
            __bindgen_anon_1: aya_ebpf::bindings::bpf_redir_neigh__bindgen_ty_1 {
                ipv6_nh: t.backend,
            },
        };
        // SAFETY: `nh` is a valid parameter block of the size given.
        return Some(unsafe {
            bpf_redirect_neigh(
                t.ifindex,
                &mut nh,
                core::mem::size_of::<bpf_redir_neigh>() as i32,
                0,
            )
        } as i32);
    }
    let inner = InnerHeader6 {
        first: u32::from_ne_bytes([head[ip], head[ip + 1], head[ip + 2], head[ip + 3]]),
        payload_len: u16::from_ne_bytes([head[ip + 4], head[ip + 5]]),
        next_hop: u16::from_ne_bytes([head[ip + 6], head[ip + 7]]),
    };
    let inner_len = inner.payload_len().wrapping_add(IPV6_HEADER_LEN as u16);
    let gue = t.mode & BACKEND_F_GUE != 0;
    let (proto, extra) = if gue {
        (PROTO_UDP, UDP_HEADER_LEN as u16)
    } else {
        (PROTO_IPV6, 0)
    };
    let mut outer = [0u8; OUTER6_LEN];
    outer[..4].copy_from_slice(&head[ip..ip + 4]);
    outer[4..6].copy_from_slice(&inner_len.wrapping_add(extra).to_be_bytes());
    outer[6] = proto;
    outer[7] = OUTER_TTL;
    put_addr(&mut outer, 8, &t.source);
    put_addr(&mut outer, 24, &t.backend);
    if gue {
        let word =
            |at: usize| u32::from_ne_bytes([head[at], head[at + 1], head[at + 2], head[at + 3]]);
        let key = FlowKey6 {
            src_addr: [word(ip + 8), word(ip + 12), word(ip + 16), word(ip + 20)],
            dst_addr: [word(ip + 24), word(ip + 28), word(ip + 32), word(ip + 36)],
            src_port: u16::from_ne_bytes([head[ip + 40], head[ip + 41]]),
            dst_port: u16::from_ne_bytes([head[ip + 42], head[ip + 43]]),
            proto: next,
            family: FAMILY_IPV6,
            _pad: [0; 2],
        };
        let sport = gue_source_port6(&key, 0).to_be();
        let u = IPV6_HEADER_LEN;
        outer[u..u + 2].copy_from_slice(&sport.to_ne_bytes());
        outer[u + 2..u + 4].copy_from_slice(&t.gue_port.to_ne_bytes());
        outer[u + 4..u + 6]
            .copy_from_slice(&inner_len.wrapping_add(UDP_HEADER_LEN as u16).to_be_bytes());
        // Valid once the kernel completes the inner checksum it may have left partial:
        // the sum `gue6_checksum` takes is the finished inner packet's.
        let check = gue6_checksum(&t.source, &t.backend, sport, t.gue_port, &inner);
        outer[u + 6..u + 8].copy_from_slice(&check.to_ne_bytes());
        ctx.adjust_room(
            OUTER6_LEN as i32,
            BPF_ADJ_ROOM_MAC,
            (BPF_F_ADJ_ROOM_ENCAP_L3_IPV6 | BPF_F_ADJ_ROOM_ENCAP_L4_UDP) as u64,
        )
        .ok()?;
        store(ctx, ETH_LEN, &outer)?;
    } else {
        ctx.adjust_room(
            IPV6_HEADER_LEN as i32,
            BPF_ADJ_ROOM_MAC,
            BPF_F_ADJ_ROOM_ENCAP_L3_IPV6 as u64,
        )
        .ok()?;
        let mut ip6 = [0u8; IPV6_HEADER_LEN];
        ip6.copy_from_slice(&outer[..IPV6_HEADER_LEN]);
        store(ctx, ETH_LEN, &ip6)?;
    }
    // SAFETY: no parameters: the kernel looks the outer destination up itself.
    Some(unsafe { bpf_redirect_neigh(t.ifindex, core::ptr::null_mut(), 0, 0) } as i32)
}

/// Writes an address (wire-order words) at `out[at..at + 16]`.
#[inline(always)]
fn put_addr(out: &mut [u8; OUTER6_LEN], at: usize, a: &Addr6) {
    for (i, w) in a.iter().enumerate() {
        out[at + 4 * i..at + 4 * i + 4].copy_from_slice(&w.to_ne_bytes());
    }
}

#[inline(always)]
fn store<T>(ctx: &TcContext, offset: u32, value: &T) -> Option<()> {
    // SAFETY: `value` is a plain `#[repr(C)]` header of the size given.
    let r = unsafe {
        bpf_skb_store_bytes(
            ctx.skb.skb as *mut _,
            offset,
            value as *const T as *const _,
            core::mem::size_of::<T>() as u32,
            0,
        )
    };
    (r == 0).then_some(())
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
