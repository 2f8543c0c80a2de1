//! Constants of the wire formats the data path understands.

/// Address family of a key, so that IPv6 keys can share map definitions later.
pub const FAMILY_IPV4: u8 = 4;

/// IP protocol numbers (IANA).
pub const PROTO_TCP: u8 = 6;

/// EtherType of IPv4 (wire order is big endian; this is the numeric value).
pub const ETH_P_IPV4: u16 = 0x0800;

/// TCP header flag bits as found in byte 13 of the TCP header.
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// Converts an IPv4 address to the wire-order integer used in keys.
#[inline(always)]
pub const fn ipv4_wire(octets: [u8; 4]) -> u32 {
    u32::from_ne_bytes(octets)
}

/// Converts a port to the wire-order integer used in keys.
#[inline(always)]
pub const fn port_wire(port: u16) -> u16 {
    port.to_be()
}
