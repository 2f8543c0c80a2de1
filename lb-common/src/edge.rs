//! Edge protection: what a service's new connections must pass before they are placed.
//!
//! - Source filters: per service, CIDR rules that allow or deny. One longest-prefix-match
//!   trie holds every service's rules, keyed by [`EdgeAddr`] (service id, family, then
//!   the source address): the most specific rule matching the source decides, and a prefix
//!   listed both ways is denied (the controller writes the deny). When a service has any
//!   allow rule, a source matched by no rule is refused (`not_allowed`).
//! - SYN rate limits: per service and source (an IPv6 source's prefix), a token bucket
//!   ([`TokenBucket`]) in an LRU map keyed by [`RateKey4`] or [`RateKey6`], so memory
//!   stays bounded however many sources send.
//! - Unlisted ports: a packet to a VIP address on a port or protocol no service listens
//!   on, dropped when the operator asks for it ([`EDGE_UNLISTED_DROP`]).
//!
//! The checks run in their own program (`lb_edge`, tail-called by `lb_xdp`) and only for
//! packets without a flow entry of a service that has rules or a limit
//! ([`crate::service::SERVICE_F_EDGE`]): established flows never pay for them.
//!
//! The rule trie holds both families' prefixes ([`EdgeAddr::v4`], [`EdgeAddr::v6`]); IPv6
//! packets are checked by `lb_edge6`, tail-called by `lb_v6`.
//! The buckets are keyed by IPv4 source ([`RateKey4`]) and by IPv6 source prefix
//! ([`RateKey6`], a map of its own).
//!
//! Time in the buckets is the kernel's coarse monotonic clock in whole seconds
//! (`bpf_ktime_get_coarse_ns`, userspace `CLOCK_MONOTONIC_COARSE`), read by the data
//! path itself: a limit refills whether or not `lbd` runs.

/// The most rules (allow and deny together) one service may have: the per-rule counters
/// are a block of this many slots per service id.
pub const EDGE_RULES_PER_SERVICE: u32 = 64;

/// The data of a rule's trie key (`aya`'s `Key<EdgeAddr>` puts the prefix length in
/// front), shaped for both families: service id, family, then a 16-byte address (an IPv4
/// address in its first 4 bytes, the rest zero; in 4-byte words so that zeroing the rest
/// is three stores, not a byte loop the verifier refuses to a loader without
/// CAP_PERFMON). The prefix length of a rule for
/// `addr/len` is [`edge_prefix_len`]`(len)`: service id and family always match whole, so
/// an IPv4 rule never matches an IPv6 source of the same leading bits.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EdgeAddr {
    /// Service id, in big-endian order so the trie's bitwise match sees it whole
    /// whatever the host's order.
    pub service_be: u32,
    /// [`crate::net::FAMILY_IPV4`] (or 6), big-endian like the service id.
    pub family_be: u32,
    /// Source address (wire order), IPv4 in the first word.
    pub addr: [u32; 4],
}
const _: () = assert!(core::mem::size_of::<EdgeAddr>() == 24);

impl EdgeAddr {
    /// The key of IPv4 address `addr` (wire order) for service `service`.
    #[inline(always)]
    pub const fn v4(service: u32, addr: u32) -> Self {
        Self {
            service_be: service.to_be(),
            family_be: (crate::net::FAMILY_IPV4 as u32).to_be(),
            addr: [addr, 0, 0, 0],
        }
    }

    /// The key of IPv6 address `addr` (wire-order words) for service `service`.
    #[inline(always)]
    pub const fn v6(service: u32, addr: crate::ipv6::Addr6) -> Self {
        Self {
            service_be: service.to_be(),
            family_be: (crate::ipv6::FAMILY_IPV6 as u32).to_be(),
            addr,
        }
    }

    /// The IPv4 address (wire order) of a key made by [`Self::v4`].
    pub const fn v4_addr(&self) -> u32 {
        self.addr[0]
    }

    /// Whether the key is an IPv6 one ([`Self::v6`]).
    pub const fn is_v6(&self) -> bool {
        u32::from_be(self.family_be) == crate::ipv6::FAMILY_IPV6 as u32
    }
}

