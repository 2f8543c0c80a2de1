//! Weighted Maglev consistent hashing (Eisenbud et al., NSDI 2016, section 3.4), built in
//! userspace and written to the kernel as a flat table of backend ids.
//!
//! The table is a pure function of the backends (their identities and weights) and the
//! ring size: backends are sorted by identity before filling, and identities are hashed
//! with a fixed, version-stable hash. So every LB node computes the same table, whatever
//! order backends were added in, and after any restart.
//!
//! Weights: in each round a backend earns credit equal to its weight; whenever its credit
//! reaches the largest weight it claims its next preferred free slot. The heaviest
//! backends claim one slot per round and the others proportionally fewer, so shares
//! follow weights, fractional ratios included.
use lb_common::service::NO_BACKEND;

/// One backend as the table builder sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaglevBackend {
    /// Stable identity, e.g. `10.1.0.11:8080`; decides the backend's slot preferences.
    pub identity: String,
    /// Relative weight; 0 takes no slots.
    pub weight: u32,
    /// Value written into the slots it wins (the dense backend id).
    pub id: u32,
}

/// A backend's identity, `ADDRESS:PORT` as `SocketAddr`'s `Display` writes it (an IPv6
/// address in brackets); an IPv4 one without the formatting machinery: a re-plan makes
/// one per backend of the service.
pub fn identity(address: std::net::IpAddr, port: u16) -> String {
    match address {
        std::net::IpAddr::V4(v4) => identity4(v4, port),
        std::net::IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    }
}

fn identity4(address: std::net::Ipv4Addr, port: u16) -> String {
    fn decimal(out: &mut String, mut n: u32) {
        let mut digits = [0u8; 5];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        for d in &digits[i..] {
            out.push(*d as char);
        }
    }
    let mut out = String::with_capacity(21);
    for (k, octet) in address.octets().into_iter().enumerate() {
        if k > 0 {
            out.push('.');
        }
        decimal(&mut out, octet.into());
    }
    out.push(':');
    decimal(&mut out, port.into());
    out
}

