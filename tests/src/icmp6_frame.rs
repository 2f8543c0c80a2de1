//! ICMPv6 error frames for the packet tests, as `icmp_frame` builds IPv4's: an error from
//! one address to another quoting the first bytes of an IPv6 packet, its checksum
//! computed from scratch over the IPv6 pseudo-header (RFC 4443 2.3) by `frame6`, so that
//! it is the oracle the data path's incremental updates must match.
use std::net::Ipv6Addr;

use lb_common::ipv6::PROTO_ICMPV6;

use crate::{
    frame::{Mac, ETH_LEN},
    frame6::{l4_checksum, with_next_header, Frame6},
};

/// Everything a test sets in an ICMPv6 error.
#[derive(Debug, Clone)]
pub struct Icmp6Error {
    pub dst_mac: Mac,
    pub src_mac: Mac,
    /// The outer source (the router or host reporting the error).
    pub from: Ipv6Addr,
    /// The outer destination (the source of the quoted packet).
    pub to: Ipv6Addr,
    pub hop_limit: u8,
    pub icmp_type: u8,
    pub code: u8,
    /// The ICMPv6 header's second word (the MTU of a packet too big, the pointer of a
    /// parameter problem, else unused).
    pub rest: [u8; 4],
    /// The quoted bytes: the start of the IPv6 packet the error is about.
    pub quoted: Vec<u8>,
}

impl Icmp6Error {
    /// The first `len` bytes of the IPv6 packet of `frame` (an Ethernet frame), for
    /// [`Icmp6Error::quoted`].
    pub fn quote(frame: &[u8], len: usize) -> Vec<u8> {
        frame[ETH_LEN..ETH_LEN + len].to_vec()
    }

    pub fn bytes(&self) -> Vec<u8> {
        let mut icmp = vec![self.icmp_type, self.code, 0, 0];
        icmp.extend(self.rest);
        icmp.extend(&self.quoted);
        let check = l4_checksum(self.from, self.to, PROTO_ICMPV6, &icmp);
        icmp[2..4].copy_from_slice(&check.to_be_bytes());
        let outer = Frame6 {
            dst_mac: self.dst_mac,
            src_mac: self.src_mac,
            src: self.from,
            dst: self.to,
            hop_limit: self.hop_limit,
            ..Frame6::default()
        };
        with_next_header(&outer, PROTO_ICMPV6, &icmp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame6::IP6_LEN;

    #[test]
    fn an_error_sums_to_zero_over_its_pseudo_header_and_a_changed_outer_address_breaks_it() {
        let e = Icmp6Error {
            dst_mac: [2, 0, 0, 0, 0, 1],
            src_mac: [2, 0, 0, 0, 0, 2],
            from: "2001:db8::fe".parse().unwrap(),
            to: "2001:db8::1".parse().unwrap(),
            hop_limit: 64,
            icmp_type: 2,
            code: 0,
            rest: [0, 0, 0x05, 0x00],
            quoted: vec![0x60, 0, 0, 0, 0, 8, 17, 64],
        };
        let b = e.bytes();
        let body = &b[ETH_LEN + IP6_LEN..];
        assert_eq!(body.len(), 16);
        assert_eq!(b[ETH_LEN + 6], PROTO_ICMPV6);
        assert!(matches!(l4_checksum(e.from, e.to, 58, body), 0 | 0xffff));
        let other: Ipv6Addr = "2001:db8::2".parse().unwrap();
        assert!(!matches!(l4_checksum(e.from, other, 58, body), 0 | 0xffff));
    }
}
