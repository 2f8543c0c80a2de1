//! IPv6 layouts. IPv6 has maps of its own rather than one key format for both families:
//! a 16-byte address in every key would make each IPv4 connection's two entries 56 bytes
//! dearer (docs/udp.md has the measurement), as Cilium keeps ct4 and ct6 apart.
//!
//! What the families share: service ids (one id space, so the rings, policy tables,
//! counters and edge state of a service are indexed the same way), backend ids (a
//! backend's [`crate::backend::Backend`] entry says [`FAMILY_IPV6`] and its address is in
//! the IPv6 address array at the same id), the flow value [`crate::flow::FlowTarget`] and
//! the address prefilter (an IPv6 address sets the bit of [`fold`]).
use crate::{flow::FlowTarget, nexthop::NextHop, service::ServiceMeta};

/// Address family of an IPv6 key (beside [`crate::net::FAMILY_IPV4`]).
pub const FAMILY_IPV6: u8 = 6;
/// IP protocol number of ICMPv6.
pub const PROTO_ICMPV6: u8 = 58;
/// EtherType of IPv6.
pub const ETH_P_IPV6: u16 = 0x86dd;

/// An IPv6 address as four words, each loaded from the wire without swapping (so the
/// address's bytes in memory are exactly its wire bytes).
pub type Addr6 = [u32; 4];

/// The wire-order words of an address given as its 16 bytes.
#[inline(always)]
pub const fn addr6_wire(octets: [u8; 16]) -> Addr6 {
    let o = octets;
    [
        u32::from_ne_bytes([o[0], o[1], o[2], o[3]]),
        u32::from_ne_bytes([o[4], o[5], o[6], o[7]]),
        u32::from_ne_bytes([o[8], o[9], o[10], o[11]]),
        u32::from_ne_bytes([o[12], o[13], o[14], o[15]]),
    ]
}

/// The one word an IPv6 address stands for in the address prefilter
/// (`filter::filter_slot`), which both families share: a false positive costs only the
/// full lookup that follows.
#[inline(always)]
pub const fn fold(addr: &Addr6) -> u32 {
    addr[0] ^ addr[1] ^ addr[2] ^ addr[3]
}

/// Key of the IPv6 service map ([`crate::limits::MAP_SERVICES6`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct ServiceKey6 {
    /// Virtual IP (wire order).
    pub addr: Addr6,
    /// Virtual port (wire order).
    pub port: u16,
    /// IP protocol number.
    pub proto: u8,
    /// Always [`FAMILY_IPV6`].
    pub family: u8,
}
const _: () = assert!(core::mem::size_of::<ServiceKey6>() == 20);

/// Value of the IPv6 service map: the same meta an IPv4 service has in the service index.
/// The controller replaces the whole value with one map update, which the kernel swaps
/// in atomically for a hash map, so a packet sees the old or the new meta, never a mix.
pub type ServiceMeta6 = ServiceMeta;

/// A TCP/UDP 5-tuple of an IPv6 packet, in the direction of the packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowKey6 {
    /// Source address (wire order).
    pub src_addr: Addr6,
    /// Destination address (wire order).
    pub dst_addr: Addr6,
    /// Source port (wire order).
    pub src_port: u16,
    /// Destination port (wire order).
    pub dst_port: u16,
    /// IP protocol number.
    pub proto: u8,
    /// Always [`FAMILY_IPV6`].
    pub family: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<FlowKey6>() == 40);

impl FlowKey6 {
    /// The key of the service this packet is addressed to: its destination.
    #[inline(always)]
    pub fn service_key(&self) -> ServiceKey6 {
        ServiceKey6 {
            addr: self.dst_addr,
            port: self.dst_port,
            proto: self.proto,
            family: self.family,
        }
    }
}

/// Value of the IPv6 forward flow map: the same as IPv4's.
pub type FlowTarget6 = FlowTarget;

/// Value of the IPv6 return flow map, keyed by backend -> client tuple: what the source
/// must be rewritten back to (as [`crate::flow::NatReturn`] with a 16-byte VIP).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct NatReturn6 {
    /// Virtual IP to put back as source (wire order).
    pub vip: Addr6,
    /// Virtual port to put back as source port (wire order).
    pub vport: u16,
    /// Bit set of `NAT_F_*`.
    pub flags: u16,
    /// Service id, for counting.
    pub service: u32,
    /// Backend id, for counting.
    pub backend: u32,
    /// The route back to the client, cached on the first reply.
    pub nexthop: NextHop,
}
const _: () = assert!(core::mem::size_of::<NatReturn6>() == 48);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_keeps_its_wire_bytes() {
        let octets = [
            0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x11,
        ];
        let words = addr6_wire(octets);
        let mut bytes = [0u8; 16];
        for (i, w) in words.iter().enumerate() {
            bytes[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
        assert_eq!(bytes, octets);
    }

    #[test]
    fn the_fold_of_an_address_differs_from_its_neighbours() {
        let a = addr6_wire([
            0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x11,
        ]);
        let b = addr6_wire([
            0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x12,
        ]);
        assert_eq!(
            fold(&a) ^ fold(&b),
            u32::from_ne_bytes([0, 0, 0, 0x11 ^ 0x12])
        );
    }
}
