//! Direct server return for IPv6 services (see docs/dsr.md, "IPv6"): the IPv6 twins of
//! [`crate::encap`]'s layouts. The modes are the same bits of `Backend::flags`:
//!
//! - `dsr_l2`: only the MACs change, the hop limit too stays;
//! - `ipip`: an outer IPv6 header (next header 41, IPv6-in-IPv6, RFC 2473) from the node
//!   to the backend, +40 bytes;
//! - `gue`: an outer IPv6 header and a UDP header to the GUE port, +48 bytes; the UDP
//!   payload is the client's IPv6 packet (GUE variant 1: its first nibble, 6, says IPv6).
//!
//! Over IPv6 a UDP checksum is mandatory (RFC 8200 8.1); a zero one is allowed only to
//! tunnel endpoints that agree to it (RFC 6935, 6936), which a backend's kernel, a
//! middlebox or a NIC that checks UDP checksums does not. So `gue` carries a real one,
//! and computes it without reading the payload ([`gue6_checksum`]): the inner packet's
//! own TCP (or ICMPv6) checksum already makes its segment sum to the negated sum of its
//! pseudo-header, so the sum over the whole inner packet needs only its header's words
//! (Linux's local checksum offload, Documentation/networking/checksum-offloads.rst, "LCO").
//!
//! Byte order: as in [`crate::encap`], fields in wire order unless a doc says host.
use crate::{
    checksum::fold,
    encap::{BACKEND_F_GUE, BACKEND_F_IPIP, UDP_HEADER_LEN},
    hash::{flow_hash6, mix32},
    ipv6::{Addr6, FlowKey6},
    nexthop::NextHop,
};

/// Length of the fixed IPv6 header.
pub const IPV6_HEADER_LEN: usize = 40;
/// IPv6 next header of an IPv6 packet inside (RFC 2473).
pub const PROTO_IPV6: u8 = 41;
/// Bytes `ipip` adds to an IPv6 packet.
pub const IP6IP6_OVERHEAD: u32 = IPV6_HEADER_LEN as u32;
/// Bytes `gue` adds to an IPv6 packet.
pub const GUE6_OVERHEAD: u32 = (IPV6_HEADER_LEN + UDP_HEADER_LEN) as u32;

/// Bytes `mode` (a `BACKEND_F_*` bit set) adds to an IPv6 packet.
#[inline(always)]
pub const fn overhead6(mode: u8) -> u32 {
    if mode & BACKEND_F_GUE != 0 {
        GUE6_OVERHEAD
    } else if mode & BACKEND_F_IPIP != 0 {
        IP6IP6_OVERHEAD
    } else {
        0
    }
}

/// The path MTU a packet too big for an IPv6 DSR packet advertises (host order): the
/// egress MTU less what the mode adds, so the client's next packets fit once wrapped.
#[inline(always)]
pub const fn advertised_mtu6(egress_mtu: u32, mode: u8) -> u32 {
    egress_mtu.saturating_sub(overhead6(mode))
}

/// The route to an IPv6 DSR backend as the data path caches it, per backend id (map
/// [`crate::limits::MAP_DSR_HOPS6`]): as [`crate::encap::DsrHop`], with the node's IPv6
/// address toward the backend as the outer source.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DsrHop6 {
    pub hop: NextHop,
    /// The node's address the kernel would send to the backend from (wire order).
    pub src_addr: Addr6,
    /// The egress interface's MTU (host order).
    pub mtu: u32,
    /// Bit set of `encap::DSR_HOP_F_*`.
    pub flags: u32,
}
const _: () = assert!(core::mem::size_of::<DsrHop6>() == 44);

/// The UDP source port (host order) of a `gue` packet of the IPv6 flow `key` (client ->
/// VIP): [`crate::encap::gue_source_port`]'s rule over the IPv6 flow hash.
#[inline(always)]
pub const fn gue_source_port6(key: &FlowKey6, seed: u32) -> u16 {
    let h = flow_hash6(key, seed);
    crate::encap::GUE_SOURCE_PORT_MIN
        | (mix32(h ^ 0x5bd1_e995) as u16 & !crate::encap::GUE_SOURCE_PORT_MIN)
}

