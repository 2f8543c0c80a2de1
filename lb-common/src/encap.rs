//! Direct server return (see docs/dsr.md): how a service's packets reach its backends
//! without their destination being rewritten, and the outer headers the `ipip` and `gue`
//! modes put in front of them. The load balancer builds these headers, the backends'
//! decapsulator (`lb-decap`) strips them, and tests check them byte for byte: all three
//! use the layouts and functions here.
//!
//! - `dsr_l2`: only the destination MAC changes; the backend is on the node's own segment.
//! - `ipip`: an outer IPv4 header (protocol 4) from the node to the backend.
//! - `gue`: an outer IPv4 header and a UDP header (to [`DEFAULT_GUE_PORT`] unless
//!   configured), whose payload is the client's IP packet itself: GUE "variant 1"
//!   (draft-ietf-intarea-gue, section 4: no GUE header; the first nibble of the payload,
//!   4, says IPv4), as Katran sends it. The UDP checksum is 0 (RFC 768: none, allowed
//!   over IPv4), and the source port is hashed from the inner 5-tuple into the ephemeral
//!   range ([`gue_source_port`]), so NIC RSS and fabric ECMP that hash UDP ports spread
//!   the flows of one node-backend pair.
//!
//! Byte order: every field of the header structs is in wire order (stored as the bytes
//! appear on the wire, loaded natively); functions take and return host-order numbers
//! where their doc says so.
use crate::{checksum::fold, flow::FlowKey, hash::mix32};

/// Bits of `Backend::flags` (see [`crate::backend`]) naming a backend's forwarding mode;
/// none set is NAT. The mode is the service's, copied to each backend so the data path
/// knows it from the backend it already reads for every packet.
pub const BACKEND_F_DSR_L2: u8 = 1 << 1;
/// Outer IPv4 header (IPIP) to the backend.
pub const BACKEND_F_IPIP: u8 = 1 << 2;
/// Outer IPv4 and UDP headers (GUE variant 1) to the backend.
pub const BACKEND_F_GUE: u8 = 1 << 3;
/// Any direct-server-return mode.
pub const BACKEND_F_DSR: u8 = BACKEND_F_DSR_L2 | BACKEND_F_IPIP | BACKEND_F_GUE;

/// IP protocol number of IPv4-in-IPv4.
pub const PROTO_IPIP: u8 = 4;
/// IP protocol number of UDP.
pub const PROTO_UDP: u8 = 17;
/// IP protocol number of ICMP.
pub const PROTO_ICMP: u8 = 1;

/// Length of an IPv4 header without options.
pub const IPV4_HEADER_LEN: usize = 20;
/// Length of a UDP header.
pub const UDP_HEADER_LEN: usize = 8;
/// Bytes `ipip` adds to a packet.
pub const IPIP_OVERHEAD: u32 = IPV4_HEADER_LEN as u32;
/// Bytes `gue` adds to a packet.
pub const GUE_OVERHEAD: u32 = (IPV4_HEADER_LEN + UDP_HEADER_LEN) as u32;

/// The UDP destination port of `gue` unless `dsr.gue_port` says otherwise (Katran's,
/// and what `lb-decap` listens for by default).
pub const DEFAULT_GUE_PORT: u16 = 6080;
/// The lowest UDP source port [`gue_source_port`] gives (the IANA ephemeral range,
/// 49152-65535, RFC 6335).
pub const GUE_SOURCE_PORT_MIN: u16 = 0xc000;

/// TTL of the outer header.
pub const OUTER_TTL: u8 = 64;
/// The IPv4 don't-fragment bit of the flags and fragment offset word (host order).
pub const IP_DF: u16 = 0x4000;

/// Bytes `mode` (a `BACKEND_F_*` bit set) adds to a packet.
#[inline(always)]
pub const fn overhead(mode: u8) -> u32 {
    if mode & BACKEND_F_GUE != 0 {
        GUE_OVERHEAD
    } else if mode & BACKEND_F_IPIP != 0 {
        IPIP_OVERHEAD
    } else {
        0
    }
}

