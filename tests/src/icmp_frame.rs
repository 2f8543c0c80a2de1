//! ICMP error frames for the packet tests: an error from one address to another quoting
//! the first bytes of an IPv4 packet, every checksum computed from scratch, so that it is
//! the oracle the data path's incremental updates must match.
use std::net::Ipv4Addr;

use lb_common::checksum::internet_checksum;

use crate::frame::{Mac, ETH_LEN};

/// Everything a test sets in an ICMP error.
#[derive(Debug, Clone)]
pub struct IcmpError {
    pub dst_mac: Mac,
    pub src_mac: Mac,
    /// The outer source (the router or host reporting the error).
    pub from: Ipv4Addr,
    /// The outer destination (the source of the quoted packet).
    pub to: Ipv4Addr,
    pub ttl: u8,
    pub icmp_type: u8,
    pub code: u8,
    /// The ICMP header's second word (e.g. the next-hop MTU of a fragmentation needed).
    pub rest: [u8; 4],
    /// The quoted bytes: the start of the IPv4 packet the error is about.
    pub quoted: Vec<u8>,
}

impl IcmpError {
    /// The first `len` bytes of the IP packet of `frame` (an Ethernet frame), for
    /// [`IcmpError::quoted`].
    pub fn quote(frame: &[u8], len: usize) -> Vec<u8> {
        frame[ETH_LEN..ETH_LEN + len].to_vec()
    }

    pub fn bytes(&self) -> Vec<u8> {
        let mut icmp = vec![self.icmp_type, self.code, 0, 0];
        icmp.extend(self.rest);
        icmp.extend(&self.quoted);
        let check = internet_checksum(&icmp, 0);
        icmp[2..4].copy_from_slice(&check.to_be_bytes());
        let len = (20 + icmp.len()) as u16;
        let [hi, lo] = len.to_be_bytes();
        let mut ip = vec![0x45, 0, hi, lo, 0, 7, 0, 0, self.ttl, 1, 0, 0];
        ip.extend(self.from.octets());
        ip.extend(self.to.octets());
        let check = internet_checksum(&ip, 0);
        ip[10..12].copy_from_slice(&check.to_be_bytes());
        let mut f = Vec::new();
        f.extend(self.dst_mac);
        f.extend(self.src_mac);
        f.extend([0x08, 0x00]);
        f.extend(ip);
        f.extend(icmp);
        f
    }
}