/// The trie prefix length of a rule for a `/bits` prefix: 32 bits of service id, 32 of
/// family, then the address's leading `bits`.
pub const fn edge_prefix_len(bits: u32) -> u32 {
    64 + bits
}

/// The trie's prefix length of a full IPv4 source lookup.
pub const EDGE_LOOKUP_LEN: u32 = edge_prefix_len(32);
/// The trie's prefix length of a full IPv6 source lookup: the whole key.
pub const EDGE_LOOKUP_LEN6: u32 = edge_prefix_len(128);
const _: () = assert!(EDGE_LOOKUP_LEN6 as usize == 8 * core::mem::size_of::<EdgeAddr>());

/// A rule: what it decides and which counter slot counts its matches.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EdgeRule {
    /// Index into the per-rule hit counters: `service id * EDGE_RULES_PER_SERVICE +` the
    /// rule's slot in the service's block (allocated by the controller).
    pub counter: u32,
    /// [`EDGE_ALLOW`] or [`EDGE_DENY`].
    pub verdict: u32,
}
const _: () = assert!(core::mem::size_of::<EdgeRule>() == 8);

pub const EDGE_ALLOW: u32 = 1;
pub const EDGE_DENY: u32 = 2;

/// A service's edge settings, by service id.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct EdgeService {
    /// Bit set of `EDGE_S_*`.
    pub flags: u32,
    /// SYNs a source may send per second (tokens added per second).
    pub rate: u32,
    /// Tokens a bucket holds at most: the SYNs a quiet source may send at once.
    pub burst: u32,
    /// Seconds a source that ran out of tokens has every SYN dropped, without refill;
    /// 0: only the bucket decides.
    pub block_secs: u32,
    /// An IPv6 service's bucket is per source prefix of this length
    /// ([`RateKey6::of`]); 0 for an IPv4 service.
    pub prefix6_len: u32,
}
const _: () = assert!(core::mem::size_of::<EdgeService>() == 20);

/// The default length of the IPv6 source prefix a bucket is kept for: a /64 is what a
/// single site or host is given (RFC 6177), so an attacker holds at least one, and
/// buckets per address would give it 2^64 fresh buckets.
pub const DEFAULT_RATE_PREFIX6_LEN: u32 = 64;

/// The service has at least one rule: look the source up in the trie.
pub const EDGE_S_RULES: u32 = 1 << 0;
/// The service has at least one allow rule: a source matched by no rule is refused.
pub const EDGE_S_ALLOW_LIST: u32 = 1 << 1;
/// The service limits SYNs per source.
pub const EDGE_S_RATE_LIMIT: u32 = 1 << 2;

/// The key of a source's token bucket.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RateKey4 {
    pub service: u32,
    /// Source address (wire order).
    pub addr: u32,
}
const _: () = assert!(core::mem::size_of::<RateKey4>() == 8);

/// The key of an IPv6 source prefix's token bucket: the source's first
/// `EdgeService::prefix6_len` bits, the rest zero (see [`DEFAULT_RATE_PREFIX6_LEN`]).
/// IPv6 buckets have a map of their own: an LRU hash's key size is fixed, and IPv4's
/// 8-byte keys hash faster.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RateKey6 {
    pub service: u32,
    /// The source prefix (wire-order words).
    pub prefix: crate::ipv6::Addr6,
}
const _: () = assert!(core::mem::size_of::<RateKey6>() == 20);

impl RateKey6 {
    /// The bucket key of source `src` (wire-order words) for `service`, whose buckets
    /// are per `/len` (0..=128; more is read as 128). Word by word, without a loop.
    #[inline(always)]
    pub const fn of(service: u32, src: &crate::ipv6::Addr6, len: u32) -> Self {
        Self {
            service,
            prefix: [
                src[0] & word_mask(len, 0),
                src[1] & word_mask(len, 1),
                src[2] & word_mask(len, 2),
                src[3] & word_mask(len, 3),
            ],
        }
    }
}

/// The mask (wire order) of word `word` of an address for a `/len` prefix.
#[inline(always)]
const fn word_mask(len: u32, word: u32) -> u32 {
    let start = word * 32;
    let bits = if len <= start {
        0
    } else if len >= start + 32 {
        32
    } else {
        len - start
    };
    if bits == 0 {
        0
    } else {
        (u32::MAX << (32 - bits)).to_be()
    }
}

