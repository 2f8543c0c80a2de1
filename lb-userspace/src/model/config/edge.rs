//! Edge protection keys (see docs/edge-protection.md): a service's source filter and
//! SYN rate limit, and what happens to packets for a VIP's unlisted ports.
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{duration, source_net::SourceNet};

/// A service's source rules, prefixes of the VIP's family: the most specific prefix
/// matching a new connection's source decides; a prefix in both lists is denied; with
/// any `allow` rule a source no rule matches is refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourceFilter {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<SourceNet>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<SourceNet>,
}

impl SourceFilter {
    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }
}

/// Per source address (an IPv6 source: per prefix), the SYNs a service takes: a token
/// bucket of `burst` tokens refilled by `syns_per_second` each second.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub syns_per_second: u32,
    pub burst: u32,
    /// How long a source that ran out of tokens has all its SYNs dropped (whole
    /// seconds; 0s: only the bucket decides).
    #[serde(default, with = "duration")]
    pub block: Duration,
    /// An IPv6 service's buckets are per source prefix of this length (default
    /// `lb_common::edge::DEFAULT_RATE_PREFIX6_LEN`): whoever floods holds a whole /64 at least.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_prefix_len: Option<u8>,
}

/// Shortest `rate_limit.ipv6_prefix_len`: a /32 is a whole provider's allocation.
pub const MIN_RATE_PREFIX6_LEN: u8 = 32;

/// Longest `rate_limit.block`.
pub const MAX_BLOCK: Duration = Duration::from_secs(3600);

/// What happens to a packet for a VIP address on a port or protocol no service listens
/// on (ICMP always goes to the kernel).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UnlistedPorts {
    /// Handed to the kernel, as before: the VIP may carry the node's own traffic.
    #[default]
    Pass,
    Drop,
}
