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
        BPF_F_ADJ_ROOM_ENCAP_L4_UDP, TC_ACT_OK, TC_ACT_SHOT,
    },
    helpers::generated::{bpf_redirect_neigh, bpf_skb_load_bytes, bpf_skb_store_bytes},
    macros::{classifier, map},
    maps::HashMap,
    programs::TcContext,
};
use lb_common::{
    encap::{
        gue_source_port, gue_udp, outer_ipv4, BACKEND_F_GUE, BACKEND_F_IPIP, PROTO_IPIP, PROTO_UDP,
        UDP_HEADER_LEN,
    },
    flow::FlowKey,
    net::{ETH_P_IPV4, FAMILY_IPV4},
    probe_tunnel::{is_probe_mark, ProbeTunnel, MAX_PROBE_TUNNELS},
};

#[map]
static PROBE_TUNNELS: HashMap<u32, ProbeTunnel> = HashMap::with_max_entries(MAX_PROBE_TUNNELS, 0);

const ETH_LEN: u32 = 14;
const AF_INET: u32 = 2;
/// Ethernet, the inner IPv4 header (no options: the kernel's own TCP sockets send none)
/// and the inner ports.
const HEAD_LEN: usize = 14 + 20 + 4;

#[classifier]
pub fn lb_probe_tunnel(ctx: TcContext) -> i32 {
    // SAFETY: the context's skb pointer is the program's own for this call.
    let mark = unsafe { (*ctx.skb.skb).mark };
    if !is_probe_mark(mark) {
        return TC_ACT_OK;
    }
    // SAFETY: a hash map lookup; the value is copied out at once.
    let Some(tunnel) = (unsafe { PROBE_TUNNELS.get(mark) }).copied() else {
        return TC_ACT_OK;
    };
    // The redirected packet passes tc egress again (of this NIC or another that runs this
    // program): without its mark it is sent as it is, not tunnelled twice.
    ctx.set_mark(0);
    match send(&ctx, &tunnel) {
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
