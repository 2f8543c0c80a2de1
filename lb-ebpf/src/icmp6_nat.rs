//! ICMPv6 errors about a NAT66 flow, translated as `icmp_nat` translates IPv4's, so that
//! the end they are for can match them to its socket (Linux matches an ICMPv6 error by
//! the addresses and ports it quotes). The errors are RFC 4443's: destination
//! unreachable, packet too big (path MTU discovery, which IPv6 routers never fragment
//! for), time exceeded, parameter problem.
//!
//! - to a VIP, about a backend's reply (VIP:port -> client, as it left this node), from a
//!   router on the client's side or the client: the flow entry (else the service's table)
//!   names the backend; the outer destination and the quoted source become its address
//!   and port, and the error goes to the backend ([`to_backend`]); for a DSR backend the
//!   error goes unchanged, wrapped by `lb_dsr6` (`icmp6_to_backend`);
//! - from a backend, about a client's packet (client -> backend:port, as this node sent
//!   it), e.g. a UDP port unreachable: found by the flow's return entry; the outer source
//!   and the quoted destination become the VIP and its port, and the error goes to the
//!   client ([`from_backend`]). A port unreachable about a datagram is counted on the
//!   backend, a UDP service's passive health signal, as over IPv4.
//!
//! IPv6 has no header checksum. The ICMPv6 checksum covers a pseudo-header with the outer
//! addresses (RFC 4443 2.3), so the outer change enters it as well as the quoted
//! address, port and transport checksum; the quoted TCP or UDP checksum is updated when
//! the error quotes it (RFC 4443 quotes as much of the packet as fits in 1280 bytes, so
//! in practice it always does). Everything else ICMPv6 (neighbour discovery, echo, an
//! error about no flow of ours) is passed untouched, as before.
use aya_ebpf::{helpers::generated::bpf_xdp_get_buff_len, programs::XdpContext};
use lb_common::{
    checksum::{replace16, replace2, udp6_replace},
    counters::Reason,
    encap::{BACKEND_F_DSR, PROTO_UDP},
    filter::{FILTER_BACKENDS, FILTER_VIPS},
    ipv6::{fold, Addr6, FlowKey6, FAMILY_IPV6, PROTO_ICMPV6},
    net::PROTO_TCP,
};
use network_types::eth::EthHdr;

use crate::{
    count, dsr6,
    flow6::{backend6, service6},
    forward6, lookup,
    maps::{FLOWS6, NEXTHOPS, RETURN_FLOWS6},
    parse6::Packet6,
    rewrite6::{swap_addr, swap_port},
    select6,
    v6::addr_at,
    wire,
};

const ETH_LEN: usize = 14;
/// The outer IPv6 header.
const OUTER: usize = ETH_LEN;
/// The ICMPv6 header.
const ICMP: usize = OUTER + 40;
/// The quoted IPv6 header.
const QUOTED: usize = ICMP + 8;
/// The quoted transport header.
const QUOTED_L4: usize = QUOTED + 40;
/// What an error must hold to be translated: up to the quoted ports.
const NEEDED: usize = QUOTED_L4 + 4;
/// Offsets of the TCP and UDP checksums in their headers.
const TCP_CHECK: usize = 16;
const UDP_CHECK: usize = 6;

/// ICMPv6 error types (RFC 4443 3.1 to 3.4) translated here.
const DEST_UNREACH: u8 = 1;
const PARAMETER_PROBLEM: u8 = 4;
/// The code of a destination unreachable that says nothing listens on the port.
const PORT_UNREACH: u8 = 4;

/// The words one translation changes: an outer address, and the same end's address and
/// port in the quoted packet.
struct End {
    outer_addr: usize,
    quoted_addr: usize,
    quoted_port: usize,
}

/// The quoted packet's source (a reply's VIP:port) and the outer destination.
const QUOTED_SOURCE: End = End {
    outer_addr: OUTER + 24,
    quoted_addr: QUOTED + 8,
    quoted_port: QUOTED_L4,
};

/// The quoted packet's destination (a backend's address and port) and the outer source.
const QUOTED_DESTINATION: End = End {
    outer_addr: OUTER + 8,
    quoted_addr: QUOTED + 24,
    quoted_port: QUOTED_L4 + 2,
};

/// An ICMPv6 error's quoted protocol (TCP or UDP) and its ICMPv6 message length.
#[derive(Clone, Copy)]
struct Error6 {
    proto: u8,
    len: usize,
}

