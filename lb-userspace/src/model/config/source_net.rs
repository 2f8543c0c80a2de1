//! A prefix of a service's source rules (`filter.allow`, `filter.deny`): IPv4
//! (`10.0.0.0/8`) or IPv6 (`2001:db8:66::/48`), of the service's VIP's family (checked by
//! `validate_edge`).
use std::{
    fmt,
    net::{IpAddr, Ipv6Addr},
    str::FromStr,
};

use serde::{Deserialize, Serialize};

use super::announce::Ipv4Net;

/// A source prefix; the address has no bits beyond `len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourceNet {
    pub address: IpAddr,
    pub len: u8,
}

impl SourceNet {
    pub fn is_ipv6(&self) -> bool {
        self.address.is_ipv6()
    }
}

impl FromStr for SourceNet {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let (address, len) = text.split_once('/').ok_or_else(|| {
            format!("`{text}` is not a prefix such as 10.0.0.0/24 or 2001:db8::/48")
        })?;
        let Ok(address) = address.parse::<Ipv6Addr>() else {
            let net: Ipv4Net = text.parse()?;
            return Ok(SourceNet {
                address: IpAddr::V4(net.address),
                len: net.len,
            });
        };
        let len: u8 = len
            .parse()
            .ok()
            .filter(|l| *l <= 128)
            .ok_or_else(|| format!("`{text}`: the length must be 0..=128"))?;
        let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
        if u128::from(address) & !mask != 0 {
            return Err(format!(
                "`{text}` has address bits beyond /{len} (a typo would filter the wrong range)"
            ));
        }
        Ok(SourceNet {
            address: IpAddr::V6(address),
            len,
        })
    }
}

impl fmt::Display for SourceNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.len)
    }
}

impl Serialize for SourceNet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SourceNet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_families_parse_and_print_as_written() {
        for text in [
            "10.0.0.0/8",
            "192.0.2.7/32",
            "2001:db8:66::/48",
            "::/0",
            "2001:db8::7/128",
        ] {
            let net: SourceNet = text.parse().unwrap();
            assert_eq!(net.to_string(), text);
        }
        let v6: SourceNet = "2001:db8:66::/48".parse().unwrap();
        assert!(v6.is_ipv6());
        assert_eq!(v6.len, 48);
        assert!(!"10.0.0.0/8".parse::<SourceNet>().unwrap().is_ipv6());
    }

    #[test]
    fn bad_prefixes_are_refused_with_the_reason() {
        for (text, says) in [
            ("10.0.0.0", "not a prefix"),
            ("2001:db8::", "not a prefix"),
            ("10.0.0.1/24", "bits beyond /24"),
            ("2001:db8::1/64", "bits beyond /64"),
            ("2001:db8::/129", "0..=128"),
            ("10.0.0.0/33", "0..=32"),
        ] {
            let e = text.parse::<SourceNet>().unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
    }
}