/// An IPv4 header without options, every multi-byte field in wire order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Ipv4Header {
    /// Version (4) and header length in words (5).
    pub vihl: u8,
    pub tos: u8,
    /// Total length (wire order).
    pub tot_len: u16,
    /// Identification (wire order).
    pub id: u16,
    /// Flags and fragment offset (wire order).
    pub frag_off: u16,
    pub ttl: u8,
    pub proto: u8,
    /// Header checksum (wire order).
    pub check: u16,
    /// Source address (wire order).
    pub src_addr: u32,
    /// Destination address (wire order).
    pub dst_addr: u32,
}
const _: () = assert!(core::mem::size_of::<Ipv4Header>() == IPV4_HEADER_LEN);

/// A UDP header, every field in wire order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct UdpHeader {
    /// Source port (wire order).
    pub src_port: u16,
    /// Destination port (wire order).
    pub dst_port: u16,
    /// Length of header and payload (wire order).
    pub len: u16,
    /// Checksum (wire order); 0 = none.
    pub check: u16,
}
const _: () = assert!(core::mem::size_of::<UdpHeader>() == UDP_HEADER_LEN);

/// The checksum of an IPv4 header (its `check` field taken as 0), in wire order.
#[inline(always)]
pub const fn ipv4_header_checksum(h: &Ipv4Header) -> u16 {
    // One's-complement sums do not depend on byte order so long as every word is loaded
    // the same way (RFC 1071 section 2(B)): the native loads of wire-order words sum to
    // the wire-order checksum.
    let sum = (h.vihl as u64 | (h.tos as u64) << 8)
        + h.tot_len as u64
        + h.id as u64
        + h.frag_off as u64
        + (h.ttl as u64 | (h.proto as u64) << 8)
        + (h.src_addr & 0xffff) as u64
        + (h.src_addr >> 16) as u64
        + (h.dst_addr & 0xffff) as u64
        + (h.dst_addr >> 16) as u64;
    !fold(sum)
}

/// The outer IPv4 header in front of an inner IPv4 packet of `inner_len` bytes (host
/// order): from `src` to `dst` (wire order), protocol `proto` ([`PROTO_IPIP`] or
/// [`PROTO_UDP`]), `extra` more header bytes before the inner packet (the UDP header's
/// 8 for `gue`). It copies the inner packet's TOS (so its DSCP keeps its meaning on the
/// way to the backend) and `inner_frag_off`'s don't-fragment bit (wire order), as the
/// kernel's own tunnels do (`ip_tunnel_xmit`): a packet that must not be fragmented is
/// not fragmented inside the tunnel either. TTL [`OUTER_TTL`], identification 0.
#[inline(always)]
pub const fn outer_ipv4(
    src: u32,
    dst: u32,
    proto: u8,
    inner_len: u16,
    extra: u16,
    tos: u8,
    inner_frag_off: u16,
) -> Ipv4Header {
    let mut h = Ipv4Header {
        vihl: 0x45,
        tos,
        tot_len: inner_len
            .wrapping_add(extra)
            .wrapping_add(IPV4_HEADER_LEN as u16)
            .to_be(),
        id: 0,
        frag_off: inner_frag_off & IP_DF.to_be(),
        ttl: OUTER_TTL,
        proto,
        check: 0,
        src_addr: src,
        dst_addr: dst,
    };
    h.check = ipv4_header_checksum(&h);
    h
}

/// The UDP header of a `gue` packet carrying an inner packet of `inner_len` bytes (host
/// order), from `src_port` to `dst_port` (host order); checksum 0 (none).
#[inline(always)]
pub const fn gue_udp(src_port: u16, dst_port: u16, inner_len: u16) -> UdpHeader {
    UdpHeader {
        src_port: src_port.to_be(),
        dst_port: dst_port.to_be(),
        len: inner_len.wrapping_add(UDP_HEADER_LEN as u16).to_be(),
        check: 0,
    }
}

/// The UDP source port (host order) of a `gue` packet of the flow `key` (client -> VIP
/// direction; ICMP errors about the flow use the same key, so they share its queue):
/// a hash of the 5-tuple into the ephemeral range. Salted apart from the Maglev hash, so
/// the flows of one backend (which share ring positions) still spread over every port.
#[inline(always)]
pub const fn gue_source_port(key: &FlowKey, seed: u32) -> u16 {
    let h = crate::hash::flow_hash(key, seed);
    GUE_SOURCE_PORT_MIN | (mix32(h ^ 0x5bd1_e995) as u16 & !GUE_SOURCE_PORT_MIN)
}