/// 64-bit FNV-1a followed by the SplitMix64 finalizer: stable across versions and
/// platforms (unlike std's hashers), and well mixed in the low bits we reduce mod M.
fn stable_hash(data: &[u8], seed: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for b in data {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Builds a table of `ring_size` entries (`ring_size` must be prime). Entries hold backend
/// ids; with no backend of positive weight every entry is [`NO_BACKEND`].
pub fn build(backends: &[MaglevBackend], ring_size: u32) -> Vec<u32> {
    let m = ring_size as u64;
    let mut table = vec![NO_BACKEND; ring_size as usize];
    let mut live: Vec<&MaglevBackend> = backends.iter().filter(|b| b.weight > 0).collect();
    if live.is_empty() || m == 0 {
        return table;
    }
    live.sort_by(|a, b| a.identity.cmp(&b.identity));
    let max_weight = live.iter().map(|b| b.weight as u64).max().unwrap_or(1);
    let prefs: Vec<(u64, u64)> = live
        .iter()
        .map(|b| {
            let offset = stable_hash(b.identity.as_bytes(), 0x6d61_676c) % m;
            let skip = if m > 1 {
                stable_hash(b.identity.as_bytes(), 0x736b_6970) % (m - 1) + 1
            } else {
                1
            };
            (offset, skip)
        })
        .collect();
    let mut next = vec![0u64; live.len()];
    let mut credit = vec![0u64; live.len()];
    let mut filled = 0u64;
    loop {
        for (i, backend) in live.iter().enumerate() {
            credit[i] += backend.weight as u64;
            if credit[i] < max_weight {
                continue;
            }
            credit[i] -= max_weight;
            let (offset, skip) = prefs[i];
            // m is prime and 1 <= skip < m, so this walk visits every slot; the table is
            // not full, so it ends.
            loop {
                let slot = ((offset + next[i] * skip) % m) as usize;
                next[i] += 1;
                if table[slot] == NO_BACKEND {
                    table[slot] = backend.id;
                    filled += 1;
                    break;
                }
            }
            if filled == m {
                return table;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    fn backends(weights: &[u32]) -> Vec<MaglevBackend> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| MaglevBackend {
                identity: format!("10.1.{}.{}:8080", i / 200, i % 200 + 10),
                weight: *w,
                id: i as u32,
            })
            .collect()
    }

    fn shares(table: &[u32]) -> HashMap<u32, f64> {
        let mut counts = HashMap::new();
        for id in table {
            *counts.entry(*id).or_insert(0u64) += 1;
        }
        counts
            .into_iter()
            .map(|(id, n)| (id, n as f64 / table.len() as f64))
            .collect()
    }

    fn assert_shares_follow_weights(weights: &[u32]) {
        let table = build(&backends(weights), 65537);
        let got = shares(&table);
        let total: u32 = weights.iter().sum();
        for (i, w) in weights.iter().enumerate() {
            let want = *w as f64 / total as f64;
            let have = got.get(&(i as u32)).copied().unwrap_or(0.0);
            assert!(
                (have - want).abs() <= 0.01,
                "weights {weights:?}: backend {i} has {have:.4} of slots, wants {want:.4}"
            );
        }
    }

    #[test]
    fn shares_are_within_one_percent_of_weight_shares() {
        assert_shares_follow_weights(&[1, 1, 1]);
        assert_shares_follow_weights(&[3, 1, 1]);
        assert_shares_follow_weights(&[1, 2, 3, 4, 5]);
        assert_shares_follow_weights(&[1000, 1, 500, 250]);
        assert_shares_follow_weights(&[7; 50]);
    }

    #[test]
    fn zero_weight_backends_take_no_slots_and_empty_means_no_backend() {
        let table = build(&backends(&[0, 1]), 13);
        assert!(table.iter().all(|id| *id == 1));
        assert!(build(&backends(&[0, 0]), 13)
            .iter()
            .all(|id| *id == NO_BACKEND));
        assert!(build(&[], 13).iter().all(|id| *id == NO_BACKEND));
    }

    #[test]
    fn table_does_not_depend_on_insertion_order() {
        let mut list = backends(&[1, 2, 3, 1, 1]);
        let a = build(&list, 65537);
        list.reverse();
        assert_eq!(a, build(&list, 65537));
        list.swap(1, 3);
        assert_eq!(a, build(&list, 65537));
    }

    /// Removing one of N backends must move its own 1/N of slots and barely anything else.
    fn assert_removal_disruption(n: usize) {
        let all = backends(&vec![1; n]);
        let before = build(&all, 65537);
        for removed in [0, n / 2, n - 1] {
            let rest: Vec<_> = all
                .iter()
                .filter(|b| b.id != removed as u32)
                .cloned()
                .collect();
            let after = build(&rest, 65537);
            let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
            let fraction = moved as f64 / 65537.0;
            assert!(
                fraction <= 1.0 / n as f64 + 0.01,
                "n={n}, removed {removed}: {fraction:.4} of slots moved"
            );
        }
    }

    #[test]
    fn removing_one_backend_moves_at_most_its_share_plus_one_percent() {
        for n in [3, 5, 10, 50] {
            assert_removal_disruption(n);
        }
    }

    #[test]
    fn identity_is_what_format_writes() {
        let octets = [0u8, 1, 9, 10, 99, 100, 199, 200, 255];
        let ports = [
            0u16, 1, 9, 10, 80, 99, 100, 999, 1000, 8080, 9999, 10000, 65535,
        ];
        for a in octets {
            for b in octets {
                for p in ports {
                    let addr = std::net::Ipv4Addr::new(a, b, 255 - a, b / 2);
                    assert_eq!(identity(addr.into(), p), format!("{addr}:{p}"));
                }
            }
        }
    }

    /// Golden vectors: every LB node of a tier must build the same table from the same
    /// backends, whatever its version. A change that makes this test fail gives a new
    /// `lbd` a different table than the nodes it serves beside (and than itself before
    /// the upgrade), so established flows that ECMP moves between nodes, or that lose
    /// their flow entry, land on other backends: a breaking upgrade, see docs/tier.md
    /// ("Identical tables on every node"). Do not update the values; keep the old
    /// builder instead. They were checked against an independent implementation of the
    /// algorithm above.
    #[test]
    fn golden_tables_are_unchanged() {
        // Weights in the plan's unit (thousandths); the weight-0 backend takes no slot.
        let input = |identity: &str, weight: u32, id: u32| MaglevBackend {
            identity: identity.to_string(),
            weight,
            id,
        };
        let backends = [
            input("10.1.0.11:8080", 1000, 0),
            input("10.1.0.12:8080", 2000, 1),
            input("10.1.0.13:8080", 1000, 2),
            input("10.2.0.7:443", 0, 3),
        ];
        assert_eq!(
            build(&backends, 13),
            [2, 1, 1, 1, 0, 1, 1, 0, 1, 2, 0, 2, 1]
        );
        let big = build(&backends, 65537);
        assert_eq!(
            big[..32],
            [
                2, 1, 0, 0, 1, 2, 1, 2, 0, 1, 1, 0, 2, 1, 2, 0, 1, 2, 1, 0, 0, 2, 1, 2, 0, 1, 1, 0,
                2, 1, 2, 0
            ]
        );
        // 64-bit FNV-1a over the whole table, each entry as 4 little-endian bytes.
        let mut fnv = 0xcbf2_9ce4_8422_2325u64;
        for byte in big.iter().flat_map(|id| id.to_le_bytes()) {
            fnv = (fnv ^ byte as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
        assert_eq!(fnv, 0x2415_a1d0_18ec_b274);
        let count = |id: u32| big.iter().filter(|slot| **slot == id).count();
        assert_eq!([count(0), count(1), count(2)], [16384, 32769, 16384]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn every_slot_holds_a_live_backend(weights in proptest::collection::vec(1u32..20, 1..30)) {
            let table = build(&backends(&weights), 1009);
            prop_assert!(table.iter().all(|id| (*id as usize) < weights.len()));
        }
    }
}
