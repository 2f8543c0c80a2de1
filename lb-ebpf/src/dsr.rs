//! Direct server return (see `lb_common::encap`, docs/dsr.md): a packet `to_backend`
//! placed on a DSR backend keeps its addresses. `lb_xdp` leaves the backend's id for
//! `lb_dsr` ([`stash`]) and tail-calls it ([`after_route`]): a program of its own for a
//! stack of its own, as `lb_xdp`'s frame has no room for a route lookup and header
//! writes. `lb_dsr` wraps the packet for the backend's mode and sends it
//! ([`wrap_and_send`]): `dsr_l2` changes only the destination MAC, `ipip` and `gue` put
//! outer headers in front. A packet that would not fit the egress MTU once wrapped is
//! answered with a fragmentation-needed (`frag_needed`) if it must not be fragmented, and
//! dropped otherwise: XDP cannot fragment.
use aya_ebpf::{
    bindings::xdp_action, helpers::generated::bpf_xdp_adjust_head, programs::XdpContext,
};
use lb_common::{
    backend::Backend,
    counters::Reason,
    encap::{
        advertised_mtu, gue_source_port, gue_udp, outer_ipv4, overhead, DsrHop, Ipv4Header,
        BACKEND_F_DSR, BACKEND_F_DSR_L2, BACKEND_F_GUE, DSR_HOP_F_VIA_GATEWAY, GUE_OVERHEAD,
        IPIP_OVERHEAD, IP_DF, PROTO_IPIP, PROTO_UDP, UDP_HEADER_LEN,
    },
    flow::{FlowKey, FlowTarget},
    limits::PROGRAMS_SLOT_DSR,
    net::ETH_P_IPV4,
    nexthop::NextHop,
};

use crate::{
    count, dsr_hop, edge, frag_needed,
    lookup::backend_by_id,
    maps::{gue_port, hash_seed, DSR_HAND_OVER, EGRESS, PROGRAMS},
    packet::Packet,
    wire,
};

/// `lb_xdp`'s action word for a packet placed on a DSR backend (see [`stash`]): in the
/// hand-over range of `edge::is_hand_over`, beside its words (whose low byte is a reason,
/// all under 0x80).
pub const HAND_OVER_DSR: u32 = 0xffff_ff80;

const ETH_LEN: usize = 14;

/// Leaves `target` (its backend and service) and whether the packet opened a flow for
/// `lb_dsr`; returns the action word that hands the packet over.
#[inline(always)]
pub fn stash(target: &FlowTarget, new_flow: bool) -> u32 {
    if let Some(slot) = DSR_HAND_OVER.get_ptr_mut(0) {
        unsafe {
            *slot = HandOver {
                backend: target.backend,
                service: target.service,
                new_flow: new_flow as u32,
            }
        };
    }
    HAND_OVER_DSR
}

/// What `lb_xdp` leaves `lb_dsr` (see [`stash`]).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct HandOver {
    pub backend: u32,
    pub service: u32,
    /// 1 if the packet opened a flow.
    pub new_flow: u32,
}

/// Tail-calls `lb_dsr` for a packet placed on a DSR backend, and for one to a maybe-VIP
/// address that is not TCP (`route` leaves it as an unlisted port's action word, see
/// `edge::unlisted_action`): an ICMP error about a DSR flow goes on to its backend (see
/// `icmp_to_backend`), anything else is treated as `lb_edge` would. `None` for any other
/// action. If the call fails (no `lb_dsr` in the program array), a placed packet is
/// dropped; any other goes on as before DSR.
#[inline(always)]
pub fn after_route(ctx: &XdpContext, action: u32) -> Option<u32> {
    let placed = action == HAND_OVER_DSR;
    if !placed && action != edge::unlisted_action(Reason::PassNotTcp) {
        return None;
    }
    unsafe { PROGRAMS.tail_call(ctx, PROGRAMS_SLOT_DSR) };
    placed.then(|| count::drop(Reason::DropDsrUnavailable))
}

/// What the outer headers copy of the packet they wrap, read before the frame moves.
pub struct Inner {
    /// IP total length (wire order).
    pub tot_len: u16,
    pub tos: u8,
    /// Flags and fragment offset (wire order).
    pub frag_off: u16,
}

impl Inner {
    /// Of the IPv4 header at `ip`, which the caller proved inside the frame.
    #[inline(always)]
    pub unsafe fn of(ip: *const u8) -> Inner {
        Inner {
            tot_len: wire::get16(ip.add(2)),
            tos: *ip.add(1),
            frag_off: wire::get16(ip.add(6)),
        }
    }
}

/// A client packet `lb_xdp` placed on the DSR backend it stashed.
#[inline(always)]
pub fn handle(ctx: &XdpContext, pkt: &Packet) -> u32 {
    let Some(placed) = DSR_HAND_OVER.get(0).copied() else {
        return count::drop(Reason::DropDsrUnavailable);
    };
    let id = placed.backend;
    let target = FlowTarget::unrecorded(id, placed.service);
    count::to_backend(&target, pkt.frame_len, placed.new_flow != 0);
    count::attempt_to_backend(id, pkt.tcp_flags);
    let Some(backend) = backend_by_id(id) else {
        return count::drop(Reason::DropNoBackend);
    };
    let inner = unsafe { Inner::of(pkt.ip as *const u8) };
    wrap_and_send(ctx, id, &backend, &pkt.flow, &inner, false)
}

