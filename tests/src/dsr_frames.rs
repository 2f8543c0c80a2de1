//! The frames the data path must send to a DSR backend, built here byte by byte (not by
//! the code under test), for packet tests and the benchmark's output checks.
use std::net::Ipv4Addr;

use lb_common::{checksum::internet_checksum, encap::gue_source_port, flow::FlowKey};

use crate::{frame::ETH_LEN, packet_rig::backend_mac};

/// The packet rig's address on `b0`: the node's address towards the backends, so the
/// outer source.
pub const NODE_B0: [u8; 4] = [10, 1, 0, 1];

/// A DSR mode as the packet tests and the benchmark name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    L2,
    Ipip,
    /// With its UDP destination port.
    Gue(u16),
}

/// `inner` (an IPv4 packet) behind the exact outer IPv4 header from the node to
/// `backend` with protocol `proto` and `extra` bytes (the UDP header) between, and an
/// Ethernet header from `b0` (MAC `b0_mac`) to the backend.
pub fn wrapped(
    b0_mac: [u8; 6],
    backend: Ipv4Addr,
    proto: u8,
    extra: &[u8],
    inner: &[u8],
) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend(backend_mac(backend.octets()[3]));
    f.extend(b0_mac);
    f.extend([0x08, 0x00]);
    let len = (20 + extra.len() + inner.len()) as u16;
    let df = inner[6] & 0x40;
    let mut ip = vec![
        0x45,
        inner[1],
        (len >> 8) as u8,
        len as u8,
        0,
        0,
        df,
        0,
        64,
        proto,
        0,
        0,
    ];
    ip.extend(NODE_B0);
    ip.extend(backend.octets());
    let check = internet_checksum(&ip, 0);
    ip[10..12].copy_from_slice(&check.to_be_bytes());
    f.extend(ip);
    f.extend(extra);
    f.extend(inner);
    f
}

/// The UDP header of a `gue` packet of `flow` (client -> VIP) carrying `inner_len`
/// bytes to `port`: the source port is `lb_common::encap::gue_source_port` of the flow
/// (the contract with `lb-decap`), and must be ephemeral.
pub fn gue_header(flow: &FlowKey, seed: u32, port: u16, inner_len: usize) -> Vec<u8> {
    let sport = gue_source_port(flow, seed);
    assert!(sport >= 49152, "an ephemeral source port: {sport}");
    let mut udp = Vec::new();
    udp.extend(sport.to_be_bytes());
    udp.extend(port.to_be_bytes());
    udp.extend(((inner_len + 8) as u16).to_be_bytes());
    udp.extend([0, 0]);
    udp
}

/// What the data path sends backend `backend` for the client's frame `frame` of flow
/// `flow` in `mode`, out of `b0` (MAC `b0_mac`).
pub fn to_backend(
    mode: Mode,
    b0_mac: [u8; 6],
    backend: Ipv4Addr,
    frame: &[u8],
    flow: &FlowKey,
    seed: u32,
) -> Vec<u8> {
    let inner = &frame[ETH_LEN..];
    match mode {
        Mode::L2 => {
            let mut f = frame.to_vec();
            f[0..6].copy_from_slice(&backend_mac(backend.octets()[3]));
            f[6..12].copy_from_slice(&b0_mac);
            f
        }
        Mode::Ipip => wrapped(b0_mac, backend, 4, &[], inner),
        Mode::Gue(port) => {
            let udp = gue_header(flow, seed, port, inner.len());
            wrapped(b0_mac, backend, 17, &udp, inner)
        }
    }
}
