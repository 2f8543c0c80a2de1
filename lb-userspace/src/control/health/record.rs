//! What lbd remembers of one backend's probes for the operator: the last result, when it
//! came, and how many failed since the backend was configured (`lbctl health`,
//! `/metrics`).
use std::time::{Duration, Instant};

use super::machine::Outcome;

/// The last probe of one backend, as the checker reported it.
#[derive(Debug, Clone, PartialEq)]
pub struct LastProbe {
    /// `ok`, or why it failed (`timeout`, `refused`, `status 503`, ...).
    pub result: String,
    pub latency: Duration,
    /// When lbd applied it.
    pub at: Instant,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProbeRecord {
    pub last: Option<LastProbe>,
    /// Probes that failed, since the backend joined.
    pub failures: u64,
    /// Probes of either result, since the backend joined.
    pub results: u64,
}

impl ProbeRecord {
    pub fn record(&mut self, outcome: &Outcome, latency: Duration, at: Instant) {
        let result = match outcome {
            Ok(()) => "ok".to_string(),
            Err(failure) => {
                self.failures += 1;
                failure.to_string()
            }
        };
        self.results += 1;
        self.last = Some(LastProbe {
            result,
            latency,
            at,
        });
    }

    /// How long ago the last result came, at `now`.
    pub fn age(&self, now: Instant) -> Option<Duration> {
        self.last
            .as_ref()
            .map(|l| now.saturating_duration_since(l.at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::health::machine::Failure;

    #[test]
    fn failures_and_the_age_of_the_last_result_are_kept() {
        let t0 = Instant::now();
        let mut r = ProbeRecord::default();
        assert_eq!(r.age(t0), None);
        r.record(&Ok(()), Duration::from_millis(2), t0);
        r.record(&Err(Failure::Timeout), Duration::from_millis(150), t0);
        r.record(
            &Err(Failure::Refused),
            Duration::from_millis(1),
            t0 + Duration::from_secs(1),
        );
        assert_eq!((r.failures, r.results), (2, 3));
        let last = r.last.as_ref().unwrap();
        assert_eq!(
            (last.result.as_str(), last.latency),
            ("refused", Duration::from_millis(1))
        );
        assert_eq!(
            r.age(t0 + Duration::from_millis(3500)),
            Some(Duration::from_millis(2500))
        );
    }
}