/// An IPv6 frame `lb_v6` found neither TCP nor UDP: an ICMPv6 error about a NAT66 flow
/// is translated and sent on; anything else is passed as before (`pass_not_tcp`).
#[inline(always)]
pub fn handle(ctx: &XdpContext) -> u32 {
    let Some(error) = error_of(ctx) else {
        return count::pass(Reason::PassNotTcp);
    };
    let start = ctx.data();
    if start + NEEDED > ctx.data_end() {
        return count::pass(Reason::PassNotTcp);
    }
    // SAFETY: both addresses are inside the frame (checked above).
    let (outer_src, outer_dst) =
        unsafe { (addr_at(start + OUTER + 8), addr_at(start + OUTER + 24)) };
    if lookup::may_be(FILTER_VIPS, fold(&outer_dst)) {
        if let Some(action) = to_backend(ctx, error) {
            return action;
        }
    }
    if lookup::may_be(FILTER_BACKENDS, fold(&outer_src)) {
        if let Some(action) = from_backend(ctx, error) {
            return action;
        }
    }
    count::pass(Reason::PassNotTcp)
}

/// The frame's error, if it is an ICMPv6 error right after the fixed header, whose
/// payload length the frame holds, quoting a fixed IPv6 header and the ports of TCP or
/// UDP right after it.
#[inline(always)]
fn error_of(ctx: &XdpContext) -> Option<Error6> {
    let start = ctx.data();
    if start + NEEDED > ctx.data_end() {
        return None;
    }
    let p = start as *const u8;
    // SAFETY: every offset read is below `NEEDED` (checked above).
    let (next, payload_len, icmp_type, quoted_version, quoted_next) = unsafe {
        (
            *p.add(OUTER + 6),
            u16::from_be(wire::get16(p.add(OUTER + 4))) as usize,
            *p.add(ICMP),
            *p.add(QUOTED) >> 4,
            *p.add(QUOTED + 6),
        )
    };
    let is_error = (DEST_UNREACH..=PARAMETER_PROBLEM).contains(&icmp_type);
    let quoted = quoted_version == 6 && (quoted_next == PROTO_TCP || quoted_next == PROTO_UDP);
    if next != PROTO_ICMPV6 || !is_error || !quoted || ICMP + payload_len < NEEDED {
        return None;
    }
    // The payload may end before the frame (link padding), never after it; the frame's
    // length from the helper, as in `parse6`.
    let frame_len = unsafe { bpf_xdp_get_buff_len(ctx.ctx) } as usize;
    if OUTER + 40 + payload_len > frame_len {
        return None;
    }
    Some(Error6 {
        proto: quoted_next,
        len: payload_len,
    })
}

/// An error to a VIP about a backend's reply on a NAT66 flow: translated and sent to the
/// backend. `None`: the quoted reply did not leave from the VIP the error came back to,
/// or no flow or service claims it.
#[inline(always)]
fn to_backend(ctx: &XdpContext, error: Error6) -> Option<u32> {
    let start = ctx.data();
    if start + NEEDED > ctx.data_end() {
        return None;
    }
    let p = start as *const u8;
    // The quoted reply is VIP:port -> client; its flow is that reversed.
    // SAFETY: every offset read is below `NEEDED` (checked above).
    let (key, outer_dst) = unsafe {
        (
            FlowKey6 {
                src_addr: addr_at(start + QUOTED + 24),
                dst_addr: addr_at(start + QUOTED + 8),
                src_port: wire::get16(p.add(QUOTED_L4 + 2)),
                dst_port: wire::get16(p.add(QUOTED_L4)),
                proto: error.proto,
                family: FAMILY_IPV6,
                _pad: [0; 2],
            },
            addr_at(start + OUTER + 24),
        )
    };
    if key.dst_addr != outer_dst {
        return None;
    }
    let id = match unsafe { FLOWS6.get(key) } {
        Some(flow) => flow.backend,
        None => select6::by_table6(service6(&key)?, &key),
    };
    let (backend, addr) = backend6(id)?;
    if backend.flags & BACKEND_F_DSR != 0 {
        // Wrapped for the backend by `lb_dsr6` (see `icmp6_to_backend`).
        return (error.proto == PROTO_TCP)
            .then(|| dsr6::hand_over(ctx, id, backend.service, false));
    }
    if !hop_allows(start) {
        return Some(count::pass(Reason::PassTtlExpired));
    }
    translate(ctx, &QUOTED_SOURCE, error, &addr, backend.port);
    let cache = NEXTHOPS.get_ptr_mut(id).unwrap_or(core::ptr::null_mut());
    Some(send(ctx, error, cache))
}

