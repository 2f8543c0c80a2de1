//! Passive ejection: the data path counts, per backend, the SYNs it forwarded, the
//! SYN-ACKs and RSTs that came back (NAT mode sees both directions). Sampled once per
//! probe interval, the last [`WINDOW`] samples give the share of connection attempts that
//! failed (refused or never answered); over the configured ratio, with enough attempts
//! to trust it, the backend is ejected before its probes notice.
//!
//! A direct-server-return service's node never sees a SYN-ACK: there a failed attempt is
//! one its client had to send again ([`Failures::Retransmits`]), counted when the SYN
//! comes again on a tuple whose handshake no ACK completed (one per retransmission, so a
//! client that gives up after 6 retries on a dead backend counts 6 failures in 7
//! attempts, while a backend that answers lets almost every first SYN through).
//!
//! A UDP service has no handshake: its backend's failure is an ICMP port unreachable
//! (nothing listens on the port), which the data path counts when it translates one back
//! to the client ([`Failures::Unreachable`]).
use std::collections::VecDeque;

use lb_common::counters::BackendSignals;

/// Samples in the sliding window (probe intervals).
pub const WINDOW: usize = 10;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Delta {
    attempts: u64,
    failed: u64,
    resets: u64,
}

/// What counts as a failed connection attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failures {
    /// A SYN the backend did not accept (NAT: the node sees SYN-ACKs).
    Unanswered,
    /// A SYN the client sent again (DSR: the node sees only the client's side).
    Retransmits,
    /// A UDP service's: an ICMP port unreachable from the backend, against the flows
    /// placed on it. A flow's later datagrams to a backend whose listener went away are
    /// answered with port unreachables too, so the attempts are at least the failures:
    /// a backend that answers everything with one is a ratio of 1.
    Unreachable,
}

/// The sliding window of one backend.
#[derive(Debug, Clone, Default)]
pub struct Window {
    last: Option<BackendSignals>,
    deltas: VecDeque<Delta>,
}

impl Window {
    /// Takes the cumulative counters read now; returns why the backend must be ejected,
    /// if it must. `ratio` 0 never ejects.
    pub fn sample(
        &mut self,
        now: BackendSignals,
        failures: Failures,
        ratio: f64,
        min_attempts: u32,
    ) -> Option<String> {
        // The first reading is only a baseline.
        let prev = self.last.replace(now)?;
        // Counters only grow; a smaller value means the slot was reset: start over.
        if now.syns < prev.syns
            || now.syn_acks < prev.syn_acks
            || now.resets < prev.resets
            || now.syn_retransmits < prev.syn_retransmits
            || now.datagram_flows < prev.datagram_flows
            || now.unreachables < prev.unreachables
        {
            self.deltas.clear();
            return None;
        }
        let attempts = now.syns - prev.syns;
        let accepted = now.syn_acks - prev.syn_acks;
        let unreachables = now.unreachables - prev.unreachables;
        self.deltas.push_back(match failures {
            Failures::Unanswered => Delta {
                attempts,
                failed: attempts.saturating_sub(accepted),
                resets: now.resets - prev.resets,
            },
            Failures::Retransmits => Delta {
                attempts,
                failed: now.syn_retransmits - prev.syn_retransmits,
                resets: now.resets - prev.resets,
            },
            Failures::Unreachable => Delta {
                attempts: unreachables.max(now.datagram_flows - prev.datagram_flows),
                failed: unreachables,
                resets: 0,
            },
        });
        while self.deltas.len() > WINDOW {
            self.deltas.pop_front();
        }
        if ratio <= 0.0 {
            return None;
        }
        let sum = self.deltas.iter().fold(Delta::default(), |a, d| Delta {
            attempts: a.attempts + d.attempts,
            failed: a.failed + d.failed,
            resets: a.resets + d.resets,
        });
        if sum.attempts == 0 || sum.attempts < min_attempts as u64 {
            return None;
        }
        if (sum.failed as f64) < ratio * sum.attempts as f64 {
            return None;
        }
        self.deltas.clear();
        Some(match failures {
            Failures::Unreachable => format!(
                "{} port unreachables for {} new flows or later datagrams",
                sum.failed, sum.attempts
            ),
            _ => format!(
                "{} of {} connection attempts failed, {} resets",
                sum.failed, sum.attempts, sum.resets
            ),
        })
    }

