//! UDP services over IPv6, both directions: as IPv4's (`udp_to_backend.rs`), a datagram
//! follows its flow entry or, without one, is placed by the service's Maglev table and
//! records its flow, which `lbd`'s sweep ages by `flow_timeouts.udp`; a reply with a
//! return entry gets the VIP back as source. A datagram placed on a DSR backend goes to
//! `lb_dsr6` unchanged (its return entry, written as NAT66's, is never used).
//!
//! The checksum rule differs from IPv4's: over IPv6 a UDP checksum is mandatory (RFC 8200
//! 8.1), so a datagram of ours with a zero one is dropped (`drop_udp_zero_checksum`), as
//! the receiving kernel would drop it, and an update that comes out zero is sent as
//! 0xffff (`lb_common::checksum::udp6_replace`).
use aya_ebpf::programs::XdpContext;
use lb_common::{
    counters::Reason,
    encap::BACKEND_F_DSR,
    flow::{FLOW_F_COUNTED, FLOW_F_DATAGRAM, FLOW_F_ESTABLISHED},
    ipv6::NatReturn6,
    net6::is_martian6,
    service_index::PackedMeta,
};

use crate::{
    count, dsr6, edge6,
    flow6::{self, backend6, followed, new_target, Placed6},
    forward6, lookup,
    maps::{FLOWS6, NEXTHOPS},
    parse6::Packet6,
    rewrite6, select6, trace6,
};

/// A datagram to a maybe-VIP address. `None`: no flow and no IPv6 UDP service at its
/// VIP:port, not ours.
#[inline(always)]
pub fn to_backend(ctx: &XdpContext, pkt: &Packet6) -> Option<u32> {
    let entry = FLOWS6.get_ptr_mut(pkt.flow);
    if let Some(entry) = entry {
        if let Some(placed) = followed(entry) {
            if let Some(action) = refused(pkt) {
                return Some(action);
            }
            let (target, backend, addr) = &placed;
            let now = lookup::now_secs();
            if target.last_seen != now {
                unsafe { (*entry).last_seen = now };
            }
            flow6::ensure_return(pkt, target, backend, addr);
            return Some(send(ctx, pkt, &placed, false));
        }
    }
    let service = flow6::service6(&pkt.flow)?;
    let why = refusal(pkt).or_else(|| {
        let martian = is_martian6(&pkt.flow.src_addr) || pkt.flow.src_addr == pkt.flow.dst_addr;
        martian.then_some(Reason::DropMartianSource)
    });
    if let Some(why) = why {
        return Some(trace6::refused(pkt, service.id(), count::refuse(why), why));
    }
    // Source rules decide on a datagram that opens a flow, as over IPv4.
    if let Some(action) = edge6::check(ctx, pkt, service) {
        return Some(action);
    }
    Some(match place(pkt, service, entry.is_some()) {
        Some((placed, new_flow)) => send(ctx, pkt, &placed, new_flow),
        None => {
            let why = Reason::DropNoBackend;
            trace6::refused(pkt, service.id(), count::drop(why), why)
        }
    })
}

/// A datagram whose tuple has the return entry at `entry`.
#[inline(always)]
pub fn to_client(ctx: &XdpContext, pkt: &Packet6, entry: *mut NatReturn6) -> u32 {
    if !pkt.valid {
        return count::pass(Reason::PassMalformedUdp);
    }
    if rewrite6::udp_check(pkt) == 0 {
        return count::drop(Reason::DropUdpZeroChecksum);
    }
    if !pkt.hop_allows() {
        return count::pass(Reason::PassTtlExpired);
    }
    let nat = unsafe { *entry };
    rewrite6::snat_udp(pkt, &nat.vip, nat.vport);
    count::to_client(nat.service, nat.backend, pkt.frame_len);
    let action = forward6::forward(ctx, pkt, unsafe {
        core::ptr::addr_of_mut!((*entry).nexthop)
    });
    trace6::to_client(pkt, nat.service, nat.backend, action)
}

/// The action for a datagram of a UDP service that is malformed, has no checksum, or
/// whose hop limit would expire (counted); `None` for any other.
#[inline(always)]
fn refused(pkt: &Packet6) -> Option<u32> {
    refusal(pkt).map(count::refuse)
}

/// Why a datagram of a UDP service is refused: malformed, no checksum, or a hop limit
/// that would expire.
#[inline(always)]
fn refusal(pkt: &Packet6) -> Option<Reason> {
    if !pkt.valid {
        return Some(Reason::DropMalformedUdp);
    }
    if rewrite6::udp_check(pkt) == 0 {
        return Some(Reason::DropUdpZeroChecksum);
    }
    if !pkt.hop_allows() {
        return Some(Reason::PassTtlExpired);
    }
    None
}

/// Places a datagram without a live entry by the service's table and records its flow.
#[inline(always)]
fn place(pkt: &Packet6, service: PackedMeta, replace: bool) -> Option<(Placed6, bool)> {
    let id = select6::by_table6(service, &pkt.flow);
    let (backend, addr) = backend6(id)?;
    let state = FLOW_F_COUNTED | FLOW_F_ESTABLISHED | FLOW_F_DATAGRAM;
    let target = new_target(id, service.id(), state, lookup::now_secs());
    flow6::record(pkt, &target, backend, addr, replace)
}

/// Rewrites a placed datagram towards its backend, counts it, forwards it.
#[inline(always)]
fn send(ctx: &XdpContext, pkt: &Packet6, placed: &Placed6, new_flow: bool) -> u32 {
    let (target, backend, addr) = placed;
    // Direct server return: handed on unchanged by `lb_dsr6`, which counts it, as a TCP
    // segment of a DSR service is (`to_backend6`).
    if backend.flags & BACKEND_F_DSR != 0 {
        return dsr6::hand_over(ctx, target.backend, target.service, new_flow);
    }
    count::to_backend(target, pkt.frame_len, new_flow);
    if new_flow {
        // The attempts a backend's ICMPv6 port unreachables are failures of (`icmp6_nat`).
        count::datagram_flow(target.backend);
    }
    rewrite6::dnat_udp(pkt, addr, backend.port);
    let cache = NEXTHOPS
        .get_ptr_mut(target.backend)
        .unwrap_or(core::ptr::null_mut());
    let action = forward6::forward(ctx, pkt, cache);
    trace6::to_backend(pkt, target, new_flow, action)
}
