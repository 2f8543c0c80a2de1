//! Flap damping: a backend whose probes keep alternating between passing and failing is
//! held out of rotation until it is stable again. The state machine alone cannot see
//! this: it counts consecutive results, so results that alternate never reach either
//! threshold and a backend that is down half the time stays `healthy`.
//!
//! In the spirit of BGP route-flap damping (a penalty per flap, a suppress limit, a
//! reuse limit), counted in probes rather than seconds so that the rule does not depend
//! on the interval: among the last `window` results, a *flip* is a result that differs
//! from the one before it. With `flips` or more flips in the window the backend is
//! *flapping* and held unhealthy; it is released after `window` consecutive successful
//! probes (a clean window), which a backend still flapping never gives. Defaults 10 and
//! 7: a backend failing every other probe (about 9 flips) is held, one failing one probe
//! in three (at most 6 flips in 10) is not, and a backend that died and came back (one
//! flip per event) is never held, so the normal detection and recovery bounds stand.

/// The most results the history holds.
pub const MAX_WINDOW: u32 = crate::model::config::MAX_FLAP_WINDOW;

/// What one result did to the damping state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlapChange {
    /// The backend started flapping: it is held, with this many flips in the window.
    Held {
        flips: u32,
    },
    /// A held backend gave a clean window and is released.
    Released,
    Nothing,
}

/// The damping state of one backend.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flap {
    /// The last results, newest in bit 0, 1 = success.
    history: u64,
    /// How many results `history` holds (at most the window).
    len: u32,
    held: bool,
    /// Consecutive successes, for the release.
    passes: u32,
}

impl Flap {
    pub fn held(&self) -> bool {
        self.held
    }

    /// Flips among the last `window` results.
    pub fn flips(&self, window: u32) -> u32 {
        let n = self.len.min(window);
        if n < 2 {
            return 0;
        }
        // Adjacent results differ where the history and itself shifted by one differ.
        let pairs = (self.history ^ (self.history >> 1)) & ((1u64 << (n - 1)) - 1);
        pairs.count_ones()
    }

    /// Takes one probe result. `window` 0 turns damping off (and releases a held backend).
    pub fn observe(&mut self, ok: bool, window: u32, flips: u32) -> FlapChange {
        let window = window.min(MAX_WINDOW);
        self.history = (self.history << 1) | u64::from(ok);
        self.len = (self.len + 1).min(MAX_WINDOW);
        self.passes = if ok { self.passes + 1 } else { 0 };
        if window == 0 {
            return self.release_if(self.held);
        }
        if self.held {
            return self.release_if(self.passes >= window);
        }
        let now = self.flips(window);
        if now >= flips.max(1) {
            self.held = true;
            return FlapChange::Held { flips: now };
        }
        FlapChange::Nothing
    }

    /// Takes back a hold that [`Flap::observe`] just placed, keeping the history, so
    /// that the next result weighs the hold again (see `Fleet::observe`).
    pub fn refuse_hold(&mut self) {
        self.held = false;
    }

    fn release_if(&mut self, release: bool) -> FlapChange {
        if release {
            self.held = false;
            // A fresh start: the flips that led to the hold must not hold it again.
            self.history = 0;
            self.len = 0;
            return FlapChange::Released;
        }
        FlapChange::Nothing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds a script (`+` pass, `-` fail) with the default window 10 and 7 flips;
    /// returns the held state after each result (`H` held, `.` not).
    fn run(script: &str) -> String {
        let mut f = Flap::default();
        script
            .chars()
            .map(|c| {
                f.observe(c == '+', 10, 7);
                if f.held() {
                    'H'
                } else {
                    '.'
                }
            })
            .collect()
    }

    #[test]
    fn alternating_results_are_held_until_a_clean_window() {
        // (script, held after each result)
        let cases = [
            // Every other probe fails: 7 flips after 8 results.
            ("+-+-+-+-+-+-", ".......HHHHH"),
            // Released after 10 consecutive passes, not before.
            ("+-+-+-+-+++++++++++", ".......HHHHHHHHHH.."),
            // A run of passes broken by one failure starts the count again.
            (
                "+-+-+-+-+++++++++-++++++++++",
                ".......HHHHHHHHHHHHHHHHHHHH.",
            ),
            // One failure in three is at most 6 flips in 10: never held.
            ("++-++-++-++-++-++-++-", "....................."),
            // Died and came back: one flip each, never held.
            ("++++----------++++++", "...................."),
            // Two results in a row each way (thresholds 2/2 see verdict changes): 4-5
            // flips in 10, not held.
            ("++--++--++--++--", "................"),
        ];
        for (script, want) in cases {
            assert_eq!(run(script), want, "results {script}");
        }
    }

    #[test]
    fn flips_are_counted_within_the_window_only() {
        let mut f = Flap::default();
        for ok in [true, false, true, false, true, false] {
            f.observe(ok, 64, 64);
        }
        assert_eq!(f.flips(64), 5);
        assert_eq!(f.flips(3), 2);
        for _ in 0..10 {
            f.observe(true, 64, 64);
        }
        assert_eq!(f.flips(10), 0, "the flips left a 10-result window");
        assert_eq!(f.flips(64), 6);
    }

    #[test]
    fn a_zero_window_turns_damping_off_and_releases() {
        let mut f = Flap::default();
        for ok in [true, false, true, false, true, false, true, false] {
            f.observe(ok, 10, 7);
        }
        assert!(f.held());
        assert_eq!(f.observe(false, 0, 7), FlapChange::Released);
        for ok in [true, false, true, false, true, false, true, false] {
            assert_eq!(f.observe(ok, 0, 7), FlapChange::Nothing);
        }
    }

    #[test]
    fn the_hold_reports_its_flips() {
        let mut f = Flap::default();
        let changes: Vec<FlapChange> = [true, false, true, false, true, false, true, false]
            .into_iter()
            .map(|ok| f.observe(ok, 10, 7))
            .collect();
        assert_eq!(changes[7], FlapChange::Held { flips: 7 });
        assert!(changes[..7].iter().all(|c| *c == FlapChange::Nothing));
    }
}