    /// Forgets the window (after an ejection or a return to health), keeping the last
    /// reading as the baseline.
    pub fn clear(&mut self) {
        self.deltas.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signals(syns: u64, syn_acks: u64, resets: u64) -> BackendSignals {
        BackendSignals {
            syns,
            syn_acks,
            resets,
            ..BackendSignals::default()
        }
    }

    /// Cumulative (syns, syn_acks, resets) readings.
    type Readings = &'static [(u64, u64, u64)];

    /// Feeds cumulative (syns, syn_acks, resets) readings; returns the step at which the
    /// window ejected, if any.
    fn ejected_at(readings: &[(u64, u64, u64)], ratio: f64, min: u32) -> Option<usize> {
        let mut w = Window::default();
        readings.iter().position(|(s, a, r)| {
            w.sample(signals(*s, *a, *r), Failures::Unanswered, ratio, min)
                .is_some()
        })
    }

    #[test]
    fn failed_attempts_over_the_ratio_eject() {
        // (readings, ratio, min attempts, step that ejects)
        let cases: &[(Readings, f64, u32, Option<usize>)] = &[
            // All accepted: never.
            (
                &[(0, 0, 0), (10, 10, 0), (20, 20, 0), (30, 30, 0)],
                0.5,
                10,
                None,
            ),
            // Half refused (a RST per failed attempt) reaches 0.5 once 10 attempts are seen.
            (
                &[(0, 0, 0), (4, 2, 2), (8, 4, 4), (12, 6, 6)],
                0.5,
                10,
                Some(3),
            ),
            // Unanswered SYNs fail just the same, without any reset.
            (&[(0, 0, 0), (10, 0, 0)], 0.5, 10, Some(1)),
            // Under the ratio.
            (&[(0, 0, 0), (10, 6, 4), (20, 12, 8)], 0.5, 10, None),
            // Not enough attempts to trust the ratio.
            (&[(0, 0, 0), (5, 0, 5), (9, 0, 9)], 0.5, 10, None),
            // Ratio 0 turns it off.
            (&[(0, 0, 0), (100, 0, 100)], 0.0, 1, None),
            // The first reading is only the baseline: history before lbd looked is ignored.
            (&[(1000, 0, 1000), (1001, 1, 0)], 0.5, 1, None),
            // Resets of established connections do not count as failed attempts.
            (&[(0, 0, 0), (10, 10, 10), (20, 20, 20)], 0.5, 10, None),
        ];
        for (readings, ratio, min, want) in cases {
            assert_eq!(
                ejected_at(readings, *ratio, *min),
                *want,
                "{readings:?} ratio {ratio} min {min}"
            );
        }
    }

    #[test]
    fn in_dsr_retransmitted_syns_are_the_failures() {
        let dsr = |syns, retransmits| BackendSignals {
            syns,
            syn_retransmits: retransmits,
            ..BackendSignals::default()
        };
        let mut w = Window::default();
        assert_eq!(w.sample(dsr(0, 0), Failures::Retransmits, 0.5, 10), None);
        // No SYN-ACK is ever seen, yet 20 first SYNs and 2 retransmits is healthy.
        assert_eq!(w.sample(dsr(22, 2), Failures::Retransmits, 0.5, 10), None);
        // Clients that retry: 20 more SYNs, 22 of all of them retransmits.
        assert_eq!(
            w.sample(dsr(42, 24), Failures::Retransmits, 0.5, 10),
            Some("24 of 42 connection attempts failed, 0 resets".to_string())
        );
        // NAT's reading of the same counters takes every attempt for failed.
        let mut nat = Window::default();
        nat.sample(dsr(0, 0), Failures::Unanswered, 0.5, 10);
        assert!(nat
            .sample(dsr(22, 2), Failures::Unanswered, 0.5, 10)
            .is_some());
    }

    #[test]
    fn for_udp_port_unreachables_are_the_failures() {
        let udp = |datagram_flows, unreachables| BackendSignals {
            datagram_flows,
            unreachables,
            ..BackendSignals::default()
        };
        let mut w = Window::default();
        assert_eq!(w.sample(udp(0, 0), Failures::Unreachable, 0.5, 10), None);
        // 30 new flows, 4 refused: healthy.
        assert_eq!(w.sample(udp(30, 4), Failures::Unreachable, 0.5, 10), None);
        // The listener went away: 2 new flows, and 30 datagrams (of flows placed before
        // too) answered with port unreachables.
        assert_eq!(
            w.sample(udp(32, 34), Failures::Unreachable, 0.5, 10),
            Some("34 port unreachables for 60 new flows or later datagrams".to_string())
        );
        // TCP's readings of the same counters see no attempt at all.
        let mut tcp = Window::default();
        tcp.sample(udp(0, 0), Failures::Unanswered, 0.5, 1);
        assert_eq!(tcp.sample(udp(30, 30), Failures::Unanswered, 0.5, 1), None);
    }

    #[test]
    fn old_samples_leave_the_window() {
        let mut w = Window::default();
        w.sample(signals(0, 0, 0), Failures::Unanswered, 0.5, 10);
        // 8 failures, then 10 quiet samples push them out of the window.
        w.sample(signals(8, 0, 8), Failures::Unanswered, 0.5, 10);
        for _ in 0..WINDOW {
            assert_eq!(
                w.sample(signals(8, 0, 8), Failures::Unanswered, 0.5, 10),
                None
            );
        }
        // Now 2 new failures alone are too few, though 100% failed.
        assert_eq!(
            w.sample(signals(10, 0, 10), Failures::Unanswered, 0.5, 10),
            None
        );
    }

    #[test]
    fn an_ejection_clears_the_window_and_names_the_counts() {
        let mut w = Window::default();
        w.sample(signals(0, 0, 0), Failures::Unanswered, 0.5, 4);
        let why = w
            .sample(signals(4, 1, 3), Failures::Unanswered, 0.5, 4)
            .unwrap();
        assert_eq!(why, "3 of 4 connection attempts failed, 3 resets");
        assert_eq!(
            w.sample(signals(5, 1, 4), Failures::Unanswered, 0.5, 1),
            Some("1 of 1 connection attempts failed, 1 resets".into())
        );
        w.clear();
        assert_eq!(
            w.sample(signals(6, 2, 4), Failures::Unanswered, 0.5, 1),
            None
        );
    }

    #[test]
    fn a_counter_going_backwards_restarts_the_window() {
        let mut w = Window::default();
        w.sample(signals(100, 0, 0), Failures::Unanswered, 0.5, 1);
        assert_eq!(
            w.sample(signals(3, 3, 0), Failures::Unanswered, 0.5, 1),
            None
        );
        assert_eq!(
            w.sample(signals(6, 6, 0), Failures::Unanswered, 0.5, 1),
            None
        );
    }
}
