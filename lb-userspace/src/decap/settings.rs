//! `lb-decap`'s settings: a small YAML file (`--config`), each key also a flag that
//! replaces it. Pure: parsed and checked here, applied by [`super::attach`].
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    str::FromStr,
};

use anyhow::{bail, ensure, Context as _};
use lb_common::{
    decap::{DecapConfig, DecapPrefix, DecapPrefix6, MAX_LB_PREFIXES, MAX_LB_PREFIXES6},
    encap::DEFAULT_GUE_PORT,
};
use serde::{Deserialize, Serialize};

/// Where the program is attached on each interface.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Hook {
    /// tc ingress (a TCX link): any driver, GRO'd packets.
    #[default]
    Tc,
    /// XDP (native where the driver has it, generic otherwise).
    Xdp,
}

/// An IPv4 prefix written `a.b.c.d/len`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prefix {
    pub addr: Ipv4Addr,
    pub len: u8,
}

impl FromStr for Prefix {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        let (addr, len) = s.split_once('/').unwrap_or((s, "32"));
        let addr: Ipv4Addr = addr
            .parse()
            .with_context(|| format!("{s:?}: not an IPv4 address"))?;
        let len: u8 = len
            .parse()
            .ok()
            .filter(|l| *l <= 32)
            .with_context(|| format!("{s:?}: the prefix length must be 0..=32"))?;
        let host_bits = u32::from(addr) & !u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
        ensure!(host_bits == 0, "{s:?}: host bits set after /{len}");
        Ok(Prefix { addr, len })
    }
}

impl std::fmt::Display for Prefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl<'de> Deserialize<'de> for Prefix {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map_err(|e: anyhow::Error| serde::de::Error::custom(format!("{e:#}")))
    }
}

impl Serialize for Prefix {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A prefix of either family: IPv4 (`a.b.c.d/len`) or IPv6 (`2001:db8::/64`: an IPv6
/// service's outer sources, a route to IPv6 clients).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpPrefix {
    V4(Prefix),
    V6 { addr: Ipv6Addr, len: u8 },
}

impl FromStr for IpPrefix {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        if !s.contains(':') {
            return s.parse().map(IpPrefix::V4);
        }
        let (addr, len) = s.split_once('/').unwrap_or((s, "128"));
        let addr: Ipv6Addr = addr
            .parse()
            .with_context(|| format!("{s:?}: not an IPv6 address"))?;
        let len: u8 = len
            .parse()
            .ok()
            .filter(|l| *l <= 128)
            .with_context(|| format!("{s:?}: the prefix length must be 0..=128"))?;
        let host_bits =
            u128::from(addr) & !u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
        ensure!(host_bits == 0, "{s:?}: host bits set after /{len}");
        Ok(IpPrefix::V6 { addr, len })
    }
}

impl std::fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IpPrefix::V4(p) => p.fmt(f),
            IpPrefix::V6 { addr, len } => write!(f, "{addr}/{len}"),
        }
    }
}

impl<'de> Deserialize<'de> for IpPrefix {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map_err(|e: anyhow::Error| serde::de::Error::custom(format!("{e:#}")))
    }
}

impl Serialize for IpPrefix {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The file's keys (all optional there; the required ones are checked after the flags
/// are applied, by [`Settings::validate`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// The NICs encapsulated packets arrive on.
    pub interfaces: Vec<String>,
    /// The VIPs, each added to `lo` as a /32 (IPv4) or /128 (IPv6).
    pub vips: Vec<IpAddr>,
    /// The LB tier's addresses (of either family): encapsulated packets from anywhere
    /// else are dropped.
    pub lb_prefixes: Vec<IpPrefix>,
    pub hook: Hook,
    /// The GUE UDP destination port (the LB's `gue_port`).
    pub gue_port: u16,
    /// The MSS advertised on the IPv4 routes to the clients (`advmss`); 0 leaves routes
    /// alone.
    pub mss: u16,
    /// The MSS advertised on the IPv6 routes to the clients; 0 leaves them alone.
    pub mss6: u16,
    /// The routes to the clients that get `advmss` (existing routes of the main tables,
    /// matched by destination prefix, IPv4 or IPv6).
    pub client_routes: Vec<IpPrefix>,
    /// Sets `net.ipv4.conf.all.arp_ignore=1` and `arp_announce=2`, so the backend never
    /// answers ARP for a VIP on `lo` (needed with `dsr_l2`, harmless otherwise).
    pub arp_sysctls: bool,
    /// Where the program's links and maps are pinned (bpffs).
    pub pin_dir: PathBuf,
    /// What `lb-decap` added and the sysctls' previous values, for `--detach`.
    pub state_file: PathBuf,
}

