//! The reverse map: backend address:port -> the VIP:port it serves, the same on every LB
//! node (written by the controller from the plan, for services with `stateless_return`).
//! A backend's reply that finds no return entry and no SYN-cache slot is translated
//! through it, so any node of an ECMP group can translate any reply: the node that saw
//! the client's packets and the node the routers send the reply to need share no state.
//! It holds only backends that serve exactly one VIP:port, or a reply's VIP would be
//! ambiguous (the config is refused otherwise).

/// A backend's address as a reply's source: the key of the reverse map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReverseKey {
    /// Backend address (wire order).
    pub addr: u32,
    /// Backend port (wire order).
    pub port: u16,
    /// IP protocol number, e.g. [`crate::net::PROTO_TCP`].
    pub proto: u8,
    /// Address family, [`crate::net::FAMILY_IPV4`].
    pub family: u8,
}
const _: () = assert!(core::mem::size_of::<ReverseKey>() == 8);

/// What a reply from a [`ReverseKey`] is translated to, and whom it is counted for.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ReverseTarget {
    /// VIP put back as the reply's source (wire order).
    pub vip: u32,
    /// VIP port put back as the reply's source port (wire order).
    pub vport: u16,
    pub _pad: u16,
    /// Service id, for its counters.
    pub service: u32,
    /// Backend id, for its counters.
    pub backend: u32,
}
const _: () = assert!(core::mem::size_of::<ReverseTarget>() == 16);
