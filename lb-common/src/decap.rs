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
}

const _: () = assert!(core::mem::size_of::<DecapConfig>() == 8 * MAX_LB_PREFIXES + 8);

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
    fn no_prefix_admits_nothing_and_slash_zero_admits_everything() {
        let mut config = DecapConfig::default();
        assert!(!config.admits(wire([10, 0, 0, 1])));
        config.prefixes[0] = DecapPrefix::new([1, 2, 3, 4], 0);
        config.prefix_count = 1;
        assert!(config.admits(wire([10, 0, 0, 1])));
        assert!(config.admits(wire([255, 255, 255, 255])));
    }
}