/// The words of the inner IPv6 header that [`gue6_checksum`] needs, as they sit in the
/// packet (wire order): the first word (version, traffic class, flow label), the payload
/// length, and next header with hop limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct InnerHeader6 {
    pub first: u32,
    pub payload_len: u16,
    pub next_hop: u16,
}

impl InnerHeader6 {
    /// The payload length (host order).
    #[inline(always)]
    pub const fn payload_len(&self) -> u16 {
        u16::from_be(self.payload_len)
    }

    /// The next header.
    #[inline(always)]
    pub const fn next_header(&self) -> u8 {
        // The word's first byte on the wire.
        self.next_hop.to_ne_bytes()[0]
    }
}

/// The UDP checksum (wire order, never 0) of a `gue` packet from `src` to `dst` (the
/// outer addresses), ports `sport` and `dport` (wire order), carrying an inner IPv6
/// packet whose header words are `inner` and whose upper-layer checksum is valid.
///
/// The one's-complement sum of the inner packet is its header's plus its segment's; a
/// valid upper-layer checksum makes the segment sum to the negation of its pseudo-header
/// (the inner addresses, payload length, next header), so the addresses cancel and
/// what is left is the header's first word, the payload length and the next-header word
/// less the pseudo-header's length and next header. A client packet whose own checksum
/// is wrong gets a wrong outer one, and is dropped one hop earlier than it would be.
#[inline(always)]
pub const fn gue6_checksum(
    src: &Addr6,
    dst: &Addr6,
    sport: u16,
    dport: u16,
    inner: &InnerHeader6,
) -> u16 {
    let udp_len = inner.payload_len() as u64 + (IPV6_HEADER_LEN + UDP_HEADER_LEN) as u64;
    // Host-order words throughout.
    let mut sum = addr_sum(src) + addr_sum(dst) + udp_len + crate::encap::PROTO_UDP as u64;
    sum += u16::from_be(sport) as u64 + u16::from_be(dport) as u64 + udp_len;
    let first = u32::from_be(inner.first);
    sum += (first >> 16) as u64 + (first & 0xffff) as u64;
    sum += u16::from_be(inner.next_hop) as u64;
    // The payload length appears in the header and in the pseudo-header: it cancels; the
    // pseudo-header's next header is subtracted as its one's complement.
    sum += (!(inner.next_header() as u16)) as u64;
    match !fold(sum) {
        0 => 0xffff,
        check => check.to_be(),
    }
}

/// The one's-complement sum of an address's eight words (host order).
#[inline(always)]
const fn addr_sum(a: &Addr6) -> u64 {
    let mut sum = 0;
    let mut i = 0;
    while i < 4 {
        let w = u32::from_be(a[i]);
        sum += (w >> 16) as u64 + (w & 0xffff) as u64;
        i += 1;
    }
    sum
}

