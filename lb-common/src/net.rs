//! Constants of the wire formats the data path understands.

/// Address family of an IPv4 key (IPv6: `ipv6::FAMILY_IPV6`).
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

/// Whether a source address (wire order) is one no router forwards from: "this network"
/// 0/8 (RFC 1122), loopback 127/8, link-local 169.254/16 (RFC 3927: never forwarded),
/// multicast 224/4 and reserved 240/4 (which holds the limited broadcast
/// 255.255.255.255). The kernel drops these as martians before routing; XDP runs before
/// those checks, so the data path applies them itself.
#[inline(always)]
pub const fn is_martian(addr: u32) -> bool {
    let host = u32::from_be(addr);
    let first = host >> 24;
    first == 0 || first == 127 || first >= 224 || host >> 16 == 0xa9fe
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn martians_are_exactly_the_reserved_source_ranges() {
        let martian = |o: [u8; 4]| is_martian(ipv4_wire(o));
        for o in [
            [0, 0, 0, 0],
            [0, 255, 1, 2],
            [127, 0, 0, 1],
            [127, 255, 255, 255],
            [169, 254, 0, 1],
            [169, 254, 255, 255],
            [224, 0, 0, 5],
            [239, 255, 255, 255],
            [240, 0, 0, 1],
            [255, 255, 255, 255],
        ] {
            assert!(martian(o), "{o:?} is a martian");
        }
        for o in [
            [1, 0, 0, 0],
            [10, 10, 0, 2],
            [126, 255, 255, 255],
            [128, 0, 0, 0],
            [169, 253, 255, 255],
            [169, 255, 0, 0],
            [192, 168, 1, 1],
            [223, 255, 255, 255],
        ] {
            assert!(!martian(o), "{o:?} is a valid source");
        }
    }
}
