//! The health state machine of one backend, with the semantics of cloud network load
//! balancers: `healthy_threshold` consecutive successes make a backend healthy,
//! `unhealthy_threshold` consecutive failures make it unhealthy. Counts are of
//! consecutive results only (any opposite result starts the count again), so a backend
//! that fails one probe in three never flaps.
use std::fmt;

/// What lbd believes about a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// No verdict yet.
    Unknown,
    Healthy,
    Unhealthy,
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Health::Unknown => "unknown",
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
        })
    }
}

/// Why a probe failed, as logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No answer within the probe timeout.
    Timeout,
    /// The backend's host answered the connect with a reset: nothing listens.
    Refused,
    /// No route or neighbour to the backend.
    Unreachable,
    /// An HTTP status outside the expected range.
    Status(u16),
    /// Anything else: a reset mid-request, a malformed answer, ...
    Other(String),
    /// The data path saw too many failed connection attempts (passive signal).
    Passive(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Timeout => f.write_str("timeout"),
            Failure::Refused => f.write_str("refused"),
            Failure::Unreachable => f.write_str("unreachable"),
            Failure::Status(code) => write!(f, "status {code}"),
            Failure::Other(what) => f.write_str(what),
            Failure::Passive(what) => write!(f, "passive: {what}"),
        }
    }
}

/// The result of one probe.
pub type Outcome = Result<(), Failure>;

/// What one observation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The state changed.
    Became {
        from: Health,
        to: Health,
    },
    /// The first failure after a success or a verdict (the start of a streak that may
    /// make the backend unhealthy): worth a log line, and the start of a failover.
    FirstFailure,
    Nothing,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    state: Health,
    successes: u32,
    failures: u32,
    healthy_threshold: u32,
    unhealthy_threshold: u32,
}

impl Machine {
    pub fn new(healthy_threshold: u32, unhealthy_threshold: u32) -> Self {
        Self {
            state: Health::Unknown,
            successes: 0,
            failures: 0,
            healthy_threshold: healthy_threshold.max(1),
            unhealthy_threshold: unhealthy_threshold.max(1),
        }
    }

    pub fn state(&self) -> Health {
        self.state
    }

    /// New thresholds (a reload) apply to the streak in progress; the state stays.
    pub fn set_thresholds(&mut self, healthy: u32, unhealthy: u32) {
        self.healthy_threshold = healthy.max(1);
        self.unhealthy_threshold = unhealthy.max(1);
    }

    pub fn observe(&mut self, outcome: &Outcome) -> Change {
        match outcome {
            Ok(()) => {
                self.failures = 0;
                self.successes += 1;
                if self.state != Health::Healthy && self.successes >= self.healthy_threshold {
                    return self.become_(Health::Healthy);
                }
                Change::Nothing
            }
            Err(_) => {
                self.successes = 0;
                self.failures += 1;
                if self.state != Health::Unhealthy && self.failures >= self.unhealthy_threshold {
                    return self.become_(Health::Unhealthy);
                }
                if self.failures == 1 && self.state != Health::Unhealthy {
                    return Change::FirstFailure;
                }
                Change::Nothing
            }
        }
    }

    /// Passive ejection: unhealthy at once; only the active probe brings it back, after
    /// `healthy_threshold` consecutive successes.
    pub fn eject(&mut self) -> Change {
        self.successes = 0;
        self.failures = 0;
        if self.state == Health::Unhealthy {
            return Change::Nothing;
        }
        self.become_(Health::Unhealthy)
    }

    fn become_(&mut self, to: Health) -> Change {
        let from = self.state;
        self.state = to;
        self.successes = 0;
        self.failures = 0;
        Change::Became { from, to }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: char = '+';
    const FAIL: char = '-';
    const EJECT: char = '!';

    /// Feeds a script of results (`+` success, `-` failure, `!` passive ejection) and
    /// returns the state after each step, spelled `U` unknown, `H` healthy, `X` unhealthy.
    fn run(healthy: u32, unhealthy: u32, script: &str) -> String {
        let mut m = Machine::new(healthy, unhealthy);
        script
            .chars()
            .map(|step| {
                match step {
                    OK => m.observe(&Ok(())),
                    FAIL => m.observe(&Err(Failure::Refused)),
                    EJECT => m.eject(),
                    _ => panic!("bad script step {step}"),
                };
                match m.state() {
                    Health::Unknown => 'U',
                    Health::Healthy => 'H',
                    Health::Unhealthy => 'X',
                }
            })
            .collect()
    }

    #[test]
    fn consecutive_results_flip_the_state() {
        // (healthy_threshold, unhealthy_threshold, results, states after each result)
        let cases = [
            (2, 2, "++", "UH"),
            (3, 2, "+++", "UUH"),
            (2, 2, "--", "UX"),
            (1, 1, "+-+-", "HXHX"),
            // Alternating results never reach a threshold of 2: no flapping.
            (2, 2, "+-+-+-", "UUUUUU"),
            (2, 2, "++-+-+-+", "UHHHHHHH"),
            // A failure streak is broken by one success and must start again.
            (2, 3, "++--+--", "UHHHHHH"),
            (2, 3, "++---", "UHHHX"),
            // Back from unhealthy needs the full healthy threshold, consecutively.
            (3, 2, "+++--++-+++", "UUHHXXXXXXH"),
            // Passive ejection: unhealthy at once, back only through the probes.
            (2, 2, "++!+", "UHXX"),
            (2, 2, "++!++", "UHXXH"),
            (2, 2, "!", "X"),
            (2, 2, "--!", "UXX"),
        ];
        for (healthy, unhealthy, script, want) in cases {
            assert_eq!(
                run(healthy, unhealthy, script),
                want,
                "thresholds {healthy}/{unhealthy}, results {script}"
            );
        }
    }

    #[test]
    fn changes_report_transitions_and_the_first_failure_of_a_streak() {
        let mut m = Machine::new(2, 3);
        assert_eq!(m.observe(&Ok(())), Change::Nothing);
        assert_eq!(
            m.observe(&Ok(())),
            Change::Became {
                from: Health::Unknown,
                to: Health::Healthy
            }
        );
        assert_eq!(m.observe(&Err(Failure::Timeout)), Change::FirstFailure);
        assert_eq!(m.observe(&Err(Failure::Timeout)), Change::Nothing);
        assert_eq!(
            m.observe(&Err(Failure::Status(503))),
            Change::Became {
                from: Health::Healthy,
                to: Health::Unhealthy
            }
        );
        // Failures while unhealthy are not news.
        assert_eq!(m.observe(&Err(Failure::Timeout)), Change::Nothing);
    }

    #[test]
    fn new_thresholds_apply_to_the_streak_in_progress() {
        let mut m = Machine::new(5, 5);
        m.observe(&Ok(()));
        m.observe(&Ok(()));
        m.set_thresholds(3, 5);
        assert_eq!(m.state(), Health::Unknown);
        m.observe(&Ok(()));
        assert_eq!(m.state(), Health::Healthy);
    }

    #[test]
    fn failures_are_described_for_the_log() {
        assert_eq!(Failure::Status(503).to_string(), "status 503");
        assert_eq!(Failure::Timeout.to_string(), "timeout");
        assert_eq!(
            Failure::Passive("12 of 20 attempts failed".into()).to_string(),
            "passive: 12 of 20 attempts failed"
        );
    }
}
