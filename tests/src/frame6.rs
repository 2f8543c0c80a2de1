//! Crafting Ethernet/IPv6/TCP and UDP frames for the IPv6 packet tests, with the L4
//! checksum computed here from scratch over the IPv6 pseudo-header (RFC 8200 8.1): the
//! oracle shares no code with the data path's incremental updates, nor with
//! `lb_common::checksum`.
use std::net::Ipv6Addr;

use lb_common::ipv6::{addr6_wire, FlowKey6, FAMILY_IPV6};

use crate::frame::{Mac, ETH_LEN};

pub const IP6_LEN: usize = 40;
pub const TCP_LEN: usize = 20;
pub const UDP_LEN: usize = 8;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// Everything a test sets in an IPv6 frame; `..Frame6::default()` fills the rest.
#[derive(Debug, Clone)]
pub struct Frame6 {
    pub dst_mac: Mac,
    pub src_mac: Mac,
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub sport: u16,
    pub dport: u16,
    pub hop_limit: u8,
    /// [`PROTO_TCP`] or [`PROTO_UDP`].
    pub proto: u8,
    /// TCP flag byte (ignored for UDP).
    pub flags: u8,
    pub seq: u32,
    pub ack: u32,
    pub payload: Vec<u8>,
    /// UDP sent with a zero checksum (invalid over IPv6).
    pub zero_checksum: bool,
}

impl Default for Frame6 {
    fn default() -> Self {
        Self {
            dst_mac: [0x02, 0, 0, 0, 0xee, 0x01],
            src_mac: [0x02, 0, 0, 0, 0xee, 0x02],
            src: "2001:db8:10::2".parse().unwrap(),
            dst: "2001:db8:100::100".parse().unwrap(),
            sport: 40000,
            dport: 80,
            hop_limit: 64,
            proto: PROTO_TCP,
            flags: 0x02,
            seq: 1000,
            ack: 0,
            payload: Vec::new(),
            zero_checksum: false,
        }
    }
}

impl Frame6 {
    /// The frame's 5-tuple as the data path keys its IPv6 flow tables.
    pub fn flow_key(&self) -> FlowKey6 {
        FlowKey6 {
            src_addr: addr6_wire(self.src.octets()),
            dst_addr: addr6_wire(self.dst.octets()),
            src_port: self.sport.to_be(),
            dst_port: self.dport.to_be(),
            proto: self.proto,
            family: FAMILY_IPV6,
            _pad: [0; 2],
        }
    }

    /// The L4 segment (header and payload) with its checksum.
    fn segment(&self) -> Vec<u8> {
        let mut l4 = if self.proto == PROTO_TCP {
            let mut t = vec![0u8; TCP_LEN];
            t[4..8].copy_from_slice(&self.seq.to_be_bytes());
            t[8..12].copy_from_slice(&self.ack.to_be_bytes());
            t[12] = 5 << 4;
            t[13] = self.flags;
            t[14..16].copy_from_slice(&65535u16.to_be_bytes());
            t
        } else {
            let mut u = vec![0u8; UDP_LEN];
            u[4..6].copy_from_slice(&((UDP_LEN + self.payload.len()) as u16).to_be_bytes());
            u
        };
        l4[0..2].copy_from_slice(&self.sport.to_be_bytes());
        l4[2..4].copy_from_slice(&self.dport.to_be_bytes());
        l4.extend_from_slice(&self.payload);
        if !(self.proto == PROTO_UDP && self.zero_checksum) {
            let at = if self.proto == PROTO_TCP { 16 } else { 6 };
            let c = match l4_checksum(self.src, self.dst, self.proto, &l4) {
                // A computed zero goes as all ones (UDP; TCP never sends it either way).
                0 if self.proto == PROTO_UDP => 0xffff,
                c => c,
            };
            l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
        }
        l4
    }

    /// The frame's bytes.
    pub fn bytes(&self) -> Vec<u8> {
        with_next_header(self, self.proto, &self.segment())
    }
}

/// `frame`'s Ethernet and IPv6 headers, with next header `next`, followed by `payload`.
pub fn with_next_header(frame: &Frame6, next: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; ETH_LEN + IP6_LEN];
    f[0..6].copy_from_slice(&frame.dst_mac);
    f[6..12].copy_from_slice(&frame.src_mac);
    f[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
    let ip = &mut f[ETH_LEN..];
    ip[0] = 0x60;
    ip[1] = 0x0a; // a traffic class and flow label, which NAT66 keeps
    ip[3] = 0xbc;
    ip[4..6].copy_from_slice(&(payload.len() as u16).to_be_bytes());
    ip[6] = next;
    ip[7] = frame.hop_limit;
    ip[8..24].copy_from_slice(&frame.src.octets());
    ip[24..40].copy_from_slice(&frame.dst.octets());
    f.extend_from_slice(payload);
    f
}

/// The TCP or UDP checksum of `segment` (its checksum field as it is) over the IPv6
/// pseudo-header: source, destination, 32-bit upper-layer length, three zero bytes,
/// next header. A segment whose checksum is right sums to 0 (or 0xffff).
pub fn l4_checksum(src: Ipv6Addr, dst: Ipv6Addr, proto: u8, segment: &[u8]) -> u16 {
    let mut bytes = Vec::with_capacity(40 + segment.len() + 1);
    bytes.extend_from_slice(&src.octets());
    bytes.extend_from_slice(&dst.octets());
    bytes.extend_from_slice(&(segment.len() as u32).to_be_bytes());
    bytes.extend_from_slice(&[0, 0, 0, proto]);
    bytes.extend_from_slice(segment);
    if bytes.len() % 2 == 1 {
        bytes.push(0);
    }
    let mut sum: u32 = 0;
    for pair in bytes.chunks(2) {
        sum += u16::from_be_bytes([pair[0], pair[1]]) as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Whether the L4 checksum of an Ethernet/IPv6 frame (TCP or UDP right after the fixed
/// header) verifies from scratch.
pub fn checksum_valid(frame: &[u8]) -> bool {
    let ip = &frame[ETH_LEN..ETH_LEN + IP6_LEN];
    let len = u16::from_be_bytes([ip[4], ip[5]]) as usize;
    let src = Ipv6Addr::from(<[u8; 16]>::try_from(&ip[8..24]).unwrap());
    let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&ip[24..40]).unwrap());
    let seg = &frame[ETH_LEN + IP6_LEN..ETH_LEN + IP6_LEN + len];
    matches!(l4_checksum(src, dst, ip[6], seg), 0 | 0xffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_known_datagram_has_the_checksum_summed_by_hand() {
        // [2001:db8::1]:1234 -> [2001:db8::2]:53 carrying "ab": pseudo-header 0x5b90,
        // segment 0x6673, sum 0xc203.
        let f = Frame6 {
            src: "2001:db8::1".parse().unwrap(),
            dst: "2001:db8::2".parse().unwrap(),
            sport: 1234,
            dport: 53,
            proto: PROTO_UDP,
            payload: b"ab".to_vec(),
            ..Frame6::default()
        };
        let b = f.bytes();
        let at = ETH_LEN + IP6_LEN + 6;
        assert_eq!(u16::from_be_bytes([b[at], b[at + 1]]), !0xc203);
        assert!(checksum_valid(&b));
    }

    #[test]
    fn a_changed_address_breaks_the_checksum() {
        let mut b = Frame6::default().bytes();
        assert!(checksum_valid(&b));
        b[ETH_LEN + 39] ^= 1;
        assert!(!checksum_valid(&b));
    }
}