/// The MSS that fits a 1500-byte path behind either encapsulation: 1500 - 28 (GUE's
/// outer IPv4 + UDP) - 40 (inner IPv4 + TCP). IPIP alone would allow 1440.
pub const DEFAULT_MSS: u16 = 1432;
/// The same over IPv6: 1500 - 48 (GUE's outer IPv6 + UDP) - 60 (inner IPv6 + TCP).
/// IPv6-in-IPv6 alone would allow 1400.
pub const DEFAULT_MSS6: u16 = 1392;
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/lb-decap";
pub const DEFAULT_STATE_FILE: &str = "/run/lb-decap/state.json";
pub const DEFAULT_CONFIG: &str = "/etc/lb-decap/lb-decap.yaml";

impl Default for Settings {
    fn default() -> Self {
        Self {
            interfaces: Vec::new(),
            vips: Vec::new(),
            lb_prefixes: Vec::new(),
            hook: Hook::Tc,
            gue_port: DEFAULT_GUE_PORT,
            mss: DEFAULT_MSS,
            mss6: DEFAULT_MSS6,
            client_routes: vec![IpPrefix::V4(Prefix {
                addr: Ipv4Addr::UNSPECIFIED,
                len: 0,
            })],
            arp_sysctls: true,
            pin_dir: DEFAULT_PIN_DIR.into(),
            state_file: DEFAULT_STATE_FILE.into(),
        }
    }
}

impl Settings {
    pub fn parse(yaml: &str) -> anyhow::Result<Self> {
        if yaml.trim().is_empty() {
            return Ok(Self::default());
        }
        serde_yaml_ng::from_str(yaml).map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// What makes the settings usable: at least one interface, VIP and LB prefix, at
    /// most [`MAX_LB_PREFIXES`] prefixes, a GUE port, an MSS a TCP segment can have.
    pub fn validate(&self) -> anyhow::Result<()> {
        ensure!(!self.interfaces.is_empty(), "interfaces: none given");
        ensure!(!self.vips.is_empty(), "vips: none given");
        ensure!(
            !self.lb_prefixes.is_empty(),
            "lb_prefixes: none given (encapsulated packets are accepted only from these)"
        );
        let v4 = self.lb_prefixes4().count();
        ensure!(
            v4 <= MAX_LB_PREFIXES,
            "lb_prefixes: {v4} IPv4 prefixes given, at most {MAX_LB_PREFIXES}"
        );
        let v6 = self.lb_prefixes6().count();
        ensure!(
            v6 <= MAX_LB_PREFIXES6,
            "lb_prefixes: {v6} IPv6 prefixes given, at most {MAX_LB_PREFIXES6}"
        );
        ensure!(self.gue_port != 0, "gue_port: 0 is no port");
        if self.mss != 0 && !(536..=65495).contains(&self.mss) {
            bail!(
                "mss: {} is outside 536..=65495 (0 leaves routes alone)",
                self.mss
            );
        }
        // The IPv6 minimum MTU (1280) less the IPv6 and TCP headers, up to the largest.
        if self.mss6 != 0 && !(1220..=65475).contains(&self.mss6) {
            bail!(
                "mss6: {} is outside 1220..=65475 (0 leaves routes alone)",
                self.mss6
            );
        }
        for (i, vip) in self.vips.iter().enumerate() {
            ensure!(!self.vips[..i].contains(vip), "vips: {vip} is listed twice");
        }
        Ok(())
    }

    /// The MSS for a route to `prefix`'s clients (0: leave it alone).
    pub fn mss_for(&self, prefix: &IpPrefix) -> u16 {
        match prefix {
            IpPrefix::V4(_) => self.mss,
            IpPrefix::V6 { .. } => self.mss6,
        }
    }

    /// The program's map value.
    pub fn program_config(&self) -> DecapConfig {
        let mut config = DecapConfig {
            gue_port: self.gue_port.to_be(),
            ..DecapConfig::default()
        };
        for (slot, p) in config.prefixes.iter_mut().zip(self.lb_prefixes4()) {
            *slot = DecapPrefix::new(p.addr.octets(), p.len);
        }
        config.prefix_count = self.lb_prefixes4().count().min(MAX_LB_PREFIXES) as u32;
        for (slot, (addr, len)) in config.prefixes6.iter_mut().zip(self.lb_prefixes6()) {
            *slot = DecapPrefix6::new(addr.octets(), len);
        }
        config.prefix6_count = self.lb_prefixes6().count().min(MAX_LB_PREFIXES6) as u32;
        config
    }

    fn lb_prefixes4(&self) -> impl Iterator<Item = Prefix> + '_ {
        self.lb_prefixes.iter().filter_map(|p| match p {
            IpPrefix::V4(p) => Some(*p),
            IpPrefix::V6 { .. } => None,
        })
    }