/// An error from a backend about a client's packet of a NAT66 flow (client ->
/// backend:port): translated and sent to the client. `None`: the backend did not send it
/// itself about a packet it got (a router between may have), or no flow of ours has the
/// quoted tuple.
#[inline(always)]
fn from_backend(ctx: &XdpContext, error: Error6) -> Option<u32> {
    let start = ctx.data();
    if start + NEEDED > ctx.data_end() {
        return None;
    }
    let p = start as *const u8;
    // SAFETY: every offset read is below `NEEDED` (checked above).
    let key = unsafe {
        // The flow's reply direction: the quoted packet reversed.
        let key = FlowKey6 {
            src_addr: addr_at(start + QUOTED + 24),
            dst_addr: addr_at(start + QUOTED + 8),
            src_port: wire::get16(p.add(QUOTED_L4 + 2)),
            dst_port: wire::get16(p.add(QUOTED_L4)),
            proto: error.proto,
            family: FAMILY_IPV6,
            _pad: [0; 2],
        };
        if addr_at(start + OUTER + 8) != key.src_addr || addr_at(start + OUTER + 24) != key.dst_addr
        {
            return None;
        }
        key
    };
    let entry = RETURN_FLOWS6.get_ptr_mut(key)?;
    if !hop_allows(start) {
        return Some(count::pass(Reason::PassTtlExpired));
    }
    let nat = unsafe { *entry };
    // SAFETY: the type and code bytes are below `NEEDED` (checked above).
    let (icmp_type, code) = unsafe { (*p.add(ICMP), *p.add(ICMP + 1)) };
    if error.proto == PROTO_UDP && icmp_type == DEST_UNREACH && code == PORT_UNREACH {
        count::unreachable(nat.backend);
    }
    translate(ctx, &QUOTED_DESTINATION, error, &nat.vip, nat.vport);
    let cache = unsafe { core::ptr::addr_of_mut!((*entry).nexthop) };
    Some(send(ctx, error, cache))
}

/// Whether the outer hop limit lets the error be forwarded (else the kernel answers).
#[inline(always)]
fn hop_allows(start: usize) -> bool {
    // SAFETY: callers proved `NEEDED` bytes, the hop limit among them.
    unsafe { *((start + OUTER + 7) as *const u8) > 1 }
}

/// Puts `addr` and `port` (wire order) at `end` of the error, with the ICMPv6 checksum
/// and the quoted transport checksum updated.
#[inline(always)]
fn translate(ctx: &XdpContext, end: &End, error: Error6, addr: &Addr6, port: u16) {
    let start = ctx.data();
    if start + NEEDED > ctx.data_end() {
        return;
    }
    let p = start as *mut u8;
    // SAFETY: every offset below `NEEDED` is inside the frame (checked above); the
    // transport checksum is written only where it is checked inside.
    unsafe {
        let outer_old = swap_addr(p.add(end.outer_addr), addr);
        let quoted_old = swap_addr(p.add(end.quoted_addr), addr);
        let old_port = swap_port(p.add(end.quoted_port), port);
        // The pseudo-header's address, then the quoted words.
        let mut icmp = replace16(wire::get16(p.add(ICMP + 2)), &outer_old, addr);
        icmp = replace16(icmp, &quoted_old, addr);
        icmp = replace2(icmp, old_port, port);
        // The quoted transport checksum covers the quoted pseudo-header's addresses and
        // the ports: updated as the flow's packets are, if the error quotes it (inside
        // its payload length as well as the frame). Constant offsets in each branch: a
        // loader without CAP_PERFMON refuses a pointer moved by a variable.
        if error.proto == PROTO_TCP {
            let at = QUOTED_L4 + TCP_CHECK;
            if ICMP + error.len >= at + 2 && start + at + 2 <= ctx.data_end() {
                let old = wire::get16(p.add(at));
                let new = replace2(replace16(old, &quoted_old, addr), old_port, port);
                wire::set16(p.add(at), new);
                icmp = replace2(icmp, old, new);
            }
        } else {
            let at = QUOTED_L4 + UDP_CHECK;
            if ICMP + error.len >= at + 2 && start + at + 2 <= ctx.data_end() {
                let old = wire::get16(p.add(at));
                let new = udp6_replace(old, &quoted_old, addr, old_port, port);
                wire::set16(p.add(at), new);
                icmp = replace2(icmp, old, new);
            }
        }
        wire::set16(p.add(ICMP + 2), icmp);
    }
}

/// Routes and sends the translated error (see `forward6`), `cache` the next-hop cache of
/// its destination (null for none).
#[inline(always)]
fn send(ctx: &XdpContext, error: Error6, cache: *mut lb_common::nexthop::NextHop) -> u32 {
    let start = ctx.data();
    if start + NEEDED > ctx.data_end() {
        return count::pass(Reason::PassNotTcp);
    }
    // SAFETY: both addresses are inside the frame (checked above).
    let (src, dst) = unsafe { (addr_at(start + OUTER + 8), addr_at(start + OUTER + 24)) };
    let pkt = Packet6 {
        eth: start as *mut EthHdr,
        ip: (start + OUTER) as *mut u8,
        l4: (start + ICMP) as *mut u8,
        flow: FlowKey6 {
            src_addr: src,
            dst_addr: dst,
            src_port: 0,
            dst_port: 0,
            proto: PROTO_ICMPV6,
            family: FAMILY_IPV6,
            _pad: [0; 2],
        },
        tcp_flags: 0,
        has_payload: true,
        valid: true,
        frame_len: (ICMP + error.len) as u64,
    };
    forward6::forward(ctx, &pkt, cache)
}
