//! ICMP errors about a NAT flow, translated as the flow's own packets are, so that the
//! end they are for can match them to its socket (Linux matches an error by the addresses
//! and ports it quotes):
//!
//! - to a VIP, about a backend's reply (VIP:port -> client, as it left this node), from
//!   a router on the client's side (fragmentation needed for a reply too big for a link,
//!   a client's host unreachable): the outer destination and the quoted source become the
//!   backend's address and port, and the error goes to the backend
//!   (`icmp_to_backend` finds the flow and calls [`to_backend`]);
//! - from a backend, about a client's packet (client -> backend:port, as this node sent
//!   it), e.g. a UDP port unreachable: the outer source and the quoted destination become
//!   the VIP and its port, and the error goes to the client ([`from_backend`], in
//!   `lb_udp`, which `lb_xdp` hands ICMP from a maybe-backend to). A port unreachable
//!   about a datagram is counted on the backend, a UDP service's passive health signal.
//!
//! Every checksum the changed words are in is updated incrementally: the outer IPv4
//! header's, the quoted IPv4 header's, the quoted TCP or UDP checksum when the error quotes
//! it (routers must quote 8 bytes of the transport header; Linux quotes up to 576 bytes in
//! all), and the ICMP checksum over all of them.
use aya_ebpf::programs::XdpContext;
use lb_common::{
    backend::Backend,
    checksum::{replace2, replace4, udp_replace},
    counters::Reason,
    encap::{is_forwarded_icmp_error, ICMP_DEST_UNREACH, PROTO_ICMP, PROTO_UDP},
    flow::FlowKey,
    net::{FAMILY_IPV4, PROTO_TCP},
};
use network_types::{eth::EthHdr, ip::Ipv4Hdr};

use crate::{count, flow_table, forward::forward_frame, maps::NEXTHOPS, wire};

const ETH_LEN: usize = 14;
/// The outer IPv4 header (without options).
const OUTER: usize = ETH_LEN;
/// The ICMP header.
const ICMP: usize = OUTER + 20;
/// The quoted IPv4 header (without options).
const QUOTED: usize = ICMP + 8;
/// The quoted transport header.
const QUOTED_L4: usize = QUOTED + 20;
/// What an error must hold to be translated: up to the quoted ports.
pub const NEEDED: usize = QUOTED_L4 + 4;
/// Offsets of the TCP and UDP checksums in their headers.
const TCP_CHECK: usize = 16;
const UDP_CHECK: usize = 6;
const IP_FRAGMENT: u16 = 0x3fff;
/// The code of a destination unreachable that says nothing listens on the port.
const ICMP_PORT_UNREACH: u8 = 3;

/// The words one translation changes: an outer address, and the same end's address
/// and port in the quoted packet.
struct End {
    outer_addr: usize,
    quoted_addr: usize,
    quoted_port: usize,
}

/// The quoted packet's source (a reply's VIP:port) and the outer destination.
const QUOTED_SOURCE: End = End {
    outer_addr: OUTER + 16,
    quoted_addr: QUOTED + 12,
    quoted_port: QUOTED_L4,
};

/// The quoted packet's destination (a backend's address and port) and the outer source.
const QUOTED_DESTINATION: End = End {
    outer_addr: OUTER + 12,
    quoted_addr: QUOTED + 16,
    quoted_port: QUOTED_L4 + 2,
};

/// An ICMP error to a VIP about `backend`'s reply on a NAT flow (the caller found it,
/// proved [`NEEDED`] bytes in the frame, the outer header and the quoted one plain
/// IPv4, and the quoted protocol `proto` TCP or UDP): translated and sent to the backend.
#[inline(always)]
pub fn to_backend(ctx: &XdpContext, id: u32, backend: &Backend, proto: u8) -> u32 {
    let start = ctx.data();
    // Checked again: the verifier does not carry the caller's check through `ctx`.
    if start + NEEDED > ctx.data_end() {
        return count::pass(Reason::PassNotTcp);
    }
    // SAFETY: the TTL byte is inside the frame (checked above).
    if unsafe { *(start as *const u8).add(OUTER + 8) } <= 1 {
        return count::pass(Reason::PassTtlExpired);
    }
    translate(ctx, &QUOTED_SOURCE, proto, backend.addr, backend.port);
    let cache = NEXTHOPS.get_ptr_mut(id).unwrap_or(core::ptr::null_mut());
    forward_frame(
        ctx,
        start as *mut EthHdr,
        (start + OUTER) as *mut Ipv4Hdr,
        PROTO_ICMP,
        cache,
    )
}

