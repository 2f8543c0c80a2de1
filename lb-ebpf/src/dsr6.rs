//! Direct server return for IPv6 services (see `lb_common::encap6`, docs/dsr.md "IPv6"):
//! `lb_v6` places a client packet as for NAT66, and for a DSR backend hands it over
//! ([`hand_over`]) to `lb_dsr6`, a program of its own (`lb_v6`'s frame has no room for a
//! route lookup and header writes), which wraps it for the backend's mode and sends it
//! ([`wrap_and_send`]). The packet keeps its addresses and hop limit: `dsr_l2` changes
//! only the MACs, `ipip` puts an outer IPv6 header in front (next header 41), `gue` an
//! outer IPv6 and a UDP header with its checksum (`encap6::gue6_checksum`). A packet that
//! would not fit the egress MTU once wrapped is answered with an ICMPv6 packet too big
//! (`packet_too_big`): IPv6 is never fragmented on the way.
use aya_ebpf::{helpers::generated::bpf_xdp_adjust_head, macros::xdp, programs::XdpContext};
use lb_common::{
    counters::Reason,
    encap::{
        BACKEND_F_DSR, BACKEND_F_DSR_L2, BACKEND_F_GUE, DSR_HOP_F_VIA_GATEWAY, OUTER_TTL,
        PROTO_UDP, UDP_HEADER_LEN,
    },
    encap6::{
        advertised_mtu6, gue6_checksum, gue_source_port6, overhead6, DsrHop6, InnerHeader6,
        GUE6_OVERHEAD, IP6IP6_OVERHEAD, IPV6_HEADER_LEN, PROTO_IPV6,
    },
    flow::FlowTarget,
    ipv6::{Addr6, FlowKey6, ETH_P_IPV6},
    limits::PROGRAMS_SLOT_DSR6,
};

use crate::{
    count, dsr, dsr_hop6,
    flow6::backend6,
    icmp6_to_backend,
    maps::{gue_port, hash_seed, DSR_HAND_OVER, PROGRAMS},
    packet_too_big,
    parse6::{self, Packet6, IP6_LEN},
    wire,
};

const ETH_LEN: usize = 14;

/// Leaves backend `backend` of service `service` for `lb_dsr6` and tail-calls it; returns
/// only if the call fails (no `lb_dsr6` in the program array), dropping the packet,
/// counted.
#[inline(always)]
pub fn hand_over(ctx: &XdpContext, backend: u32, service: u32, new_flow: bool) -> u32 {
    if let Some(slot) = DSR_HAND_OVER.get_ptr_mut(0) {
        // SAFETY: a per-CPU slot, written before the tail call on this CPU reads it.
        unsafe {
            *slot = dsr::HandOver {
                backend,
                service,
                new_flow: new_flow as u32,
            }
        };
    }
    unsafe { PROGRAMS.tail_call(ctx, PROGRAMS_SLOT_DSR6) };
    count::drop(Reason::DropDsrUnavailable)
}

/// An IPv6 client packet `lb_v6` placed on the DSR backend it stashed, or an ICMPv6
/// error to the VIP about a reply of a DSR flow (see `icmp6_to_backend`). Parsed again,
/// as a tail call keeps only the context.
#[xdp]
#[inline(always)]
pub fn lb_dsr6(ctx: XdpContext) -> u32 {
    match parse6::parse(&ctx) {
        Ok(pkt) => handle(&ctx, &pkt),
        // Neither TCP nor UDP: an ICMPv6 error about a DSR flow's reply, from `icmp6_nat`.
        Err(Reason::PassNotTcp) => icmp6_to_backend::handle(&ctx),
        Err(reason) => count::pass(reason),
    }
}

#[inline(always)]
fn handle(ctx: &XdpContext, pkt: &Packet6) -> u32 {
    let Some(placed) = DSR_HAND_OVER.get(0).copied() else {
        return count::drop(Reason::DropDsrUnavailable);
    };
    let id = placed.backend;
    let target = FlowTarget::unrecorded(id, placed.service);
    count::to_backend(&target, pkt.frame_len, placed.new_flow != 0);
    count::attempt_to_backend(id, pkt.tcp_flags);
    let Some((backend, addr)) = backend6(id) else {
        return count::drop(Reason::DropNoBackend);
    };
    let inner = unsafe { inner_of(pkt.ip) };
    wrap_and_send(ctx, id, backend.flags, &addr, &pkt.flow, &inner, false)
}

/// The words of the IPv6 header at `ip` (which the caller proved inside the frame) that
/// the outer headers copy or sum, read before the frame moves.
#[inline(always)]
pub unsafe fn inner_of(ip: *const u8) -> InnerHeader6 {
    InnerHeader6 {
        first: wire::get32(ip),
        payload_len: wire::get16(ip.add(4)),
        next_hop: wire::get16(ip.add(6)),
    }
}