/// ICMPv6 type "packet too big" (RFC 4443 3.2).
pub const ICMP6_PACKET_TOO_BIG: u8 = 2;
/// Length of the ICMPv6 header (type, code, checksum, the 4-byte MTU).
pub const ICMP6_HEADER_LEN: usize = 8;
/// What the node's packet too big quotes of the packet it refuses: the IPv6 header and
/// the first 8 bytes after it (the TCP ports and sequence number), what a host needs to
/// find the connection (Linux's `tcp_v6_err` reads no more).
pub const ICMP6_QUOTE_LEN: usize = IPV6_HEADER_LEN + 8;
/// Length of the IPv6 packet of the packet too big the node sends.
pub const PACKET_TOO_BIG_IP_LEN: usize = IPV6_HEADER_LEN + ICMP6_HEADER_LEN + ICMP6_QUOTE_LEN;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{checksum::ipv6_l4_checksum, ipv6::addr6_wire};

    fn addr(last: u8) -> [u8; 16] {
        let mut a = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        a[15] = last;
        a
    }

    /// An IPv6 TCP packet from 2001:db8::2 to 2001:db8::100 with `payload` bytes and a
    /// valid checksum.
    fn inner_packet(payload: usize, hop: u8, flow_label: u32) -> Vec<u8> {
        let mut tcp = vec![0u8; 20 + payload];
        tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&80u16.to_be_bytes());
        tcp[12] = 0x50;
        tcp[13] = 0x18;
        for (i, b) in tcp[20..].iter_mut().enumerate() {
            *b = (i * 7 + 3) as u8;
        }
        let check = ipv6_l4_checksum(addr(2), addr(0x64), 6, &tcp);
        tcp[16..18].copy_from_slice(&check.to_be_bytes());
        let mut p = Vec::new();
        p.extend((0x6000_0000u32 | 0x0a << 20 | flow_label).to_be_bytes());
        p.extend((tcp.len() as u16).to_be_bytes());
        p.extend([6, hop]);
        p.extend(addr(2));
        p.extend(addr(0x64));
        p.extend(tcp);
        p
    }

    fn header_of(p: &[u8]) -> InnerHeader6 {
        InnerHeader6 {
            first: u32::from_ne_bytes([p[0], p[1], p[2], p[3]]),
            payload_len: u16::from_ne_bytes([p[4], p[5]]),
            next_hop: u16::from_ne_bytes([p[6], p[7]]),
        }
    }

    #[test]
    fn the_gue_checksum_from_the_inner_header_equals_one_over_every_byte() {
        let (src, dst) = (addr(1), addr(0x11));
        for (payload, hop, label) in [
            (0, 64, 0),
            (1, 1, 0xfffff),
            (1379, 255, 0x12345),
            (7, 63, 1),
        ] {
            let inner = inner_packet(payload, hop, label);
            let (sport, dport) = (50123u16, 6080u16);
            let check = gue6_checksum(
                &addr6_wire(src),
                &addr6_wire(dst),
                sport.to_be(),
                dport.to_be(),
                &header_of(&inner),
            );
            let mut udp = Vec::new();
            udp.extend(sport.to_be_bytes());
            udp.extend(dport.to_be_bytes());
            udp.extend(((inner.len() + 8) as u16).to_be_bytes());
            udp.extend([0, 0]);
            udp.extend(&inner);
            let scratch = ipv6_l4_checksum(src, dst, 17, &udp);
            let want = if scratch == 0 { 0xffff } else { scratch };
            assert_eq!(u16::from_be(check), want, "payload {payload}");
            udp[6..8].copy_from_slice(&u16::from_be(check).to_be_bytes());
            assert_eq!(ipv6_l4_checksum(src, dst, 17, &udp), 0, "valid");
        }
        // A wrong inner checksum makes a wrong outer one.
        let mut bad = inner_packet(10, 64, 0);
        bad[40 + 16] ^= 1;
        let check = gue6_checksum(
            &addr6_wire(src),
            &addr6_wire(dst),
            1u16.to_be(),
            2u16.to_be(),
            &header_of(&bad),
        );
        let mut udp = vec![0, 1, 0, 2];
        udp.extend(((bad.len() + 8) as u16).to_be_bytes());
        udp.extend(u16::from_be(check).to_be_bytes());
        udp.extend(&bad);
        assert_ne!(ipv6_l4_checksum(src, dst, 17, &udp), 0);
    }

    #[test]
    fn overheads_and_advertised_mtus() {
        use crate::encap::BACKEND_F_DSR_L2;
        assert_eq!(overhead6(BACKEND_F_IPIP), 40);
        assert_eq!(overhead6(BACKEND_F_GUE), 48);
        assert_eq!(overhead6(BACKEND_F_DSR_L2), 0);
        assert_eq!(advertised_mtu6(1500, BACKEND_F_IPIP), 1460);
        assert_eq!(advertised_mtu6(1500, BACKEND_F_GUE), 1452);
        assert_eq!(advertised_mtu6(1500, BACKEND_F_DSR_L2), 1500);
        assert_eq!(PACKET_TOO_BIG_IP_LEN, 96);
        let key = |sport: u16| FlowKey6 {
            src_addr: addr6_wire(addr(2)),
            dst_addr: addr6_wire(addr(0x64)),
            src_port: sport.to_be(),
            dst_port: 80u16.to_be(),
            proto: 6,
            family: 6,
            _pad: [0; 2],
        };
        let ports: std::collections::BTreeSet<u16> = (0..1000)
            .map(|p| gue_source_port6(&key(40000 + p), 42))
            .collect();
        assert!(ports.iter().all(|p| *p >= 49152), "{ports:?}");
        assert!(ports.len() > 950, "1000 flows on {} ports", ports.len());
    }
}
