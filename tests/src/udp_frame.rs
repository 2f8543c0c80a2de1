//! Crafting Ethernet/IPv4/UDP frames with valid checksums (or none), for packet tests of
//! UDP services.
use std::net::Ipv4Addr;

use lb_common::{
    checksum::{internet_checksum, ipv4_l4_checksum},
    flow::FlowKey,
    net::FAMILY_IPV4,
};

use crate::frame::{Mac, ETH_LEN, IP_LEN};

pub const UDP_LEN: usize = 8;
pub const PROTO_UDP: u8 = 17;

/// Everything a test sets in a UDP frame; `..Datagram::default()` fills the rest.
#[derive(Debug, Clone)]
pub struct Datagram {
    pub dst_mac: Mac,
    pub src_mac: Mac,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
    pub ttl: u8,
    /// Sent with a UDP checksum of zero: "none computed" (RFC 768).
    pub no_checksum: bool,
    pub payload: Vec<u8>,
}

impl Default for Datagram {
    fn default() -> Self {
        Self {
            dst_mac: [0x02, 0, 0, 0, 0xee, 0x01],
            src_mac: [0x02, 0, 0, 0, 0xee, 0x02],
            src: Ipv4Addr::new(10, 10, 0, 2),
            dst: Ipv4Addr::new(10, 0, 0, 100),
            sport: 40000,
            dport: 53,
            ttl: 64,
            no_checksum: false,
            payload: b"query".to_vec(),
        }
    }
}

impl Datagram {
    /// The datagram's 5-tuple as the data path keys its flow tables.
    pub fn flow_key(&self) -> FlowKey {
        FlowKey {
            src_addr: u32::from_ne_bytes(self.src.octets()),
            dst_addr: u32::from_ne_bytes(self.dst.octets()),
            src_port: self.sport.to_be(),
            dst_port: self.dport.to_be(),
            proto: PROTO_UDP,
            family: FAMILY_IPV4,
            _pad: [0; 2],
        }
    }

    /// The frame's bytes: a correct IPv4 checksum, and a UDP checksum computed from
    /// scratch (a computed zero sent as 0xffff) unless [`Datagram::no_checksum`].
    pub fn bytes(&self) -> Vec<u8> {
        let tot = IP_LEN + UDP_LEN + self.payload.len();
        let mut f = vec![0u8; ETH_LEN + tot];
        f[0..6].copy_from_slice(&self.dst_mac);
        f[6..12].copy_from_slice(&self.src_mac);
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        let ip = &mut f[ETH_LEN..ETH_LEN + IP_LEN];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&(tot as u16).to_be_bytes());
        ip[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
        ip[8] = self.ttl;
        ip[9] = PROTO_UDP;
        ip[12..16].copy_from_slice(&self.src.octets());
        ip[16..20].copy_from_slice(&self.dst.octets());
        let c = internet_checksum(ip, 0);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        let udp = &mut f[ETH_LEN + IP_LEN..];
        udp[0..2].copy_from_slice(&self.sport.to_be_bytes());
        udp[2..4].copy_from_slice(&self.dport.to_be_bytes());
        udp[4..6].copy_from_slice(&((UDP_LEN + self.payload.len()) as u16).to_be_bytes());
        udp[UDP_LEN..].copy_from_slice(&self.payload);
        if !self.no_checksum {
            let c = match ipv4_l4_checksum(self.src.octets(), self.dst.octets(), PROTO_UDP, udp) {
                0 => 0xffff,
                c => c,
            };
            udp[6..8].copy_from_slice(&c.to_be_bytes());
        }
        f
    }
}

/// Whether an IPv4/UDP frame's checksums hold: the IP header's, and the UDP one unless it
/// is zero (none).
pub fn udp_checksums_valid(frame: &[u8]) -> bool {
    let ip = &frame[ETH_LEN..ETH_LEN + IP_LEN];
    let tot = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    let src: [u8; 4] = ip[12..16].try_into().unwrap();
    let dst: [u8; 4] = ip[16..20].try_into().unwrap();
    let udp = &frame[ETH_LEN + IP_LEN..ETH_LEN + tot];
    let none = udp[6..8] == [0, 0];
    let sum = ipv4_l4_checksum(src, dst, PROTO_UDP, udp);
    internet_checksum(ip, 0) == 0 && (none || sum == 0 || sum == 0xffff)
}
