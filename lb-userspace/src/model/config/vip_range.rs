//! A prefix of `announce.vip_ranges`: the addresses lbd may hold on `lo`, IPv4
//! (`10.0.0.0/24`) or IPv6 (`2001:db8:100::/64`).
use std::{
    fmt,
    net::{IpAddr, Ipv6Addr},
    str::FromStr,
};

use serde::{Deserialize, Serialize};

use super::announce::Ipv4Net;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VipRange {
    V4(Ipv4Net),
    V6 { address: Ipv6Addr, len: u8 },
}

impl VipRange {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self, ip) {
            (VipRange::V4(net), IpAddr::V4(ip)) => net.contains(ip),
            (VipRange::V6 { address, len }, IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(*len)).unwrap_or(0);
                u128::from(ip) & mask == u128::from(*address)
            }
            _ => false,
        }
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        match self {
            VipRange::V4(net) => net.len,
            VipRange::V6 { len, .. } => *len,
        }
    }

    /// The shortest prefix length accepted: anything wider names the world, not a VIP
    /// range.
    pub fn min_len(&self) -> u8 {
        match self {
            VipRange::V4(_) => 8,
            VipRange::V6 { .. } => 32,
        }
    }
}

impl FromStr for VipRange {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let Some((address, len)) = text.split_once('/') else {
            return Err(format!(
                "`{text}` is not a prefix such as 10.0.0.0/24 or 2001:db8::/64"
            ));
        };
        let Ok(address) = address.parse::<Ipv6Addr>() else {
            return text.parse().map(VipRange::V4);
        };
        let len: u8 = len
            .parse()
            .ok()
            .filter(|l| *l <= 128)
            .ok_or_else(|| format!("`{text}`: the length must be 0..=128"))?;
        let range = VipRange::V6 { address, len };
        if !range.contains(IpAddr::V6(address)) {
            return Err(format!(
                "`{text}` has address bits beyond /{len} (a typo would announce the wrong range)"
            ));
        }
        Ok(range)
    }
}

impl fmt::Display for VipRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VipRange::V4(net) => write!(f, "{net}"),
            VipRange::V6 { address, len } => write!(f, "{address}/{len}"),
        }
    }
}

impl Serialize for VipRange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for VipRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_families_parse_and_contain_exactly_their_addresses() {
        let v6: VipRange = "2001:db8:100::/64".parse().unwrap();
        assert!(v6.contains("2001:db8:100::1".parse().unwrap()));
        assert!(v6.contains("2001:db8:100::ffff:ffff:ffff:ffff".parse().unwrap()));
        assert!(!v6.contains("2001:db8:101::1".parse().unwrap()));
        assert!(!v6.contains("10.0.0.1".parse().unwrap()));
        assert_eq!(v6.to_string(), "2001:db8:100::/64");
        let v4: VipRange = "10.0.0.0/24".parse().unwrap();
        assert!(v4.contains("10.0.0.9".parse().unwrap()));
        assert!(!v4.contains("::ffff:10.0.0.9".parse().unwrap()));
        let host: VipRange = "2001:db8::100/128".parse().unwrap();
        assert!(host.contains("2001:db8::100".parse().unwrap()));
        assert!(!host.contains("2001:db8::101".parse().unwrap()));
    }

    #[test]
    fn bad_ipv6_prefixes_are_refused_with_the_reason() {
        for (text, says) in [
            ("2001:db8::", "not a prefix"),
            ("2001:db8::/129", "0..=128"),
            ("2001:db8::1/64", "bits beyond /64"),
            ("10.0.0.1/24", "bits beyond /24"),
        ] {
            let e = text.parse::<VipRange>().unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
    }

    #[test]
    fn a_range_wider_than_its_familys_limit_is_refused() {
        let errors = |ranges: &str| -> Vec<(String, String)> {
            let text = format!(
                "node: {{ zone: a }}\ninterfaces: [eth0]\nannounce: {{ vip_ranges: {ranges} }}\n"
            );
            match crate::model::config::parse(&text) {
                Ok(_) => Vec::new(),
                Err(e) => e.errors.into_iter().map(|f| (f.field, f.message)).collect(),
            }
        };
        assert_eq!(errors("[10.0.0.0/8, 2001:db8::/32]"), []);
        assert_eq!(
            errors("[10.0.0.0/24, 2001::/16]"),
            [(
                "announce.vip_ranges[1]".to_string(),
                "2001::/16 is wider than a /32: name the VIP range, not the world".to_string()
            )]
        );
    }
}
