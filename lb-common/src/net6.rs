//! IPv6 address classes the data path checks before it places a packet.
use crate::ipv6::Addr6;

/// Whether `addr` (wire order) is an IPv6 source no router forwards from, as
/// [`crate::net::is_martian`] is for IPv4: the unspecified address `::`, loopback `::1`,
/// link-local `fe80::/10` (never forwarded, RFC 4291 2.5.6), multicast `ff00::/8` (never
/// a source, RFC 4291 2.7), and IPv4-mapped `::ffff:0:0/96` (never on the wire, RFC 4291
/// 2.5.5.2).
#[inline(always)]
pub const fn is_martian6(addr: &Addr6) -> bool {
    let first = u32::from_be(addr[0]);
    let zero_prefix = addr[0] == 0 && addr[1] == 0;
    let low = u32::from_be(addr[3]);
    (zero_prefix && addr[2] == 0 && (low == 0 || low == 1))
        || (zero_prefix && u32::from_be(addr[2]) == 0xffff)
        || first >> 22 == 0xfe80 >> 6
        || first >> 24 == 0xff
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use super::*;
    use crate::ipv6::addr6_wire;

    #[test]
    fn martians_are_exactly_the_reserved_source_ranges() {
        let martian = |a: &str| is_martian6(&addr6_wire(a.parse::<Ipv6Addr>().unwrap().octets()));
        for a in [
            "::",
            "::1",
            "fe80::1",
            "febf:ffff::1",
            "ff02::1",
            "ff05::1:3",
            "::ffff:10.0.0.1",
        ] {
            assert!(martian(a), "{a} is a martian");
        }
        for a in [
            "::2",
            "2001:db8::1",
            "fec0::1",
            "fe7f::1",
            "fd00::1",
            "64:ff9b::10.0.0.1",
            "::1:0:0:1",
            "fe:ffff::1",
        ] {
            assert!(!martian(a), "{a} is not a martian");
        }
    }
}
