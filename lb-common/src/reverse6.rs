//! The reverse map of IPv6 backends (see [`crate::reverse`], whose rules it follows):
//! backend address:port -> the VIP:port it serves, for the backends of IPv6 services with
//! `stateless_return`. A map of its own, as the IPv6 flow tables are: 16-byte addresses
//! in every IPv4 key would make the IPv4 map dearer for nothing.
use crate::ipv6::Addr6;

/// An IPv6 backend's address as a reply's source: the key of the IPv6 reverse map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReverseKey6 {
    /// Backend address (wire order).
    pub addr: Addr6,
    /// Backend port (wire order).
    pub port: u16,
    /// IP protocol number, e.g. [`crate::net::PROTO_TCP`].
    pub proto: u8,
    /// Always [`crate::ipv6::FAMILY_IPV6`].
    pub family: u8,
}
const _: () = assert!(core::mem::size_of::<ReverseKey6>() == 20);

/// What a reply from a [`ReverseKey6`] is translated to, and whom it is counted for.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ReverseTarget6 {
    /// VIP put back as the reply's source (wire order).
    pub vip: Addr6,
    /// VIP port put back as the reply's source port (wire order).
    pub vport: u16,
    pub _pad: u16,
    /// Service id, for its counters.
    pub service: u32,
    /// Backend id, for its counters.
    pub backend: u32,
}
const _: () = assert!(core::mem::size_of::<ReverseTarget6>() == 28);