/// A source's token bucket, in whole tokens and whole seconds of the kernel's coarse
/// monotonic clock (see the module documentation). CPUs
/// update it without locks: two SYNs of one source on two CPUs at once may both take the
/// same token, so a limit is exact per CPU and approximate across them.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TokenBucket {
    pub tokens: u32,
    /// Clock second of the last refill.
    pub refilled: u32,
    /// Until this clock second every SYN is dropped (see `EdgeService::block_secs`).
    pub blocked_until: u32,
    pub _pad: u32,
    /// SYNs of this source dropped by the limit since its bucket was created.
    pub dropped: u64,
}
const _: () = assert!(core::mem::size_of::<TokenBucket>() == 24);

/// What a SYN does to its source's bucket at clock second `now`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Take {
    /// A token taken: the SYN passes.
    Pass,
    /// No token (or blocked): the SYN is dropped.
    Drop,
}

/// A new bucket for a source's first SYN at `now`: full, minus that SYN's token.
pub const fn first_take(settings: &EdgeService, now: u32) -> (TokenBucket, Take) {
    let mut bucket = TokenBucket {
        tokens: settings.burst,
        refilled: now,
        blocked_until: 0,
        _pad: 0,
        dropped: 0,
    };
    let take = take_token(&mut bucket, settings, now);
    (bucket, take)
}

/// Takes a token for one SYN at clock second `now`: refills `rate` tokens per second
/// elapsed (up to `burst`), unless the source is blocked; runs out -> dropped, and blocked
/// for `block_secs`.
#[inline(always)]
pub const fn take_token(bucket: &mut TokenBucket, settings: &EdgeService, now: u32) -> Take {
    if now < bucket.blocked_until {
        bucket.refilled = now;
        bucket.dropped += 1;
        return Take::Drop;
    }
    let elapsed = now.wrapping_sub(bucket.refilled);
    if elapsed > 0 {
        let added = (elapsed as u64) * (settings.rate as u64);
        let filled = bucket.tokens as u64 + added;
        bucket.tokens = if filled > settings.burst as u64 {
            settings.burst
        } else {
            filled as u32
        };
        bucket.refilled = now;
    }
    if bucket.tokens == 0 {
        bucket.dropped += 1;
        if settings.block_secs > 0 {
            bucket.blocked_until = now.wrapping_add(settings.block_secs);
        }
        return Take::Drop;
    }
    bucket.tokens -= 1;
    Take::Pass
}

/// Per-service edge counters (a per-CPU array by service id, summed by userspace).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct EdgeCounters {
    /// Packets refused because the service has allow rules and none matched the source.
    pub not_allowed: u64,
    /// SYNs dropped by the source rate limit.
    pub rate_limited: u64,
}
const _: () = assert!(core::mem::size_of::<EdgeCounters>() == 16);

impl EdgeCounters {
    /// Adds another CPU's counters to this one.
    pub fn accumulate(&mut self, other: &EdgeCounters) {
        self.not_allowed += other.not_allowed;
        self.rate_limited += other.rate_limited;
    }
}

/// Slots of the drop memo ([`DropMemo`]); a power of two.
pub const EDGE_DROP_MEMO_SLOTS: u32 = 4096;

/// How long (seconds of the controller's clock) a remembered rule verdict stands. The
/// controller clears the memo whenever it writes the rules; this bounds what a packet
/// checked against the old rules while it did so can leave behind.
pub const EDGE_DROP_MEMO_SECS: u32 = 2;

/// [`DropMemo::counter`] of a packet no allow rule matched: counted on the service's
/// [`EdgeCounters::not_allowed`] instead of a rule's counter.
pub const DROP_MEMO_NOT_ALLOWED: u32 = u32::MAX;

/// [`DropMemo::counter`] of a SYN rate limit's block where no rule matched the source
/// (a service without rules): no rule's counter to count on.
pub const DROP_MEMO_NO_RULE: u32 = u32::MAX - 1;