/// Wraps the packet (IPv4 right after the Ethernet header) for backend `id`'s mode and
/// sends it; `key` is its flow (client -> VIP), hashed into `gue`'s source port. `icmp`:
/// an ICMP error about the flow rather than a packet of it (never answered with
/// another).
#[inline(always)]
pub fn wrap_and_send(
    ctx: &XdpContext,
    id: u32,
    backend: &Backend,
    key: &FlowKey,
    inner: &Inner,
    icmp: bool,
) -> u32 {
    let hop = match dsr_hop::of(ctx, id, backend.addr) {
        Ok(hop) => hop,
        Err(action) => return action,
    };
    let mode = backend.flags & BACKEND_F_DSR;
    if mode & BACKEND_F_DSR_L2 != 0 && hop.flags & DSR_HOP_F_VIA_GATEWAY != 0 {
        return count::drop(Reason::DropDsrNotOnLink);
    }
    let len = u16::from_be(inner.tot_len);
    if len as u32 + overhead(mode) > hop.mtu {
        if inner.frag_off & IP_DF.to_be() != 0 && !icmp {
            return frag_needed::answer(ctx, advertised_mtu(hop.mtu, mode));
        }
        return count::drop(Reason::DropDsrTooBig);
    }
    let written = if mode & BACKEND_F_DSR_L2 != 0 {
        set_macs(ctx, &hop.hop)
    } else {
        push_outer(
            ctx,
            &hop,
            backend.addr,
            key,
            inner,
            mode & BACKEND_F_GUE != 0,
        )
    };
    if !written {
        return count::drop(Reason::DropDsrNoRoute);
    }
    xmit(ctx, &hop.hop)
}

/// `dsr_l2`: the backend's MAC as destination, the egress NIC's as source; nothing else
/// changes (the node hands the frame on within its segment rather than routing it, so
/// the TTL stays, as IPVS's direct routing leaves it).
#[inline(always)]
pub fn set_macs(ctx: &XdpContext, hop: &NextHop) -> bool {
    let start = ctx.data();
    if start + ETH_LEN > ctx.data_end() {
        return false;
    }
    let eth = start as *mut u8;
    unsafe {
        wire::copy_mac(eth, hop.dst_mac.as_ptr());
        wire::copy_mac(eth.add(6), hop.src_mac.as_ptr());
    }
    true
}

/// `ipip` and `gue`: room made in front of the IPv4 packet for an Ethernet header, the
/// outer IPv4 header from the node to `dst` (wire order), and for `gue` the UDP header.
#[inline(always)]
fn push_outer(
    ctx: &XdpContext,
    hop: &DsrHop,
    dst: u32,
    key: &FlowKey,
    inner: &Inner,
    gue: bool,
) -> bool {
    let grow = if gue { GUE_OVERHEAD } else { IPIP_OVERHEAD } as i32;
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -grow) } != 0 {
        return false;
    }
    let start = ctx.data();
    // The outer headers and the inner IPv4 header's first bytes, for either mode.
    if start + ETH_LEN + GUE_OVERHEAD as usize > ctx.data_end() {
        return false;
    }
    let len = u16::from_be(inner.tot_len);
    let (proto, extra) = if gue {
        (PROTO_UDP, UDP_HEADER_LEN as u16)
    } else {
        (PROTO_IPIP, 0)
    };
    let outer = outer_ipv4(
        hop.src_addr,
        dst,
        proto,
        len,
        extra,
        inner.tos,
        inner.frag_off,
    );
    let p = start as *mut u8;
    unsafe {
        wire::copy_mac(p, hop.hop.dst_mac.as_ptr());
        wire::copy_mac(p.add(6), hop.hop.src_mac.as_ptr());
        wire::set16(p.add(12), ETH_P_IPV4.to_be());
        write_ipv4(p.add(ETH_LEN), &outer);
        if gue {
            let udp = gue_udp(gue_source_port(key, hash_seed()), gue_port(), len);
            let u = p.add(ETH_LEN + 20);
            wire::set16(u, udp.src_port);
            wire::set16(u.add(2), udp.dst_port);
            wire::set16(u.add(4), udp.len);
            wire::set16(u.add(6), udp.check);
        }
    }
    true
}

/// Writes an IPv4 header as ten 16-bit stores (see `wire`).
#[inline(always)]
pub unsafe fn write_ipv4(p: *mut u8, h: &Ipv4Header) {
    let w: [u16; 10] = core::mem::transmute(*h);
    wire::set16(p, w[0]);
    wire::set16(p.add(2), w[1]);
    wire::set16(p.add(4), w[2]);
    wire::set16(p.add(6), w[3]);
    wire::set16(p.add(8), w[4]);
    wire::set16(p.add(10), w[5]);
    wire::set16(p.add(12), w[6]);
    wire::set16(p.add(14), w[7]);
    wire::set16(p.add(16), w[8]);
    wire::set16(p.add(18), w[9]);
}

/// Sends the wrapped frame out of the hop's NIC: XDP_TX when it is the ingress NIC,
/// XDP_REDIRECT through the EGRESS devmap otherwise.
#[inline(always)]
pub fn xmit(ctx: &XdpContext, hop: &NextHop) -> u32 {
    let same = hop.ifindex == ctx.ingress_ifindex() as u32;
    let action = if same {
        xdp_action::XDP_TX
    } else {
        match EGRESS.redirect(hop.ifindex, 0) {
            Ok(action) => action,
            // The kernel routes an `ipip` or `gue` packet to its backend all the same.
            Err(_) => return count::pass(Reason::PassEgressNotAttached),
        }
    };
    count::reason(if same {
        Reason::TxSameInterface
    } else {
        Reason::RedirectInterface
    });
    action
}