    fn lb_prefixes6(&self) -> impl Iterator<Item = (Ipv6Addr, u8)> + '_ {
        self.lb_prefixes.iter().filter_map(|p| match p {
            IpPrefix::V6 { addr, len } => Some((*addr, *len)),
            IpPrefix::V4(_) => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_file_parses_and_fills_the_program_config() {
        let s = Settings::parse(
            "interfaces: [eth0]\nvips: [10.0.0.100, 10.0.0.101]\nlb_prefixes: [10.1.0.0/24, 192.168.7.9/32]\nhook: xdp\ngue_port: 7000\nmss: 1400\nclient_routes: [10.10.0.0/16]\narp_sysctls: false\n",
        )
        .unwrap();
        s.validate().unwrap();
        assert_eq!(s.hook, Hook::Xdp);
        assert_eq!(s.client_routes[0].to_string(), "10.10.0.0/16");
        let c = s.program_config();
        assert_eq!(c.prefix_count, 2);
        assert_eq!(c.gue_port, 7000u16.to_be());
        assert_eq!(c.prefixes[0], DecapPrefix::new([10, 1, 0, 0], 24));
        assert_eq!(c.prefixes[1], DecapPrefix::new([192, 168, 7, 9], 32));
        assert!(c.admits(u32::from_ne_bytes([10, 1, 0, 200])));
        assert!(!c.admits(u32::from_ne_bytes([10, 2, 0, 1])));
    }

    #[test]
    fn defaults_are_tc_port_6080_mss_1432_on_the_default_route() {
        let s = Settings::parse("").unwrap();
        assert_eq!(s.hook, Hook::Tc);
        assert_eq!(s.gue_port, 6080);
        assert_eq!(s.mss, 1432);
        assert_eq!(s.client_routes, vec!["0.0.0.0/0".parse().unwrap()]);
        assert_eq!(s.mss6, 1392);
        assert!(s.arp_sysctls);
    }

    #[test]
    fn what_is_missing_or_wrong_is_named() {
        let base = "interfaces: [eth0]\nvips: [10.0.0.100]\nlb_prefixes: [10.1.0.0/24]\n";
        Settings::parse(base).unwrap().validate().unwrap();
        let err = |yaml: &str| match Settings::parse(yaml) {
            Ok(s) => format!("{:#}", s.validate().unwrap_err()),
            Err(e) => format!("{e:#}"),
        };
        assert!(err("vips: [10.0.0.100]\nlb_prefixes: [10.1.0.0/24]\n").starts_with("interfaces"));
        assert!(err("interfaces: [e]\nvips: [10.0.0.100]\n").starts_with("lb_prefixes"));
        assert!(err(&format!("{base}mss: 100\n")).starts_with("mss: 100"));
        assert!(err(&format!("{base}mss6: 1200\n")).starts_with("mss6: 1200"));
        assert!(err("lb_prefixes: [10.1.0.1/24]\n").contains("host bits set"));
        assert!(err("lb_prefixes: [10.1.0.0/33]\n").contains("0..=32"));
        assert!(err("vip: [10.0.0.1]\n").contains("unknown field"));
        let nine = (0..9).map(|i| format!("10.{i}.0.0/16")).collect::<Vec<_>>();
        assert!(err(&format!(
            "interfaces: [e]\nvips: [10.0.0.100]\nlb_prefixes: [{}]\n",
            nine.join(", ")
        ))
        .contains("at most 8"));
        assert!(err("lb_prefixes: [2001:db8::1/64]\n").contains("host bits set"));
        assert!(err("lb_prefixes: [2001:db8::/129]\n").contains("0..=128"));
        let five = (0..5)
            .map(|i| format!("2001:db8:{i}::/48"))
            .collect::<Vec<_>>();
        assert!(err(&format!(
            "interfaces: [e]\nvips: [10.0.0.100]\nlb_prefixes: [{}]\n",
            five.join(", ")
        ))
        .contains("5 IPv6 prefixes given, at most 4"));
    }

    #[test]
    fn ipv6_vips_and_lb_prefixes_fill_the_program_config_beside_ipv4_ones() {
        let s = Settings::parse(
            "interfaces: [eth0]\nvips: [10.0.0.100, \"2001:db8::100\"]\nlb_prefixes: [10.1.0.0/24, \"2001:db8:1::/64\", \"2001:db8:9::5\"]\n",
        )
        .unwrap();
        s.validate().unwrap();
        assert_eq!(s.vips[1], "2001:db8::100".parse::<IpAddr>().unwrap());
        assert_eq!(s.lb_prefixes[2].to_string(), "2001:db8:9::5/128");
        let c = s.program_config();
        assert_eq!((c.prefix_count, c.prefix6_count), (1, 2));
        let o = |a: &str| a.parse::<Ipv6Addr>().unwrap().octets();
        assert_eq!(c.prefixes6[0], DecapPrefix6::new(o("2001:db8:1::"), 64));
        assert_eq!(c.prefixes6[1], DecapPrefix6::new(o("2001:db8:9::5"), 128));
        let wire = |a: &str| lb_common::ipv6::addr6_wire(o(a));
        assert!(c.admits6(&wire("2001:db8:1::77")));
        assert!(!c.admits6(&wire("2001:db8:2::77")));
        let routes = Settings::parse("client_routes: [10.10.0.0/16, \"2001:db8:10::/64\"]\n")
            .unwrap()
            .client_routes;
        assert_eq!(
            routes.iter().map(|r| s.mss_for(r)).collect::<Vec<_>>(),
            [1432, 1392]
        );
    }
}