/// An ICMP frame from a maybe-backend, handed over by `lb_xdp`: an error about a
/// client's packet of a NAT flow (client -> backend:port) is translated and sent to the
/// client; anything else is passed as before.
#[inline(always)]
pub fn from_backend(ctx: &XdpContext) -> u32 {
    let start = ctx.data();
    if start + NEEDED > ctx.data_end() {
        return count::pass(Reason::PassNotTcp);
    }
    let p = start as *mut u8;
    let Some(proto) = (unsafe { quoted_protocol(p) }) else {
        return count::pass(Reason::PassNotTcp);
    };
    // SAFETY: every offset read is below `NEEDED` (checked above).
    let (outer_src, outer_dst, ttl, quoted_src, quoted_dst, sport, dport) = unsafe {
        (
            wire::get32(p.add(OUTER + 12)),
            wire::get32(p.add(OUTER + 16)),
            *p.add(OUTER + 8),
            wire::get32(p.add(QUOTED + 12)),
            wire::get32(p.add(QUOTED + 16)),
            wire::get16(p.add(QUOTED_L4)),
            wire::get16(p.add(QUOTED_L4 + 2)),
        )
    };
    // From the backend the quoted packet went to, to the client that sent it: the
    // client's packet, as the backend got it, reversed is the flow's reply direction.
    if outer_src != quoted_dst || outer_dst != quoted_src {
        return count::pass(Reason::PassNotTcp);
    }
    let key = FlowKey {
        src_addr: quoted_dst,
        dst_addr: quoted_src,
        src_port: dport,
        dst_port: sport,
        proto,
        family: FAMILY_IPV4,
        _pad: [0; 2],
    };
    let Some(entry) = flow_table::find_return(&key) else {
        return count::pass(Reason::PassNotTcp);
    };
    if ttl <= 1 {
        return count::pass(Reason::PassTtlExpired);
    }
    let nat = entry.translation();
    // SAFETY: the type and code bytes are below `NEEDED` (checked above).
    let (icmp_type, code) = unsafe { (*p.add(ICMP), *p.add(ICMP + 1)) };
    if proto == PROTO_UDP && icmp_type == ICMP_DEST_UNREACH && code == ICMP_PORT_UNREACH {
        count::unreachable(nat.backend);
    }
    translate(ctx, &QUOTED_DESTINATION, proto, nat.vip, nat.vport);
    let cache = entry.route();
    forward_frame(
        ctx,
        start as *mut EthHdr,
        (start + OUTER) as *mut Ipv4Hdr,
        PROTO_ICMP,
        cache,
    )
}

/// The quoted packet's protocol (TCP or UDP) if the frame at `p` is an ICMP error over
/// plain IPv4, not a fragment, quoting a plain IPv4 header; the caller proved [`NEEDED`]
/// bytes.
#[inline(always)]
pub unsafe fn quoted_protocol(p: *const u8) -> Option<u8> {
    let (vihl, frag_off, proto, icmp_type, quoted_vihl, quoted_proto) = (
        *p.add(OUTER),
        wire::get16(p.add(OUTER + 6)),
        *p.add(OUTER + 9),
        *p.add(ICMP),
        *p.add(QUOTED),
        *p.add(QUOTED + 9),
    );
    let plain = vihl == 0x45 && frag_off & IP_FRAGMENT.to_be() == 0 && quoted_vihl == 0x45;
    let quoted = quoted_proto == PROTO_TCP || quoted_proto == PROTO_UDP;
    (plain && proto == PROTO_ICMP && is_forwarded_icmp_error(icmp_type) && quoted)
        .then_some(quoted_proto)
}

/// Puts `addr` and `port` (wire order) at `end` of the error, with every checksum
/// updated. The caller proved [`NEEDED`] bytes in the frame; checked again here for the
/// verifier.
#[inline(always)]
fn translate(ctx: &XdpContext, end: &End, proto: u8, addr: u32, port: u16) {
    let start = ctx.data();
    if start + NEEDED > ctx.data_end() {
        return;
    }
    let p = start as *mut u8;
    // SAFETY: every offset below `NEEDED` is inside the frame (checked above); the
    // transport checksum is written only where it is checked inside.
    unsafe {
        let outer_old = wire::get32(p.add(end.outer_addr));
        wire::set32(p.add(end.outer_addr), addr);
        let outer_check = wire::get16(p.add(OUTER + 10));
        wire::set16(p.add(OUTER + 10), replace4(outer_check, outer_old, addr));

        let old_addr = wire::get32(p.add(end.quoted_addr));
        let old_port = wire::get16(p.add(end.quoted_port));
        let quoted_check = wire::get16(p.add(QUOTED + 10));
        let new_quoted_check = replace4(quoted_check, old_addr, addr);
        wire::set32(p.add(end.quoted_addr), addr);
        wire::set16(p.add(QUOTED + 10), new_quoted_check);
        wire::set16(p.add(end.quoted_port), port);
        let mut icmp = replace4(wire::get16(p.add(ICMP + 2)), old_addr, addr);
        icmp = replace2(icmp, quoted_check, new_quoted_check);
        icmp = replace2(icmp, old_port, port);

        // The quoted transport checksum covers the pseudo-header's addresses and the
        // ports: updated as the flow's packets are, if the error quotes it. Constant
        // offsets in each branch: a loader without CAP_PERFMON refuses a pointer moved
        // by a variable.
        let changed = (old_addr, addr, old_port, port);
        if proto == PROTO_TCP {
            if start + QUOTED_L4 + TCP_CHECK + 2 <= ctx.data_end() {
                icmp = update_check(p.add(QUOTED_L4 + TCP_CHECK), false, changed, icmp);
            }
        } else if start + QUOTED_L4 + UDP_CHECK + 2 <= ctx.data_end() {
            icmp = update_check(p.add(QUOTED_L4 + UDP_CHECK), true, changed, icmp);
        }
        wire::set16(p.add(ICMP + 2), icmp);
    }
}

/// Updates the quoted transport checksum at `at` for `changed` (old address, new address,
/// old port, new port), by UDP's rules if `udp`; returns the ICMP checksum `icmp`
/// updated for it.
#[inline(always)]
unsafe fn update_check(at: *mut u8, udp: bool, changed: (u32, u32, u16, u16), icmp: u16) -> u16 {
    let (old_addr, addr, old_port, port) = changed;
    let old = wire::get16(at);
    let new = if udp {
        udp_replace(old, old_addr, addr, old_port, port)
    } else {
        replace2(replace4(old, old_addr, addr), old_port, port)
    };
    wire::set16(at, new);
    replace2(icmp, old, new)
}
