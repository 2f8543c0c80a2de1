//! Crafting Ethernet/IPv4/TCP frames with valid checksums, for packet tests.
use std::net::Ipv4Addr;

use lb_common::{
    checksum::{internet_checksum, ipv4_l4_checksum},
    flow::FlowKey,
    net::FAMILY_IPV4,
};

pub type Mac = [u8; 6];

/// Everything a test sets in a frame; `..Frame::default()` fills the rest.
#[derive(Debug, Clone)]
pub struct Frame {
    pub dst_mac: Mac,
    pub src_mac: Mac,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
    pub ttl: u8,
    /// TCP flag byte (SYN = 0x02, ACK = 0x10, ...).
    pub flags: u8,
    pub seq: u32,
    /// Acknowledgment number (host order; sent as is, whatever the flags).
    pub ack: u32,
    pub payload: Vec<u8>,
}

impl Default for Frame {
    fn default() -> Self {
        Self {
            dst_mac: [0x02, 0, 0, 0, 0xee, 0x01],
            src_mac: [0x02, 0, 0, 0, 0xee, 0x02],
            src: Ipv4Addr::new(10, 10, 0, 2),
            dst: Ipv4Addr::new(10, 0, 0, 100),
            sport: 40000,
            dport: 80,
            ttl: 64,
            flags: 0x02,
            seq: 1000,
            ack: 0,
            payload: Vec::new(),
        }
    }
}

/// TCP flag bytes, as [`Frame::flags`] takes them.
pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;
pub const SYN_ACK: u8 = SYN | ACK;
pub const RST: u8 = 0x04;
pub const RST_ACK: u8 = RST | ACK;
pub const FIN_ACK: u8 = 0x01 | ACK;
pub const PSH_ACK: u8 = 0x08 | ACK;

pub const ETH_LEN: usize = 14;
pub const IP_LEN: usize = 20;
pub const TCP_LEN: usize = 20;

impl Frame {
    /// The frame's 5-tuple as the data path keys its flow tables.
    pub fn flow_key(&self) -> FlowKey {
        FlowKey {
            src_addr: u32::from_ne_bytes(self.src.octets()),
            dst_addr: u32::from_ne_bytes(self.dst.octets()),
            src_port: self.sport.to_be(),
            dst_port: self.dport.to_be(),
            proto: 6,
            family: FAMILY_IPV4,
            _pad: [0; 2],
        }
    }

    /// The key of the reply direction, from `backend:8080`, as the data path records it.
    pub fn reply_key(&self, backend: Ipv4Addr) -> FlowKey {
        FlowKey {
            src_addr: u32::from_ne_bytes(backend.octets()),
            dst_addr: u32::from_ne_bytes(self.src.octets()),
            src_port: 8080u16.to_be(),
            dst_port: self.sport.to_be(),
            ..self.flow_key()
        }
    }

    /// The frame's bytes, with correct IPv4 and TCP checksums.
    pub fn bytes(&self) -> Vec<u8> {
        let tot = IP_LEN + TCP_LEN + self.payload.len();
        let mut f = vec![0u8; ETH_LEN + tot];
        f[0..6].copy_from_slice(&self.dst_mac);
        f[6..12].copy_from_slice(&self.src_mac);
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        let ip = &mut f[ETH_LEN..ETH_LEN + IP_LEN];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&(tot as u16).to_be_bytes());
        ip[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
        ip[6] = 0x40; // DF
        ip[8] = self.ttl;
        ip[9] = 6;
        ip[12..16].copy_from_slice(&self.src.octets());
        ip[16..20].copy_from_slice(&self.dst.octets());
        let c = internet_checksum(ip, 0);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        let tcp_at = ETH_LEN + IP_LEN;
        let tcp = &mut f[tcp_at..];
        tcp[0..2].copy_from_slice(&self.sport.to_be_bytes());
        tcp[2..4].copy_from_slice(&self.dport.to_be_bytes());
        tcp[4..8].copy_from_slice(&self.seq.to_be_bytes());
        tcp[8..12].copy_from_slice(&self.ack.to_be_bytes());
        tcp[12] = 5 << 4;
        tcp[13] = self.flags;
        tcp[14..16].copy_from_slice(&65535u16.to_be_bytes());
        tcp[TCP_LEN..].copy_from_slice(&self.payload);
        let c = ipv4_l4_checksum(self.src.octets(), self.dst.octets(), 6, tcp);
        tcp[16..18].copy_from_slice(&c.to_be_bytes());
        f
    }
}

/// Recomputes both checksums of an IPv4/TCP frame without options; true if both are
/// valid as they stand.
pub fn checksums_valid(frame: &[u8]) -> bool {
    if frame.len() < ETH_LEN + IP_LEN + TCP_LEN {
        return false;
    }
    let ip = &frame[ETH_LEN..ETH_LEN + IP_LEN];
    let tot = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    let src: [u8; 4] = ip[12..16].try_into().unwrap();
    let dst: [u8; 4] = ip[16..20].try_into().unwrap();
    internet_checksum(ip, 0) == 0
        && ipv4_l4_checksum(src, dst, 6, &frame[ETH_LEN + IP_LEN..ETH_LEN + tot]) == 0
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(text: &str) -> Mac {
    let mut mac = [0u8; 6];
    let parts: Vec<&str> = text.trim().split(':').collect();
    assert_eq!(parts.len(), 6, "not a MAC address: {text}");
    for (i, p) in parts.iter().enumerate() {
        mac[i] = u8::from_str_radix(p, 16).unwrap_or_else(|_| panic!("not a MAC address: {text}"));
    }
    mac
}

/// Source address and port of a frame (Ethernet, IPv4 without options, TCP).
pub fn source(frame: &[u8]) -> (Ipv4Addr, u16) {
    let at = ETH_LEN + 12;
    let port = ETH_LEN + IP_LEN;
    (
        Ipv4Addr::new(frame[at], frame[at + 1], frame[at + 2], frame[at + 3]),
        u16::from_be_bytes([frame[port], frame[port + 1]]),
    )
}

/// Destination port of a frame (Ethernet, IPv4 without options, TCP).
pub fn dst_port(frame: &[u8]) -> u16 {
    let at = ETH_LEN + IP_LEN + 2;
    u16::from_be_bytes([frame[at], frame[at + 1]])
}

pub fn dst_ip(frame: &[u8]) -> Ipv4Addr {
    let at = ETH_LEN + 16;
    Ipv4Addr::new(frame[at], frame[at + 1], frame[at + 2], frame[at + 3])
}
