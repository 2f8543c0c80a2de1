//! Summaries of repeated measurements: the benchmarks report medians (robust against a
//! neighbour's compile job stealing a core for a moment) and minima (closest to the cost
//! of the code itself), never means.
use std::time::{Duration, Instant};

/// Median of `values` (the upper one of the middle two for an even count); 0 if empty.
pub fn median_u64(values: &[u64]) -> u64 {
    let mut v = values.to_vec();
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

/// Median of `values` (the upper one of the middle two for an even count); NaN if empty.
pub fn median_f64(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Min and median over rounds of each round's median per-call time, in ns.
#[derive(Clone, Copy, Debug)]
pub struct Stat {
    pub min: u64,
    pub median: u64,
}

/// Runs `rounds` rounds of `calls` calls of `one(call_index)` (which returns one call's
/// own time in ns) and summarises each round by its median.
pub fn per_call(rounds: usize, calls: usize, mut one: impl FnMut(usize) -> u64) -> Stat {
    per_call_rounds(rounds, |r| {
        let times: Vec<u64> = (0..calls).map(|i| one(r * calls + i)).collect();
        median_u64(&times)
    })
}

/// Like [`per_call`], but the caller runs a whole round (and may clean up after it
/// without that being timed) and returns the round's median.
pub fn per_call_rounds(rounds: usize, mut round: impl FnMut(usize) -> u64) -> Stat {
    let per_round: Vec<u64> = (0..rounds).map(&mut round).collect();
    Stat {
        min: per_round.iter().copied().min().unwrap_or(0),
        median: median_u64(&per_round),
    }
}

/// Wall-clock time of `f`, and its result.
pub fn timed<T>(f: impl FnOnce() -> T) -> (Duration, T) {
    let start = Instant::now();
    let value = f();
    (start.elapsed(), value)
}

pub use crate::packet_rig::pin_to_cpu;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_take_the_middle_and_ignore_order() {
        assert_eq!(median_u64(&[5, 1, 3]), 3);
        assert_eq!(median_u64(&[4, 1, 3, 2]), 3);
        assert_eq!(median_u64(&[]), 0);
        assert_eq!(median_f64(&[2.0, f64::NAN, 1.0, 3.0]), 2.0);
        assert!(median_f64(&[]).is_nan());
    }

    #[test]
    fn rounds_are_summarised_by_min_and_median_of_round_medians() {
        let s = per_call(3, 3, |i| [10, 20, 30, 1, 2, 3, 7, 8, 9][i]);
        assert_eq!((s.min, s.median), (2, 8));
    }
}
