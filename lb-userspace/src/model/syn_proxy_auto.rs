//! `syn_proxy: auto`: when a service's SYN proxy switches on and off, from the count of
//! its SYNs (see docs/edge-protection.md). Pure: the runtime feeds it readings.
use std::time::{Duration, Instant};

use crate::model::config::SynProxyAuto;

/// Readings closer together than this are skipped: a rate over a shorter time is noise.
pub const SAMPLE: Duration = Duration::from_secs(1);

/// One service's switch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AutoSwitch {
    /// Whether the proxy is on.
    pub on: bool,
    /// Switches since lbd started, both ways.
    pub switches: u64,
    /// The SYNs a second at the last reading that measured one.
    pub rate: f64,
    /// While on: since when the rate has been under `off_below`.
    quiet_since: Option<Instant>,
    /// The last reading: the SYN count and when.
    last: Option<(u64, Instant)>,
}

impl AutoSwitch {
    /// Takes a reading of the service's SYN count `total` (a counter since the data path
    /// started) at `now`. `Some(on)` when the proxy switches.
    pub fn observe(&mut self, auto: &SynProxyAuto, total: u64, now: Instant) -> Option<bool> {
        let Some((before, at)) = self.last else {
            self.last = Some((total, now));
            return None;
        };
        let secs = now.saturating_duration_since(at);
        if secs < SAMPLE {
            return None;
        }
        self.last = Some((total, now));
        // A counter that went back (the data path restarted) measures nothing this time.
        self.rate = total.saturating_sub(before) as f64 / secs.as_secs_f64();
        if !self.on {
            if self.rate > auto.on_above as f64 {
                self.on = true;
                self.quiet_since = None;
                self.switches += 1;
                return Some(true);
            }
            return None;
        }
        if self.rate >= auto.off_below as f64 {
            self.quiet_since = None;
            return None;
        }
        let since = *self.quiet_since.get_or_insert(at);
        if now.saturating_duration_since(since) >= auto.hold {
            self.on = false;
            self.quiet_since = None;
            self.switches += 1;
            return Some(false);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auto() -> SynProxyAuto {
        SynProxyAuto {
            on_above: 1000,
            off_below: 100,
            hold: Duration::from_secs(10),
        }
    }

    #[test]
    fn switches_on_above_the_threshold_and_off_only_after_the_hold_below_the_other() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut sw = AutoSwitch::default();
        let cfg = auto();
        assert_eq!(
            sw.observe(&cfg, 0, at(0)),
            None,
            "a first reading measures nothing"
        );
        assert_eq!(
            sw.observe(&cfg, 1000, at(1)),
            None,
            "1000/s is not above 1000"
        );
        assert_eq!(
            sw.observe(&cfg, 1500, at(1) + Duration::from_millis(500)),
            None,
            "too soon"
        );
        assert_eq!(sw.observe(&cfg, 3001, at(2)), Some(true));
        assert_eq!((sw.on, sw.switches, sw.rate), (true, 1, 2001.0));
        // Between the thresholds: stays on.
        assert_eq!(sw.observe(&cfg, 3501, at(3)), None);
        // Quiet from second 3 on; a burst at second 8 restarts the hold.
        for s in 4..=7 {
            assert_eq!(sw.observe(&cfg, 3501, at(s)), None, "second {s}");
        }
        assert_eq!(sw.observe(&cfg, 4001, at(8)), None);
        for s in 9..=17 {
            assert_eq!(sw.observe(&cfg, 4001, at(s)), None, "second {s}");
        }
        assert_eq!(
            sw.observe(&cfg, 4001, at(18)),
            Some(false),
            "10 s quiet since second 8"
        );
        assert_eq!((sw.on, sw.switches), (false, 2));
        // A counter that went back measures 0.
        assert_eq!(sw.observe(&cfg, 0, at(19)), None);
        assert_eq!(sw.rate, 0.0);
    }
}