/// Wraps the IPv6 packet (right after the Ethernet header; its header words `inner`) for
/// backend `id` at `addr`, whose mode is in `flags`, and sends it; `key` is its flow
/// (client -> VIP), hashed into `gue`'s source port. `icmp`: an ICMPv6 error about the
/// flow rather than a packet of it (never answered with another).
#[inline(always)]
pub fn wrap_and_send(
    ctx: &XdpContext,
    id: u32,
    flags: u8,
    addr: &Addr6,
    key: &FlowKey6,
    inner: &InnerHeader6,
    icmp: bool,
) -> u32 {
    const _: () = assert!(IP6_LEN == IPV6_HEADER_LEN);
    let hop = match dsr_hop6::of(ctx, id, addr) {
        Ok(hop) => hop,
        Err(action) => return action,
    };
    let mode = flags & BACKEND_F_DSR;
    if mode & BACKEND_F_DSR_L2 != 0 && hop.flags & DSR_HOP_F_VIA_GATEWAY != 0 {
        return count::drop(Reason::DropDsrNotOnLink);
    }
    let len = inner.payload_len() as u32 + IPV6_HEADER_LEN as u32;
    if len + overhead6(mode) > hop.mtu {
        if icmp {
            return count::drop(Reason::DropDsrTooBig);
        }
        return packet_too_big::answer(ctx, advertised_mtu6(hop.mtu, mode));
    }
    let written = if mode & BACKEND_F_DSR_L2 != 0 {
        dsr::set_macs(ctx, &hop.hop)
    } else {
        push_outer(ctx, &hop, addr, key, inner, mode & BACKEND_F_GUE != 0)
    };
    if !written {
        return count::drop(Reason::DropDsrNoRoute);
    }
    dsr::xmit(ctx, &hop.hop)
}

/// `ipip` and `gue`: room made in front of the IPv6 packet for an Ethernet header, the
/// outer IPv6 header from the node to `dst` (its first word the inner one's, so the
/// traffic class and flow label, which fabrics hash, stay the flow's), and for `gue` the
/// UDP header.
#[inline(always)]
fn push_outer(
    ctx: &XdpContext,
    hop: &DsrHop6,
    dst: &Addr6,
    key: &FlowKey6,
    inner: &InnerHeader6,
    gue: bool,
) -> bool {
    let grow = if gue { GUE6_OVERHEAD } else { IP6IP6_OVERHEAD } as i32;
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -grow) } != 0 {
        return false;
    }
    let start = ctx.data();
    // The outer headers, for either mode (the inner header follows them).
    if start + ETH_LEN + GUE6_OVERHEAD as usize > ctx.data_end() {
        return false;
    }
    let inner_len = inner.payload_len().wrapping_add(IPV6_HEADER_LEN as u16);
    let (next, extra) = if gue {
        (PROTO_UDP, UDP_HEADER_LEN as u16)
    } else {
        (PROTO_IPV6, 0)
    };
    let p = start as *mut u8;
    unsafe {
        wire::copy_mac(p, hop.hop.dst_mac.as_ptr());
        wire::copy_mac(p.add(6), hop.hop.src_mac.as_ptr());
        wire::set16(p.add(12), ETH_P_IPV6.to_be());
        let ip = p.add(ETH_LEN);
        wire::set32(ip, inner.first);
        wire::set16(ip.add(4), inner_len.wrapping_add(extra).to_be());
        wire::set16(ip.add(6), u16::from_ne_bytes([next, OUTER_TTL]));
        write_addr(ip.add(8), &hop.src_addr);
        write_addr(ip.add(24), dst);
        if gue {
            let sport = gue_source_port6(key, hash_seed()).to_be();
            let dport = gue_port().to_be();
            let u = ip.add(IPV6_HEADER_LEN);
            wire::set16(u, sport);
            wire::set16(u.add(2), dport);
            wire::set16(
                u.add(4),
                inner_len.wrapping_add(UDP_HEADER_LEN as u16).to_be(),
            );
            wire::set16(
                u.add(6),
                gue6_checksum(&hop.src_addr, dst, sport, dport, inner),
            );
        }
    }
    true
}

/// Writes an address (wire-order words) at `p`.
#[inline(always)]
pub unsafe fn write_addr(p: *mut u8, a: &Addr6) {
    wire::set32(p, a[0]);
    wire::set32(p.add(4), a[1]);
    wire::set32(p.add(8), a[2]);
    wire::set32(p.add(12), a[3]);
}
