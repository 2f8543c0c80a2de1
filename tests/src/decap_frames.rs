//! Encapsulated frames as the load balancer sends them to a DSR backend: the client's
//! IPv4 packet behind an outer IPv4 header (IPIP), or outer IPv4 + UDP (GUE variant 1:
//! no GUE header, UDP checksum 0).
use std::net::Ipv4Addr;

use lb_common::{
    checksum::internet_checksum,
    encap::{gue_udp, outer_ipv4, IP_DF, PROTO_IPIP, PROTO_UDP, UDP_HEADER_LEN},
};

use crate::frame::ETH_LEN;

/// How the inner packet is carried.
#[derive(Clone, Copy, Debug)]
pub enum Encap {
    Ipip,
    /// GUE to this UDP port, from this source port.
    Gue {
        port: u16,
        sport: u16,
    },
}

/// The outer IPv4 header (and UDP header for GUE) for an inner IPv4 packet of
/// `inner_len` bytes with the don't-fragment bit, from `src` to `dst`: the load
/// balancer's own builders (`lb_common::encap`), laid out as bytes.
pub fn outer_headers(encap: Encap, src: Ipv4Addr, dst: Ipv4Addr, inner_len: usize) -> Vec<u8> {
    let (proto, extra) = match encap {
        Encap::Ipip => (PROTO_IPIP, 0),
        Encap::Gue { .. } => (PROTO_UDP, UDP_HEADER_LEN as u16),
    };
    let ip = outer_ipv4(
        u32::from_ne_bytes(src.octets()),
        u32::from_ne_bytes(dst.octets()),
        proto,
        inner_len as u16,
        extra,
        0,
        IP_DF.to_be(),
    );
    let mut h = vec![ip.vihl, ip.tos];
    for word in [ip.tot_len, ip.id, ip.frag_off] {
        h.extend(word.to_ne_bytes());
    }
    h.extend([ip.ttl, ip.proto]);
    h.extend(ip.check.to_ne_bytes());
    h.extend(ip.src_addr.to_ne_bytes());
    h.extend(ip.dst_addr.to_ne_bytes());
    if let Encap::Gue { port, sport } = encap {
        let udp = gue_udp(sport, port, inner_len as u16);
        for word in [udp.src_port, udp.dst_port, udp.len, udp.check] {
            h.extend(word.to_ne_bytes());
        }
    }
    h
}

/// `inner` (an Ethernet frame carrying IPv4) with the outer headers inserted after its
/// Ethernet header.
pub fn encapsulate(encap: Encap, src: Ipv4Addr, dst: Ipv4Addr, inner: &[u8]) -> Vec<u8> {
    let ip = &inner[ETH_LEN..];
    let mut frame = inner[..ETH_LEN].to_vec();
    frame.extend(outer_headers(encap, src, dst, ip.len()));
    frame.extend_from_slice(ip);
    frame
}

/// An IPv4 packet (no Ethernet header) carrying a UDP datagram with checksum 0 (none,
/// which IPv4 allows).
pub fn udp_packet(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), payload: &[u8]) -> Vec<u8> {
    let tot = 20 + 8 + payload.len();
    let mut p = vec![0u8; tot];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(tot as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src.0.octets());
    p[16..20].copy_from_slice(&dst.0.octets());
    let c = internet_checksum(&p[..20], 0);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p[20..22].copy_from_slice(&src.1.to_be_bytes());
    p[22..24].copy_from_slice(&dst.1.to_be_bytes());
    p[24..26].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p[28..].copy_from_slice(payload);
    p
}

/// `inner` (an IPv4 packet) behind the outer headers, as one IPv4 packet.
pub fn encapsulate_packet(encap: Encap, src: Ipv4Addr, dst: Ipv4Addr, inner: &[u8]) -> Vec<u8> {
    let mut packet = outer_headers(encap, src, dst, inner.len());
    packet.extend_from_slice(inner);
    packet
}

/// Sends a whole IPv4 packet, its header as written (a raw socket with the header
/// included), from the calling thread's network namespace.
pub fn send_raw(packet: &[u8]) -> std::io::Result<()> {
    let dst: [u8; 4] = packet[16..20].try_into().expect("an IPv4 header");
    // SAFETY: plain socket calls on a descriptor this function owns and closes.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_addr.s_addr = u32::from_ne_bytes(dst);
        let sent = libc::sendto(
            fd,
            packet.as_ptr().cast(),
            packet.len(),
            0,
            (&addr as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        let result = if sent < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        };
        libc::close(fd);
        result
    }
}
