//! Direct server return for IPv6 services (see `lb_common::encap6`, docs/dsr.md "IPv6"):
//! `lb_v6` places a client packet as for NAT66, and for a DSR backend hands it over
//! ([`hand_over`]) to `lb_dsr6`, a program of its own (`lb_v6`'s frame has no room for a
//! route lookup and header writes), which wraps it for the backend's mode and sends it
//! ([`wrap_and_send`]). The packet keeps its addresses and hop limit: `dsr_l2` changes
//! only the MACs.
use aya_ebpf::{macros::xdp, programs::XdpContext};
use lb_common::{
    counters::Reason,
    encap::{BACKEND_F_DSR, BACKEND_F_DSR_L2, DSR_HOP_F_VIA_GATEWAY},
    encap6::overhead6,
    flow::FlowTarget,
    ipv6::{Addr6, FlowKey6},
    limits::PROGRAMS_SLOT_DSR6,
};

use crate::{
    count, dsr, dsr_hop6,
    flow6::backend6,
    maps::{DSR_HAND_OVER, PROGRAMS},
    parse6::{self, Packet6, IP6_LEN},
};

/// Leaves `target` for `lb_dsr6` and tail-calls it; returns only if the call fails (no
/// `lb_dsr6` in the program array), dropping the packet, counted.
#[inline(always)]
pub fn hand_over(ctx: &XdpContext, target: &FlowTarget, new_flow: bool) -> u32 {
    dsr::stash(target, new_flow);
    unsafe { PROGRAMS.tail_call(ctx, PROGRAMS_SLOT_DSR6) };
    count::drop(Reason::DropDsrUnavailable)
}

/// An IPv6 client packet `lb_v6` placed on the DSR backend it stashed. Parsed again, as a
/// tail call keeps only the context.
#[xdp]
pub fn lb_dsr6(ctx: XdpContext) -> u32 {
    match parse6::parse(&ctx) {
        Ok(pkt) => handle(&ctx, &pkt),
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
    let ip_len = pkt.frame_len as u32 - 14;
    wrap_and_send(ctx, id, backend.flags, &addr, &pkt.flow, ip_len)
}

/// Wraps the IPv6 packet of `ip_len` bytes (right after the Ethernet header) for backend
/// `id` at `addr`, whose mode is in `flags`, and sends it; `key` is its flow.
#[inline(always)]
fn wrap_and_send(
    ctx: &XdpContext,
    id: u32,
    flags: u8,
    addr: &Addr6,
    _key: &FlowKey6,
    ip_len: u32,
) -> u32 {
    const _: () = assert!(IP6_LEN == 40);
    let hop = match dsr_hop6::of(ctx, id, addr) {
        Ok(hop) => hop,
        Err(action) => return action,
    };
    let mode = flags & BACKEND_F_DSR;
    if mode & BACKEND_F_DSR_L2 != 0 && hop.flags & DSR_HOP_F_VIA_GATEWAY != 0 {
        return count::drop(Reason::DropDsrNotOnLink);
    }
    if ip_len + overhead6(mode) > hop.mtu {
        return count::drop(Reason::DropDsrTooBig);
    }
    if mode & BACKEND_F_DSR_L2 == 0 || !dsr::set_macs(ctx, &hop.hop) {
        return count::drop(Reason::DropDsrNoRoute);
    }
    dsr::xmit(ctx, &hop.hop)
}
