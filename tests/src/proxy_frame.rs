//! The frames the SYN proxy writes itself (its SYN-ACK to a client, its SYN and ACK to a
//! backend), built here byte by byte from the RFC layouts, independently of the data
//! path's code, so packet tests and benches compare whole output frames.
use std::net::Ipv4Addr;

use lb_common::{
    checksum::{internet_checksum, ipv4_l4_checksum},
    syn_proxy::{SYN_PROXY_MSS, SYN_PROXY_WINDOW},
};

use crate::frame::{Mac, ETH_LEN, IP_LEN, TCP_LEN};

/// One segment the proxy writes: IPv4 without options (identification 0, don't
/// fragment), TCP with an MSS option ([`SYN_PROXY_MSS`]) if `mss`, no payload.
#[derive(Debug, Clone)]
pub struct ProxySegment {
    pub dst_mac: Mac,
    pub src_mac: Mac,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
    pub ttl: u8,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    pub mss: bool,
}

impl ProxySegment {
    /// The proxy's SYN-ACK window and MSS option, everything else to be set.
    pub fn syn_ack(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16) -> Self {
        Self {
            dst_mac: [0; 6],
            src_mac: [0; 6],
            src,
            dst,
            sport,
            dport,
            ttl: 64,
            seq: 0,
            ack: 0,
            flags: 0x12,
            window: SYN_PROXY_WINDOW,
            mss: true,
        }
    }

    pub fn bytes(&self) -> Vec<u8> {
        let tcp_len = TCP_LEN + if self.mss { 4 } else { 0 };
        let mut f = vec![0u8; ETH_LEN + IP_LEN + tcp_len];
        f[0..6].copy_from_slice(&self.dst_mac);
        f[6..12].copy_from_slice(&self.src_mac);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let ip = &mut f[ETH_LEN..ETH_LEN + IP_LEN];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&((IP_LEN + tcp_len) as u16).to_be_bytes());
        ip[6] = 0x40;
        ip[8] = self.ttl;
        ip[9] = 6;
        ip[12..16].copy_from_slice(&self.src.octets());
        ip[16..20].copy_from_slice(&self.dst.octets());
        let c = internet_checksum(ip, 0);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        let tcp = &mut f[ETH_LEN + IP_LEN..];
        tcp[0..2].copy_from_slice(&self.sport.to_be_bytes());
        tcp[2..4].copy_from_slice(&self.dport.to_be_bytes());
        tcp[4..8].copy_from_slice(&self.seq.to_be_bytes());
        tcp[8..12].copy_from_slice(&self.ack.to_be_bytes());
        tcp[12] = ((tcp_len / 4) as u8) << 4;
        tcp[13] = self.flags;
        tcp[14..16].copy_from_slice(&self.window.to_be_bytes());
        if self.mss {
            tcp[20..22].copy_from_slice(&[2, 4]);
            tcp[22..24].copy_from_slice(&SYN_PROXY_MSS.to_be_bytes());
        }
        let c = ipv4_l4_checksum(self.src.octets(), self.dst.octets(), 6, tcp);
        tcp[16..18].copy_from_slice(&c.to_be_bytes());
        f
    }
}

/// The sequence number of a TCP frame (Ethernet, IPv4 without options).
pub fn seq_of(frame: &[u8]) -> u32 {
    let at = ETH_LEN + IP_LEN + 4;
    u32::from_be_bytes(frame[at..at + 4].try_into().unwrap())
}
