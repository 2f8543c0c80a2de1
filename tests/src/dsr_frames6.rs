//! The frames the data path must send to an IPv6 DSR backend, and its packet too big,
//! built here byte by byte (not by the code under test), their checksums computed from
//! scratch over the IPv6 pseudo-header by [`crate::frame6::l4_checksum`].
use std::net::Ipv6Addr;

use lb_common::{encap6::gue_source_port6, ipv6::FlowKey6};

use crate::{frame::ETH_LEN, frame6::l4_checksum, packet_rig::backend_mac};

/// The packet rig's address on `b0`: the node's address towards the IPv6 backends, so the
/// outer source.
pub const NODE_B0_6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);

/// `inner` (an IPv6 packet) behind the exact outer IPv6 header from the node to
/// `backend` with next header `next` and `extra` bytes (the UDP header) between, and an
/// Ethernet header from `b0` (MAC `b0_mac`) to the backend. The outer header's first word
/// (version, traffic class, flow label) is the inner one's; hop limit 64.
pub fn wrapped6(
    b0_mac: [u8; 6],
    backend: Ipv6Addr,
    next: u8,
    extra: &[u8],
    inner: &[u8],
) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend(backend_mac(backend.octets()[15]));
    f.extend(b0_mac);
    f.extend([0x86, 0xdd]);
    f.extend(&inner[0..4]);
    f.extend(((extra.len() + inner.len()) as u16).to_be_bytes());
    f.extend([next, 64]);
    f.extend(NODE_B0_6.octets());
    f.extend(backend.octets());
    f.extend(extra);
    f.extend(inner);
    f
}

/// The UDP header of a `gue` packet of `flow` (client -> VIP) carrying `inner` to
/// `backend`'s `port`: the source port is `lb_common::encap6::gue_source_port6` of the
/// flow (the contract with `lb-decap`), the checksum summed over every byte of the
/// datagram and the outer pseudo-header.
pub fn gue6_header(
    flow: &FlowKey6,
    seed: u32,
    port: u16,
    backend: Ipv6Addr,
    inner: &[u8],
) -> Vec<u8> {
    let sport = gue_source_port6(flow, seed);
    assert!(sport >= 49152, "an ephemeral source port: {sport}");
    let mut udp = Vec::new();
    udp.extend(sport.to_be_bytes());
    udp.extend(port.to_be_bytes());
    udp.extend(((inner.len() + 8) as u16).to_be_bytes());
    udp.extend([0, 0]);
    udp.extend(inner);
    let check = match l4_checksum(NODE_B0_6, backend, 17, &udp) {
        0 => 0xffff,
        c => c,
    };
    udp.truncate(6);
    udp.extend(check.to_be_bytes());
    udp
}

/// The ICMPv6 packet too big advertising `mtu` that answers the client's `frame` (an
/// Ethernet/IPv6 frame): back to the client's MAC from the one it was sent to, from the
/// address it was sent to, hop limit 64, quoting its IPv6 header and 8 bytes.
pub fn packet_too_big6(frame: &[u8], mtu: u32) -> Vec<u8> {
    let ip = &frame[ETH_LEN..];
    let (client, vip): ([u8; 16], [u8; 16]) = (
        ip[8..24].try_into().unwrap(),
        ip[24..40].try_into().unwrap(),
    );
    let mut icmp = vec![2, 0, 0, 0];
    icmp.extend(mtu.to_be_bytes());
    icmp.extend(&ip[..48]);
    let check = l4_checksum(vip.into(), client.into(), 58, &icmp);
    icmp[2..4].copy_from_slice(&check.to_be_bytes());
    let mut f = Vec::new();
    f.extend(&frame[6..12]);
    f.extend(&frame[0..6]);
    f.extend([0x86, 0xdd, 0x60, 0, 0, 0]);
    f.extend((icmp.len() as u16).to_be_bytes());
    f.extend([58, 64]);
    f.extend(vip);
    f.extend(client);
    f.extend(icmp);
    f
}
