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

/// One timed row of an [`interleaved`] run: runs round `r` and returns that round's
/// median call in ns (untimed work before or after the calls is its own business).
pub type Round<'a> = Box<dyn FnMut(usize) -> u64 + 'a>;

/// A [`Round`] of `calls` calls of `one(call_index)` (each returning one call's own time
/// in ns), numbered on from round to round as in [`per_call`].
pub fn calls<'a>(calls: usize, mut one: impl FnMut(usize) -> u64 + 'a) -> Round<'a> {
    Box::new(move |r| {
        let times: Vec<u64> = (0..calls).map(|i| one(r * calls + i)).collect();
        median_u64(&times)
    })
}

/// A row's figures beside the floor it was interleaved with.
#[derive(Clone, Copy, Debug)]
pub struct Net {
    /// Min and median over rounds of the row's round medians.
    pub gross: Stat,
    /// Min and median over rounds of (the row's round median minus the floor's median
    /// in the same round).
    pub net: Stat,
}

/// Runs `rounds` rounds; each runs the floor, then every row in turn, so that the floor
/// is measured in every round beside the rows (a neighbour's burst, a frequency change
/// or a cold cache hits both), and each row's net figure is taken within its round.
/// Returns the floor's figures and each row's, in order.
pub fn interleaved(rounds: usize, mut floor: Round, mut rows: Vec<Round>) -> (Stat, Vec<Net>) {
    let mut floors = Vec::with_capacity(rounds);
    let mut per_row: Vec<Vec<u64>> = vec![Vec::with_capacity(rounds); rows.len()];
    for r in 0..rounds {
        floors.push(floor(r));
        for (row, times) in rows.iter_mut().zip(&mut per_row) {
            times.push(row(r));
        }
    }
    let stat = |v: &[u64]| Stat {
        min: v.iter().copied().min().unwrap_or(0),
        median: median_u64(v),
    };
    let nets = per_row
        .iter()
        .map(|times| {
            let net: Vec<u64> = times
                .iter()
                .zip(&floors)
                .map(|(t, f)| t.saturating_sub(*f))
                .collect();
            Net {
                gross: stat(times),
                net: stat(&net),
            }
        })
        .collect();
    (stat(&floors), nets)
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
    fn interleaved_rounds_run_the_floor_first_and_net_each_round_by_its_floor() {
        let order = std::cell::RefCell::new(Vec::new());
        let floor_times = [10, 30, 20];
        let row_times = [15, 40, 60];
        let (floor, rows) = interleaved(
            3,
            Box::new(|r| {
                order.borrow_mut().push(("floor", r));
                floor_times[r]
            }),
            vec![calls(2, |i| {
                order.borrow_mut().push(("row", i));
                row_times[i / 2]
            })],
        );
        assert_eq!(
            *order.borrow(),
            [
                ("floor", 0),
                ("row", 0),
                ("row", 1),
                ("floor", 1),
                ("row", 2),
                ("row", 3),
                ("floor", 2),
                ("row", 4),
                ("row", 5)
            ]
        );
        assert_eq!((floor.min, floor.median), (10, 20));
        // Round nets 5, 10, 40: not 60 - 20 or 15 - 10 across rounds.
        let row = rows[0];
        assert_eq!((row.gross.min, row.gross.median), (15, 40));
        assert_eq!((row.net.min, row.net.median), (5, 10));
    }

    #[test]
    fn rounds_are_summarised_by_min_and_median_of_round_medians() {
        let s = per_call(3, 3, |i| [10, 20, 30, 1, 2, 3, 7, 8, 9][i]);
        assert_eq!((s.min, s.median), (2, 8));
    }
}