/// A source's recent rule verdict on a VIP:port, remembered so that `lb_xdp` drops its
/// next packets itself, without the hand-over to `lb_edge` and its trie lookup: a flood
/// from few sources costs one array read a packet. Keyed by what the packet carries
/// (VIP, port, source), so that a SYN is checked right after the parse, before the
/// service lookup. One entry a slot ([`drop_memo_slot`]), direct mapped: a colliding
/// source overwrites it, and the next packet of the one overwritten takes the full check
/// again. An all-zero slot is empty (`until` 0 has passed). A source whose SYNs its rate
/// limit blocks is remembered too: its next SYNs are dropped by `lb_xdp` while its bucket
/// stays blocked, each counted in the bucket as `lb_edge` counts it, which costs the
/// bucket's lookup but not the hand-over and the trie.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DropMemo {
    /// The id of the service that refused the source, for counting.
    pub service: u32,
    /// Source address (wire order).
    pub addr: u32,
    /// The service's VIP (wire order).
    pub vip: u32,
    /// The service's port (wire order).
    pub vport: u16,
    pub _pad16: u16,
    /// Controller clock second from which it no longer stands.
    pub until: u32,
    /// The `counters::Reason` slot the drop is counted under.
    pub reason: u32,
    /// The rule's hit counter slot, or [`DROP_MEMO_NOT_ALLOWED`], or for a rate limit's
    /// block (`reason` `drop_rate_limited`) the slot of the rule that admitted the source
    /// or [`DROP_MEMO_NO_RULE`].
    pub counter: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<DropMemo>() == 32);

/// The drop memo slot of source `addr` to `vip`:`vport` (all wire order): a
/// multiplicative hash, so neighbouring addresses of one flood spread over the slots.
#[inline(always)]
pub const fn drop_memo_slot(vip: u32, vport: u16, addr: u32) -> u32 {
    let to = vip ^ (vport as u32).wrapping_mul(0x85eb_ca6b);
    let mixed = (addr ^ to.wrapping_mul(0xc2b2_ae35)).wrapping_mul(0x9e37_79b1);
    mixed >> (32 - EDGE_DROP_MEMO_SLOTS.trailing_zeros())
}

/// Bit of the edge settings word (`limits::GLOBAL_UNLISTED_PORTS`): packets to a VIP address on a
/// port or protocol no service listens on are dropped (else passed to the kernel).
pub const EDGE_UNLISTED_DROP: u32 = 1 << 0;

#[cfg(test)]
mod tests {
    use super::*;

    const SETTINGS: EdgeService = EdgeService {
        flags: EDGE_S_RATE_LIMIT,
        rate: 2,
        burst: 3,
        block_secs: 0,
        prefix6_len: 0,
    };

    #[test]
    fn an_ipv6_bucket_key_keeps_the_prefixs_bits_only() {
        let src = crate::ipv6::addr6_wire([
            0x20, 0x01, 0x0d, 0xb8, 0x00, 0x66, 0xab, 0xcd, 0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc,
            0xde, 0xf0,
        ]);
        let bytes = |key: RateKey6| -> Vec<u8> {
            key.prefix.iter().flat_map(|w| w.to_ne_bytes()).collect()
        };
        let mut want = vec![0x20, 0x01, 0x0d, 0xb8, 0x00, 0x66, 0xab, 0xcd];
        want.extend([0; 8]);
        assert_eq!(bytes(RateKey6::of(7, &src, 64)), want);
        let mut want48 = vec![0x20, 0x01, 0x0d, 0xb8, 0x00, 0x66];
        want48.extend([0; 10]);
        assert_eq!(bytes(RateKey6::of(7, &src, 48)), want48);
        let mut want60 = vec![0x20, 0x01, 0x0d, 0xb8, 0x00, 0x66, 0xab, 0xc0];
        want60.extend([0; 8]);
        assert_eq!(bytes(RateKey6::of(7, &src, 60)), want60);
        assert_eq!(RateKey6::of(7, &src, 128).prefix, src);
        assert_eq!(RateKey6::of(7, &src, 0).prefix, [0; 4]);
        assert_eq!(RateKey6::of(7, &src, 64).service, 7);
    }

