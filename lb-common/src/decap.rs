//! The backend's decapsulation program (`lb_decap_tc`, `lb_decap_xdp` in the object
//! `lb-decap`): what it is told, what it counts, and the one decision both sides must
//! agree on, whether an outer source is the LB tier's.
//!
//! The headers are `crate::encap`'s, which the load balancer builds. Two encapsulations
//! are undone, both an outer IPv4 header (20 bytes, no options) in
//! front of the client's own IPv4 packet:
//! - IPIP: the outer header's protocol is 4;
//! - GUE "variant 1": the outer header's protocol is UDP (17) and the UDP destination port
//!   is [`DecapConfig::gue_port`] (the LB's, [`crate::encap::DEFAULT_GUE_PORT`] unless
//!   configured); the UDP payload is the inner IPv4 packet itself, with
//!   no GUE header (the version bits of the inner header, 0b01.. for IPv4, are what
//!   variant 1 means).
//!
//! An encapsulated packet whose outer source is outside every configured prefix is
//! dropped and counted: the inner source is whatever the sender wrote, so decapsulating
//! it would let anyone reach the backend's VIP sockets as any client.

/// The decap program's settings (array map [`MAP_DECAP_CONFIG`], one entry).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecapConfig {
    /// The LB tier's prefixes, the first [`DecapConfig::prefix_count`] used.
    pub prefixes: [DecapPrefix; MAX_LB_PREFIXES],
    pub prefix_count: u32,
    /// The GUE UDP destination port (wire order).
    pub gue_port: u16,
    pub _pad: u16,
    /// The LB tier's IPv6 prefixes (outer sources of `ipip` and `gue` over IPv6), the
    /// first [`DecapConfig::prefix6_count`] used.
    pub prefixes6: [DecapPrefix6; MAX_LB_PREFIXES6],
    pub prefix6_count: u32,
    pub _pad6: u32,
}

const _: () = assert!(
    core::mem::size_of::<DecapConfig>() == 8 * MAX_LB_PREFIXES + 8 + 32 * MAX_LB_PREFIXES6 + 8
);

/// One IPv4 prefix as address and mask, both wire order; `addr` has no bits outside
/// `mask`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecapPrefix {
    pub addr: u32,
    pub mask: u32,
}

const _: () = assert!(core::mem::size_of::<DecapPrefix>() == 8);

/// How many LB-tier prefixes the program checks (a bounded loop).
pub const MAX_LB_PREFIXES: usize = 8;
/// How many LB-tier IPv6 prefixes the program checks.
pub const MAX_LB_PREFIXES6: usize = 4;

/// One IPv6 prefix as address and mask words, both wire order; `addr` has no bits outside
/// `mask`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecapPrefix6 {
    pub addr: [u32; 4],
    pub mask: [u32; 4],
}

const _: () = assert!(core::mem::size_of::<DecapPrefix6>() == 32);

impl DecapPrefix6 {
    /// The prefix `octets`/`len` (host bits cleared); `len` above 128 is taken as 128.
    pub const fn new(octets: [u8; 16], len: u8) -> Self {
        let len = if len > 128 { 128 } else { len } as u32;
        let mut p = Self {
            addr: [0; 4],
            mask: [0; 4],
        };
        let mut i = 0;
        while i < 4 {
            let bits = len.saturating_sub(32 * i as u32);
            let host = match bits {
                0 => 0,
                b if b >= 32 => u32::MAX,
                b => u32::MAX << (32 - b),
            };
            p.mask[i] = host.to_be();
            let o = [
                octets[4 * i],
                octets[4 * i + 1],
                octets[4 * i + 2],
                octets[4 * i + 3],
            ];
            p.addr[i] = u32::from_ne_bytes(o) & p.mask[i];
            i += 1;
        }
        p
    }

    #[inline(always)]
    pub const fn contains(&self, addr: &[u32; 4]) -> bool {
        addr[0] & self.mask[0] == self.addr[0]
            && addr[1] & self.mask[1] == self.addr[1]
            && addr[2] & self.mask[2] == self.addr[2]
            && addr[3] & self.mask[3] == self.addr[3]
    }
}

impl DecapPrefix {
    /// The prefix `octets`/`len` (host bits cleared); `len` above 32 is taken as 32.
    pub const fn new(octets: [u8; 4], len: u8) -> Self {
        let len = if len > 32 { 32 } else { len };
        let mask_host = if len == 0 { 0 } else { u32::MAX << (32 - len) };
        let mask = mask_host.to_be();
        Self {
            addr: u32::from_ne_bytes(octets) & mask,
            mask,
        }
    }

    #[inline(always)]
    pub const fn contains(&self, addr: u32) -> bool {
        addr & self.mask == self.addr
    }
}

impl DecapConfig {
    /// Whether `src` (wire order) is in one of the configured prefixes.
    #[inline(always)]
    pub fn admits(&self, src: u32) -> bool {
        let mut i = 0;
        while i < MAX_LB_PREFIXES {
            if (i as u32) < self.prefix_count && self.prefixes[i].contains(src) {
                return true;
            }
            i += 1;
        }
        false
    }

    /// Whether `src` (wire-order words) is in one of the configured IPv6 prefixes.
    #[inline(always)]
    pub fn admits6(&self, src: &[u32; 4]) -> bool {
        let mut i = 0;
        while i < MAX_LB_PREFIXES6 {
            if (i as u32) < self.prefix6_count && self.prefixes6[i].contains(src) {
                return true;
            }
            i += 1;
        }
        false
    }
}

