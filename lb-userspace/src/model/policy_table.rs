//! The per-service policy table the data path reads for round robin and least
//! connections (Maglev and source hash use the ring instead). Pure, tested on the host.
//!
//! - Round robin: a schedule in which each backend appears in proportion to its weight,
//!   interleaved (smooth weighted round robin, as nginx does it), so that consecutive
//!   new flows alternate between backends instead of arriving in runs.
//! - Least connections: the candidate list, one entry per backend with positive weight;
//!   the data path draws two distinct entries and compares load per weight.
use lb_common::service::POLICY_TABLE_SLOTS;

/// One backend as the table builder sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableBackend {
    pub id: u32,
    /// Relative weight; 0 takes no place.
    pub weight: u64,
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// How many schedule entries each backend gets: its weight share of at most
/// `POLICY_TABLE_SLOTS` entries, by largest remainder; every positive weight keeps at
/// least one entry while there is room.
fn entries_per_backend(weights: &[u64]) -> Vec<u64> {
    let divisor = weights
        .iter()
        .copied()
        .filter(|w| *w > 0)
        .fold(0, gcd)
        .max(1);
    let reduced: Vec<u64> = weights.iter().map(|w| w / divisor).collect();
    let total: u64 = reduced.iter().sum();
    let slots = POLICY_TABLE_SLOTS as u64;
    if total <= slots {
        return reduced;
    }
    let mut counts: Vec<u64> = reduced.iter().map(|w| w * slots / total).collect();
    let mut remainders: Vec<(u64, usize)> = reduced
        .iter()
        .enumerate()
        .map(|(i, w)| (w * slots % total, i))
        .collect();
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut left = slots - counts.iter().sum::<u64>();
    for (_, i) in remainders {
        if left == 0 {
            break;
        }
        counts[i] += 1;
        left -= 1;
    }
    // A tiny weight must not vanish: take a slot from the largest count.
    for i in 0..counts.len() {
        if reduced[i] > 0 && counts[i] == 0 {
            let largest = (0..counts.len()).max_by_key(|j| counts[*j]).unwrap_or(i);
            if counts[largest] > 1 {
                counts[largest] -= 1;
                counts[i] = 1;
            }
        }
    }
    counts
}

/// Smooth weighted round-robin schedule: backend `i` appears exactly `counts[i]` times.
pub fn round_robin(backends: &[TableBackend]) -> Vec<u32> {
    let counts = entries_per_backend(&backends.iter().map(|b| b.weight).collect::<Vec<_>>());
    let total: u64 = counts.iter().sum();
    let mut current = vec![0i64; backends.len()];
    let mut schedule = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for i in 0..backends.len() {
            current[i] += counts[i] as i64;
            if current[i] > current[best] || counts[best] == 0 {
                best = i;
            }
        }
        current[best] -= total as i64;
        schedule.push(backends[best].id);
    }
    schedule
}

/// Candidates for least connections: every backend with positive weight, in id order.
pub fn least_conn(backends: &[TableBackend]) -> Vec<u32> {
    let mut ids: Vec<u32> = backends
        .iter()
        .filter(|b| b.weight > 0)
        .map(|b| b.id)
        .collect();
    ids.sort_unstable();
    ids.truncate(POLICY_TABLE_SLOTS as usize);
    ids
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    fn backends(weights: &[u64]) -> Vec<TableBackend> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| TableBackend {
                id: i as u32 + 10,
                weight: *w,
            })
            .collect()
    }

    fn counts(schedule: &[u32]) -> HashMap<u32, usize> {
        let mut c = HashMap::new();
        for id in schedule {
            *c.entry(*id).or_default() += 1;
        }
        c
    }

    #[test]
    fn weights_3_1_1_give_a_five_entry_interleaved_schedule() {
        let s = round_robin(&backends(&[3000, 1000, 1000]));
        assert_eq!(s, [10, 11, 10, 12, 10]);
    }

    #[test]
    fn equal_weights_alternate() {
        assert_eq!(round_robin(&backends(&[5, 5, 5])), [10, 11, 12]);
    }

    #[test]
    fn zero_weights_are_left_out_and_nothing_left_means_an_empty_table() {
        assert_eq!(round_robin(&backends(&[0, 2, 0])), [11]);
        assert!(round_robin(&backends(&[0, 0])).is_empty());
        assert_eq!(least_conn(&backends(&[1, 0, 7])), [10, 12]);
    }

    #[test]
    fn a_huge_weight_spread_is_scaled_into_the_table_without_losing_anyone() {
        let mut weights = vec![1u64; 100];
        weights.push(1_000_000);
        let s = round_robin(&backends(&weights));
        assert_eq!(s.len(), POLICY_TABLE_SLOTS as usize);
        let c = counts(&s);
        assert_eq!(c.len(), 101, "every backend keeps an entry");
        assert!(c[&110] > 3900);
    }

    proptest! {
        #[test]
        fn shares_follow_weights(weights in proptest::collection::vec(0u64..2000, 1..40)) {
            let s = round_robin(&backends(&weights));
            let total: u64 = weights.iter().sum();
            prop_assert!(s.len() <= POLICY_TABLE_SLOTS as usize);
            let c = counts(&s);
            for (i, w) in weights.iter().enumerate() {
                let got = c.get(&(i as u32 + 10)).copied().unwrap_or(0) as f64 / s.len().max(1) as f64;
                let want = *w as f64 / total.max(1) as f64;
                prop_assert!((got - want).abs() <= 0.01 || (*w > 0 && got > 0.0 && got <= want + 0.01),
                    "backend {} weight {} share {} want {}", i, w, got, want);
            }
        }
    }
}
