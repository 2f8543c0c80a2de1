//! Announcing VIPs to the routers: while this node can serve a VIP, lbd holds its /32 on
//! `lo` and the routing daemon (BIRD, FRR) exports it; see `crate::model::announce`.
use std::{fmt, net::Ipv4Addr, path::PathBuf, str::FromStr, time::Duration};

use serde::{Deserialize, Serialize};

use super::{collector::Collector, duration};

/// Longest accepted `announce.hold_up`.
pub const MAX_HOLD_UP: Duration = Duration::from_secs(600);

/// Shortest accepted `announce.lifetime` (other than 0s): lbd renews every second, so
/// a shorter one could lapse while lbd is alive but its loop is briefly late.
pub const MIN_LIFETIME: Duration = Duration::from_secs(3);

/// Longest accepted `announce.lifetime`.
pub const MAX_LIFETIME: Duration = Duration::from_secs(86_400);

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnnounceConfig {
    /// The prefixes (IPv4 or IPv6) whose addresses lbd may add to and remove from `lo`;
    /// empty: lbd announces nothing (and touches no address).
    pub vip_ranges: Vec<super::VipRange>,
    /// How long a VIP's service must have been able to serve before it is announced
    /// (withdrawing is at once), so a flapping service does not flap the route.
    #[serde(with = "duration")]
    pub hold_up: Duration,
    /// Healthy active backends a service needs for its VIP to be announced.
    pub min_healthy_backends: u32,
    /// The operator took this node out: no VIP is announced.
    pub drained: bool,
    /// The kernel lifetime of each announced /32 (its `valid_lft`), renewed by lbd every
    /// second: a node whose lbd is dead or hung stops being announced within this,
    /// since the kernel removes the address itself. 0s: no lifetime (kept until lbd
    /// removes it).
    #[serde(with = "duration")]
    pub lifetime: Duration,
    /// BIRD's control socket, read (never written) for `lbctl node status` and to
    /// confirm that a withdrawn VIP left BIRD's table; absent: lbd checks `lo` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bird_socket: Option<PathBuf>,
    /// Since when (Unix seconds) the node is drained through the admin API (`lbctl node
    /// drain`). Never read from the config file: it lives in the state file, so it
    /// survives restarts and SIGHUP reloads (see `crate::model::desired`).
    #[serde(skip)]
    pub drained_since: Option<u64>,
}

impl Default for AnnounceConfig {
    fn default() -> Self {
        Self {
            vip_ranges: Vec::new(),
            hold_up: Duration::from_secs(3),
            min_healthy_backends: 1,
            drained: false,
            lifetime: Duration::from_secs(30),
            bird_socket: None,
            drained_since: None,
        }
    }
}

impl AnnounceConfig {
    /// Why the node announces nothing, if it is drained (by the config file's
    /// `drained`, or through the API).
    pub fn drained_why(&self) -> Option<&'static str> {
        match (self.drained, self.drained_since) {
            (true, _) => Some("the node is drained (announce.drained)"),
            (false, Some(_)) => Some("the node is drained (lbctl node drain)"),
            (false, None) => None,
        }
    }

    /// Whether lbd may add or remove `vip` on `lo`.
    pub fn in_range(&self, vip: std::net::IpAddr) -> bool {
        self.vip_ranges.iter().any(|net| net.contains(vip))
    }
}

/// An IPv4 prefix written `a.b.c.d/len`; the address has no bits beyond `len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Net {
    pub address: Ipv4Addr,
    pub len: u8,
}

impl Ipv4Net {
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
        u32::from(ip) & mask == u32::from(self.address)
    }
}

impl FromStr for Ipv4Net {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let (address, len) = text
            .split_once('/')
            .ok_or_else(|| format!("`{text}` is not a prefix such as 10.0.0.0/24"))?;
        if address.parse::<std::net::Ipv6Addr>().is_ok() {
            return Err(format!(
                "`{text}` is an IPv6 prefix: only IPv4 prefixes are supported here"
            ));
        }
        let address: Ipv4Addr = address
            .parse()
            .map_err(|_| format!("`{text}`: `{address}` is not an IPv4 address"))?;
        let len: u8 = len
            .parse()
            .ok()
            .filter(|l| *l <= 32)
            .ok_or_else(|| format!("`{text}`: the length must be 0..=32"))?;
        let net = Ipv4Net { address, len };
        if !net.contains(address) {
            return Err(format!(
                "`{text}` has address bits beyond /{len} (a typo would announce the wrong range)"
            ));
        }
        Ok(net)
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.len)
    }
}

impl Serialize for Ipv4Net {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ipv4Net {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

pub(super) fn check_announce(c: &mut Collector, announce: &AnnounceConfig) {
    if announce.hold_up > MAX_HOLD_UP {
        c.err(
            "announce.hold_up",
            format!(
                "{} is out of range 0s..={}",
                duration::format(announce.hold_up),
                duration::format(MAX_HOLD_UP)
            ),
        );
    }
    if !announce.lifetime.is_zero() && !(MIN_LIFETIME..=MAX_LIFETIME).contains(&announce.lifetime) {
        c.err(
            "announce.lifetime",
            format!(
                "{} is out of range {}..={} (or 0s for none)",
                duration::format(announce.lifetime),
                duration::format(MIN_LIFETIME),
                duration::format(MAX_LIFETIME)
            ),
        );
    }
    if announce
        .bird_socket
        .as_ref()
        .is_some_and(|p| !p.is_absolute())
    {
        c.err("announce.bird_socket", "must be an absolute path");
    }
    if announce.min_healthy_backends == 0 {
        c.err(
            "announce.min_healthy_backends",
            "0 would announce a VIP with no backend to serve it; use 1 or more",
        );
    }
    for (i, net) in announce.vip_ranges.iter().enumerate() {
        let widest = net.min_len();
        if net.prefix_len() < widest {
            c.err(
                format!("announce.vip_ranges[{i}]"),
                format!("{net} is wider than a /{widest}: name the VIP range, not the world"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_parse_and_contain_exactly_their_addresses() {
        let net: Ipv4Net = "10.0.0.0/24".parse().unwrap();
        assert!(net.contains(Ipv4Addr::new(10, 0, 0, 0)));
        assert!(net.contains(Ipv4Addr::new(10, 0, 0, 255)));
        assert!(!net.contains(Ipv4Addr::new(10, 0, 1, 0)));
        assert!(!net.contains(Ipv4Addr::new(9, 255, 255, 255)));
        let host: Ipv4Net = "10.0.0.100/32".parse().unwrap();
        assert!(host.contains(Ipv4Addr::new(10, 0, 0, 100)));
        assert!(!host.contains(Ipv4Addr::new(10, 0, 0, 101)));
        let all: Ipv4Net = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(Ipv4Addr::new(192, 168, 1, 1)));
        assert_eq!(net.to_string(), "10.0.0.0/24");
    }

    #[test]
    fn bad_prefixes_are_refused_with_the_reason() {
        for (text, says) in [
            ("10.0.0.0", "not a prefix"),
            ("10.0.0/24", "not an IPv4 address"),
            ("10.0.0.0/33", "0..=32"),
            ("10.0.0.1/24", "bits beyond /24"),
            (
                "2001:db8::/32",
                "is an IPv6 prefix: only IPv4 prefixes are supported",
            ),
        ] {
            let e = text.parse::<Ipv4Net>().unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
    }
}