/// Counter slots of [`MAP_DECAP_COUNTERS`] (a per-CPU array of `u64`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecapCounter {
    /// IPIP packets from the LB tier, decapsulated.
    DecapIpip = 0,
    /// GUE packets from the LB tier, decapsulated.
    DecapGue = 1,
    /// Encapsulated packets from outside the LB-tier prefixes, dropped.
    DropOutsidePrefix = 2,
    /// Encapsulated packets that cannot be decapsulated (outer options or fragment, an
    /// inner packet that is not IPv4, truncated), dropped.
    DropMalformed = 3,
    /// Encapsulated packets the kernel refused to shrink, dropped.
    DropShrinkFailed = 4,
    /// Everything else, passed untouched.
    PassNotEncapsulated = 5,
}

pub const DECAP_COUNTER_COUNT: u32 = 6;

impl DecapCounter {
    pub const ALL: [DecapCounter; DECAP_COUNTER_COUNT as usize] = [
        DecapCounter::DecapIpip,
        DecapCounter::DecapGue,
        DecapCounter::DropOutsidePrefix,
        DecapCounter::DropMalformed,
        DecapCounter::DropShrinkFailed,
        DecapCounter::PassNotEncapsulated,
    ];

    /// The name in `lb-decap stats` and its JSON.
    pub const fn name(self) -> &'static str {
        match self {
            DecapCounter::DecapIpip => "decap_ipip",
            DecapCounter::DecapGue => "decap_gue",
            DecapCounter::DropOutsidePrefix => "drop_outside_prefix",
            DecapCounter::DropMalformed => "drop_malformed",
            DecapCounter::DropShrinkFailed => "drop_shrink_failed",
            DecapCounter::PassNotEncapsulated => "pass_not_encapsulated",
        }
    }
}

pub const MAP_DECAP_CONFIG: &str = "DECAP_CONFIG";
pub const MAP_DECAP_COUNTERS: &str = "DECAP_COUNTERS";
/// The tc (ingress) and XDP entry points of the decap object.
pub const PROGRAM_DECAP_TC: &str = "lb_decap_tc";
pub const PROGRAM_DECAP_XDP: &str = "lb_decap_xdp";

#[cfg(feature = "user")]
// SAFETY: `#[repr(C)]`, integers only, no implicit padding (the size assertions above).
unsafe impl aya::Pod for DecapConfig {}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(o: [u8; 4]) -> u32 {
        u32::from_ne_bytes(o)
    }

    #[test]
    fn a_prefix_admits_exactly_its_addresses() {
        let mut config = DecapConfig::default();
        config.prefixes[0] = DecapPrefix::new([10, 1, 7, 9], 24);
        config.prefixes[1] = DecapPrefix::new([192, 168, 5, 5], 32);
        config.prefix_count = 2;
        assert_eq!(config.prefixes[0].addr, wire([10, 1, 7, 0]));
        assert!(config.admits(wire([10, 1, 7, 0])));
        assert!(config.admits(wire([10, 1, 7, 255])));
        assert!(!config.admits(wire([10, 1, 8, 1])));
        assert!(!config.admits(wire([10, 1, 6, 255])));
        assert!(config.admits(wire([192, 168, 5, 5])));
        assert!(!config.admits(wire([192, 168, 5, 4])));
        // A slot beyond the count is not read.
        config.prefix_count = 1;
        assert!(!config.admits(wire([192, 168, 5, 5])));
    }

    #[test]
    fn an_ipv6_prefix_admits_exactly_its_addresses() {
        let addr = |s: &str| {
            let o = s.parse::<std::net::Ipv6Addr>().unwrap().octets();
            crate::ipv6::addr6_wire(o)
        };
        let o = |s: &str| s.parse::<std::net::Ipv6Addr>().unwrap().octets();
        let mut config = DecapConfig::default();
        config.prefixes6[0] = DecapPrefix6::new(o("2001:db8:1::77"), 64);
        config.prefixes6[1] = DecapPrefix6::new(o("2001:db8:9::5"), 128);
        config.prefixes6[2] = DecapPrefix6::new(o("2001:db8:a0::"), 44);
        config.prefix6_count = 3;
        assert_eq!(config.prefixes6[0].addr, addr("2001:db8:1::"));
        assert!(config.admits6(&addr("2001:db8:1::1")));
        assert!(config.admits6(&addr("2001:db8:1:0:ffff:ffff:ffff:ffff")));
        assert!(!config.admits6(&addr("2001:db8:1:1::1")));
        assert!(config.admits6(&addr("2001:db8:9::5")));
        assert!(!config.admits6(&addr("2001:db8:9::4")));
        assert!(config.admits6(&addr("2001:db8:af::1")));
        assert!(!config.admits6(&addr("2001:db8:b0::1")));
        config.prefix6_count = 2;
        assert!(!config.admits6(&addr("2001:db8:af::1")));
        assert!(!DecapConfig::default().admits6(&addr("2001:db8:1::1")));
    }

    #[test]
    fn no_prefix_admits_nothing_and_slash_zero_admits_everything() {
        let mut config = DecapConfig::default();
        assert!(!config.admits(wire([10, 0, 0, 1])));
        config.prefixes[0] = DecapPrefix::new([1, 2, 3, 4], 0);
        config.prefix_count = 1;
        assert!(config.admits(wire([10, 0, 0, 1])));
        assert!(config.admits(wire([255, 255, 255, 255])));
    }
}
