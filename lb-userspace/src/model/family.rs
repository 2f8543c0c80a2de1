//! IPv4 and IPv6 side by side: the config names addresses as `IpAddr`, and the kernel
//! keeps each family's services in maps of their own (see `lb_common::ipv6`), so this is
//! where an address becomes the key or the word the kernel takes.
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use lb_common::{
    ipv6::{addr6_wire, fold, Addr6, ServiceKey6, FAMILY_IPV6},
    net::{ipv4_wire, port_wire, FAMILY_IPV4},
    service::ServiceKey,
};

/// A service's key in the map of its VIP's family: the IPv4 service index or the IPv6
/// service map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServiceMapKey {
    V4(ServiceKey),
    V6(ServiceKey6),
}

impl ServiceMapKey {
    /// The key of the service on `vip`:`port` (host order) for IP protocol `proto`.
    pub fn new(vip: IpAddr, port: u16, proto: u8) -> Self {
        match vip {
            IpAddr::V4(v4) => ServiceMapKey::V4(ServiceKey {
                addr: ipv4_wire(v4.octets()),
                port: port_wire(port),
                proto,
                family: FAMILY_IPV4,
            }),
            IpAddr::V6(v6) => ServiceMapKey::V6(ServiceKey6 {
                addr: addr6(v6),
                port: port_wire(port),
                proto,
                family: FAMILY_IPV6,
            }),
        }
    }

    /// The VIP the key names.
    pub fn vip(&self) -> IpAddr {
        match self {
            ServiceMapKey::V4(k) => IpAddr::from(k.addr.to_ne_bytes()),
            ServiceMapKey::V6(k) => IpAddr::V6(ip6(&k.addr)),
        }
    }

    /// The VIP's port, host order.
    pub fn port(&self) -> u16 {
        match self {
            ServiceMapKey::V4(k) => u16::from_be(k.port),
            ServiceMapKey::V6(k) => u16::from_be(k.port),
        }
    }

    /// The IP protocol number.
    pub fn proto(&self) -> u8 {
        match self {
            ServiceMapKey::V4(k) => k.proto,
            ServiceMapKey::V6(k) => k.proto,
        }
    }

    /// The IPv4 key, if the service is an IPv4 one.
    pub fn v4(&self) -> Option<&ServiceKey> {
        match self {
            ServiceMapKey::V4(k) => Some(k),
            ServiceMapKey::V6(_) => None,
        }
    }
}

impl std::fmt::Display for ServiceMapKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", SocketAddr::new(self.vip(), self.port()))
    }
}

/// An IPv6 address as the kernel's maps hold it (wire-order words).
pub fn addr6(address: Ipv6Addr) -> Addr6 {
    addr6_wire(address.octets())
}

/// The address the kernel's words `addr` hold.
pub fn ip6(addr: &Addr6) -> Ipv6Addr {
    let mut octets = [0u8; 16];
    for (i, word) in addr.iter().enumerate() {
        octets[i * 4..i * 4 + 4].copy_from_slice(&word.to_ne_bytes());
    }
    Ipv6Addr::from(octets)
}

/// The word `address` stands for in the address prefilter (`lb_common::filter`): an IPv4
/// address itself, an IPv6 one its [`fold`].
pub fn filter_word(address: IpAddr) -> u32 {
    match address {
        IpAddr::V4(v4) => ipv4_wire(v4.octets()),
        IpAddr::V6(v6) => fold(&addr6(v6)),
    }
}

/// The name of `address`'s family as messages say it.
pub fn family_name(address: IpAddr) -> &'static str {
    match address {
        IpAddr::V4(_) => "IPv4",
        IpAddr::V6(_) => "IPv6",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_holds_wire_order_fields_and_gives_back_its_address() {
        let vip: IpAddr = "2001:db8::100".parse().unwrap();
        let key = ServiceMapKey::new(vip, 443, 6);
        let ServiceMapKey::V6(k) = key else {
            panic!("an IPv6 VIP has an IPv6 key: {key:?}")
        };
        let mut bytes = Vec::new();
        for w in k.addr {
            bytes.extend_from_slice(&w.to_ne_bytes());
        }
        assert_eq!(
            bytes,
            [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x00]
        );
        assert_eq!(k.port.to_ne_bytes(), [0x01, 0xbb]);
        assert_eq!((k.proto, k.family), (6, FAMILY_IPV6));
        assert_eq!(key.vip(), vip);
        assert_eq!(key.port(), 443);
        assert_eq!(key.to_string(), "[2001:db8::100]:443");
        let v4 = ServiceMapKey::new("10.0.0.1".parse().unwrap(), 80, 17);
        assert_eq!(v4.to_string(), "10.0.0.1:80");
        assert_eq!(v4.v4().unwrap().addr.to_ne_bytes(), [10, 0, 0, 1]);
    }

    #[test]
    fn an_ipv6_filter_word_is_the_fold_of_its_words() {
        let a: IpAddr = "2001:db8::11".parse().unwrap();
        // 2001:0db8 ^ 0 ^ 0 ^ 0000:0011, each word in wire order.
        assert_eq!(
            filter_word(a),
            u32::from_ne_bytes([0x20, 0x01, 0x0d, 0xb8]) ^ u32::from_ne_bytes([0, 0, 0, 0x11])
        );
        assert_eq!(
            filter_word("10.1.0.11".parse().unwrap()).to_ne_bytes(),
            [10, 1, 0, 11]
        );
    }
}