/// ICMP type "destination unreachable".
pub const ICMP_DEST_UNREACH: u8 = 3;
/// ICMP code "fragmentation needed and DF set" (RFC 1191).
pub const ICMP_FRAG_NEEDED: u8 = 4;
/// ICMP type "time exceeded".
pub const ICMP_TIME_EXCEEDED: u8 = 11;
/// ICMP type "parameter problem".
pub const ICMP_PARAMETER_PROBLEM: u8 = 12;
/// Length of the ICMP header (type, code, checksum, 4 bytes of the rest).
pub const ICMP_HEADER_LEN: usize = 8;
/// What a "fragmentation needed" quotes of the packet it refuses: its IP header and the
/// first 8 bytes after it (RFC 792), enough for the client to find its connection.
pub const ICMP_QUOTE_LEN: usize = IPV4_HEADER_LEN + 8;
/// Length of the IP packet of the "fragmentation needed" the node sends.
pub const FRAG_NEEDED_IP_LEN: usize = IPV4_HEADER_LEN + ICMP_HEADER_LEN + ICMP_QUOTE_LEN;

/// Whether an ICMP message of `icmp_type` is an error that quotes the packet it is about
/// and that a backend must see: destination unreachable (fragmentation needed for path
/// MTU discovery among them), time exceeded, parameter problem.
#[inline(always)]
pub const fn is_forwarded_icmp_error(icmp_type: u8) -> bool {
    icmp_type == ICMP_DEST_UNREACH
        || icmp_type == ICMP_TIME_EXCEEDED
        || icmp_type == ICMP_PARAMETER_PROBLEM
}

/// The flow (client -> VIP) an ICMP error to the VIP is about, from the IP addresses and
/// ports it quotes (wire order), which are those of the backend's reply: VIP:port ->
/// client; `proto` the quoted protocol.
#[inline(always)]
pub const fn flow_of_quoted_reply(
    quoted_src: u32,
    quoted_dst: u32,
    quoted_sport: u16,
    quoted_dport: u16,
    proto: u8,
) -> FlowKey {
    FlowKey {
        src_addr: quoted_dst,
        dst_addr: quoted_src,
        src_port: quoted_dport,
        dst_port: quoted_sport,
        proto,
        family: crate::net::FAMILY_IPV4,
        _pad: [0; 2],
    }
}

/// The path MTU a "fragmentation needed" for a DSR packet advertises (host order): the
/// egress MTU less what the mode adds, so the client's next packets fit once wrapped.
#[inline(always)]
pub const fn advertised_mtu(egress_mtu: u32, mode: u8) -> u16 {
    let o = overhead(mode);
    if egress_mtu > o {
        (egress_mtu - o) as u16
    } else {
        0
    }
}

/// The route to a DSR backend as the data path caches it, per backend id: where the
/// wrapped packet leaves, its MACs, the node's own address on that interface (the outer
/// source), and the interface's MTU. Refreshed like [`crate::nexthop::NextHop`]: an entry of
/// an older generation is looked up again.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DsrHop {
    pub hop: crate::nexthop::NextHop,
    /// The node's address the kernel would send to the backend from (wire order).
    pub src_addr: u32,
    /// The egress interface's MTU (host order).
    pub mtu: u32,
    /// Bit set of `DSR_HOP_F_*`.
    pub flags: u32,
}
const _: () = assert!(core::mem::size_of::<DsrHop>() == 32);