    #[test]
    fn a_bucket_passes_its_burst_then_refills_by_rate_per_second() {
        let (mut bucket, first) = first_take(&SETTINGS, 100);
        assert_eq!(first, Take::Pass);
        let takes: Vec<Take> = (0..4)
            .map(|_| take_token(&mut bucket, &SETTINGS, 100))
            .collect();
        assert_eq!(takes, [Take::Pass, Take::Pass, Take::Drop, Take::Drop]);
        let later: Vec<Take> = (0..3)
            .map(|_| take_token(&mut bucket, &SETTINGS, 101))
            .collect();
        assert_eq!(later, [Take::Pass, Take::Pass, Take::Drop]);
        // Ten quiet seconds fill it only to the burst.
        let after: Vec<Take> = (0..4)
            .map(|_| take_token(&mut bucket, &SETTINGS, 111))
            .collect();
        assert_eq!(after, [Take::Pass, Take::Pass, Take::Pass, Take::Drop]);
        assert_eq!(bucket.dropped, 4);
    }

    #[test]
    fn a_source_that_runs_out_is_blocked_for_block_secs_without_refill() {
        let settings = EdgeService {
            block_secs: 5,
            ..SETTINGS
        };
        let (mut bucket, _) = first_take(&settings, 10);
        take_token(&mut bucket, &settings, 10);
        take_token(&mut bucket, &settings, 10);
        assert_eq!(take_token(&mut bucket, &settings, 10), Take::Drop);
        assert_eq!(bucket.blocked_until, 15);
        assert_eq!(take_token(&mut bucket, &settings, 14), Take::Drop);
        // Unblocked at 15, refilled for the one second since the last drop.
        assert_eq!(take_token(&mut bucket, &settings, 15), Take::Pass);
        assert_eq!(take_token(&mut bucket, &settings, 15), Take::Pass);
        assert_eq!(take_token(&mut bucket, &settings, 15), Take::Drop);
    }

    #[test]
    fn drop_memo_slots_are_in_range_and_spread_a_prefix() {
        let slots: std::collections::HashSet<u32> = (0..256u32)
            .map(|i| {
                let vip = u32::from_ne_bytes([10, 0, 0, 100]);
                drop_memo_slot(
                    vip,
                    80u16.to_be(),
                    u32::from_ne_bytes([203, 0, 113, i as u8]),
                )
            })
            .collect();
        assert!(slots.iter().all(|s| *s < EDGE_DROP_MEMO_SLOTS));
        assert!(slots.len() > 200, "{} distinct slots of 256", slots.len());
    }

    #[test]
    fn one_source_takes_different_drop_memo_slots_on_different_ports_and_vips() {
        let src = u32::from_ne_bytes([203, 0, 113, 7]);
        let slots: std::collections::HashSet<u32> = (0..64u16)
            .map(|i| {
                let vip = u32::from_ne_bytes([10, 0, 0, 100 + (i % 4) as u8]);
                drop_memo_slot(vip, (80 + i).to_be(), src)
            })
            .collect();
        assert!(slots.len() > 50, "{} distinct slots of 64", slots.len());
    }

    #[test]
    fn the_service_id_then_the_family_are_the_tries_leading_bits() {
        let key = EdgeAddr::v4(1, u32::from_ne_bytes([192, 0, 2, 7]));
        assert_eq!(key.service_be.to_ne_bytes(), [0, 0, 0, 1]);
        assert_eq!(key.family_be.to_ne_bytes(), [0, 0, 0, 4]);
        assert_eq!(key.addr[0].to_ne_bytes(), [192, 0, 2, 7]);
        assert_eq!(key.addr[1..], [0, 0, 0]);
        assert_eq!(key.v4_addr(), u32::from_ne_bytes([192, 0, 2, 7]));
        assert_eq!(EDGE_LOOKUP_LEN, 96);
        assert!(!key.is_v6());
    }

    #[test]
    fn an_ipv6_key_has_the_family_6_and_the_whole_address() {
        let addr =
            crate::ipv6::addr6_wire([0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7]);
        let key = EdgeAddr::v6(3, addr);
        assert_eq!(key.service_be.to_ne_bytes(), [0, 0, 0, 3]);
        assert_eq!(key.family_be.to_ne_bytes(), [0, 0, 0, 6]);
        assert_eq!(key.addr, addr);
        assert!(key.is_v6());
        assert_eq!(EDGE_LOOKUP_LEN6, 192);
    }
}