/// The backend is reached through a gateway, not on the node's own segment: `dsr_l2`
/// cannot reach it (only its MAC would change, and the gateway would route the packet to
/// the VIP, back to the node).
pub const DSR_HOP_F_VIA_GATEWAY: u32 = 1 << 0;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum::internet_checksum;

    fn header_bytes(h: &Ipv4Header) -> [u8; 20] {
        let mut b = [0u8; 20];
        b[0] = h.vihl;
        b[1] = h.tos;
        b[2..4].copy_from_slice(&h.tot_len.to_ne_bytes());
        b[4..6].copy_from_slice(&h.id.to_ne_bytes());
        b[6..8].copy_from_slice(&h.frag_off.to_ne_bytes());
        b[8] = h.ttl;
        b[9] = h.proto;
        b[10..12].copy_from_slice(&h.check.to_ne_bytes());
        b[12..16].copy_from_slice(&h.src_addr.to_ne_bytes());
        b[16..20].copy_from_slice(&h.dst_addr.to_ne_bytes());
        b
    }

    #[test]
    fn the_outer_header_has_the_exact_bytes_and_a_valid_checksum() {
        let src = u32::from_ne_bytes([10, 1, 0, 1]);
        let dst = u32::from_ne_bytes([10, 1, 0, 11]);
        let h = outer_ipv4(src, dst, PROTO_IPIP, 60, 0, 0x10, 0x4000u16.to_be());
        let b = header_bytes(&h);
        assert_eq!(
            b[..10],
            [0x45, 0x10, 0, 80, 0, 0, 0x40, 0, 64, 4],
            "version, TOS, length, id, DF, TTL, protocol"
        );
        assert_eq!(b[12..], [10, 1, 0, 1, 10, 1, 0, 11]);
        assert_eq!(internet_checksum(&b, 0), 0, "checksum valid: {b:02x?}");
        // Checked against the RFC 1071 sum of the same header with a zero checksum.
        let mut zeroed = b;
        zeroed[10..12].fill(0);
        assert_eq!(
            internet_checksum(&zeroed, 0).to_be_bytes(),
            h.check.to_ne_bytes()
        );
        // No DF inside, none outside; GUE counts the UDP header in the length.
        let h = outer_ipv4(src, dst, PROTO_UDP, 60, 8, 0, 0);
        let b = header_bytes(&h);
        assert_eq!((b[2], b[3], b[6], b[9]), (0, 88, 0, 17));
        assert_eq!(internet_checksum(&b, 0), 0);
    }

    #[test]
    fn the_gue_source_port_is_ephemeral_and_spreads_flows() {
        let key = |sport: u16| FlowKey {
            src_addr: u32::from_ne_bytes([10, 10, 0, 2]),
            dst_addr: u32::from_ne_bytes([10, 0, 0, 100]),
            src_port: sport.to_be(),
            dst_port: 80u16.to_be(),
            proto: 6,
            family: 4,
            _pad: [0; 2],
        };
        let ports: std::collections::BTreeSet<u16> = (0..1000)
            .map(|p| gue_source_port(&key(40000 + p), 42))
            .collect();
        assert!(ports.iter().all(|p| *p >= 49152), "{ports:?}");
        assert!(ports.len() > 950, "1000 flows on {} ports", ports.len());
        assert_eq!(
            gue_source_port(&key(40000), 42),
            gue_source_port(&key(40000), 42)
        );
        assert_eq!(
            gue_udp(50000, 6080, 60),
            UdpHeader {
                src_port: 50000u16.to_be(),
                dst_port: 6080u16.to_be(),
                len: 68u16.to_be(),
                check: 0
            }
        );
    }

    #[test]
    fn a_quoted_reply_names_its_client_flow() {
        let vip = u32::from_ne_bytes([10, 0, 0, 100]);
        let client = u32::from_ne_bytes([10, 10, 0, 2]);
        let f = flow_of_quoted_reply(vip, client, 80u16.to_be(), 40000u16.to_be(), 6);
        assert_eq!(
            (f.src_addr, f.dst_addr, f.src_port, f.dst_port, f.proto),
            (client, vip, 40000u16.to_be(), 80u16.to_be(), 6)
        );
        assert_eq!(advertised_mtu(1500, BACKEND_F_GUE), 1472);
        assert_eq!(advertised_mtu(1500, BACKEND_F_IPIP), 1480);
        assert_eq!(advertised_mtu(1500, BACKEND_F_DSR_L2), 1500);
        assert!(is_forwarded_icmp_error(3) && is_forwarded_icmp_error(11));
        assert!(!is_forwarded_icmp_error(0) && !is_forwarded_icmp_error(8));
    }
}
