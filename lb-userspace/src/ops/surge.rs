//! Log lines for what only a flood explains, from consecutive counter samples: client
//! packets of no connection we placed (spoofed ACKs, RSTs, data; forwarded by the table
//! and recorded nowhere, see docs/syn-cache.md), martian sources, and packets the edge
//! checks turn away (see docs/edge-protection.md). The
//! metrics count them; these lines say when such traffic starts and stops, once each, so
//! an on-call engineer finds it in the log without a line per second.
use lb_common::counters::{Reason, REASONS};

use crate::ops::stats::Snapshot;

/// Stateless forwards of one service in one sample interval above which they are a
/// surge: evicted or ECMP-moved connections come back a few at a time, a flood in
/// thousands.
pub const STATELESS_SURGE: u64 = 1000;

/// Edge drops (rules, rate limits, unlisted ports) in one sample interval above which
/// they are a flood: a scan or a few refused clients stay below.
pub const EDGE_SURGE: u64 = 1000;

/// The reasons of edge protection's drops.
const EDGE_DROPS: [Reason; 4] = [
    Reason::DropEdgeDenied,
    Reason::DropEdgeNotAllowed,
    Reason::DropRateLimited,
    Reason::DropUnlistedPort,
];

/// What started or stopped between the interval `older` -> `recent` and the interval
/// `recent` -> `now` (the first interval counts as quiet when `older` is unknown).
pub fn lines(older: Option<&Snapshot>, recent: &Snapshot, now: &Snapshot) -> Vec<String> {
    let secs = now.at.saturating_duration_since(recent.at).as_secs_f64();
    let mut out = Vec::new();
    for (service, counters) in &now.services {
        let stateless = |s: &Snapshot| s.services.get(service).map(|c| c.stateless_forwards);
        let delta = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) => b.saturating_sub(a),
            _ => 0,
        };
        let current = delta(stateless(recent), Some(counters.stateless_forwards));
        let before = delta(older.and_then(stateless), stateless(recent));
        match (before > STATELESS_SURGE, current > STATELESS_SURGE) {
            (false, true) => out.push(format!(
                "service {service}: {current} client packets of no connection it placed in \
                 {secs:.1} s (spoofed ACK/RST/data?), forwarded by the table, none recorded"
            )),
            (true, false) => out.push(format!(
                "service {service}: packets of no connection it placed back to {current} in \
                 {secs:.1} s"
            )),
            _ => {}
        }
    }
    let slot = REASONS
        .iter()
        .position(|(r, _)| *r == Reason::DropMartianSource)
        .expect("a listed reason");
    let martians = |a: &Snapshot, b: &Snapshot| {
        let at = |s: &Snapshot| s.reasons.get(slot).copied().unwrap_or(0);
        at(b).saturating_sub(at(a))
    };
    let current = martians(recent, now);
    let before = older.map_or(0, |o| martians(o, recent));
    match (before > 0, current > 0) {
        (false, true) => out.push(format!(
            "dropping packets to VIPs from martian sources (0/8, 127/8, 169.254/16, 224/4, \
             240/4, the VIP itself): {current} in {secs:.1} s"
        )),
        (true, false) => out.push("no more packets from martian sources".to_string()),
        _ => {}
    }
    let edge = |a: &Snapshot, b: &Snapshot| -> u64 {
        let at = |s: &Snapshot, r: Reason| s.reasons.get(r as usize).copied().unwrap_or(0);
        EDGE_DROPS
            .iter()
            .map(|r| at(b, *r).saturating_sub(at(a, *r)))
            .sum()
    };
    let current = edge(recent, now);
    let before = older.map_or(0, |o| edge(o, recent));
    match (before > EDGE_SURGE, current > EDGE_SURGE) {
        (false, true) => out.push(format!(
            "edge protection is turning away a flood: {current} packets in {secs:.1} s \
             (deny and allow rules, SYN rate limits, unlisted ports; `lbctl filter limited` \
             lists rate-limited sources)"
        )),
        (true, false) => out.push(format!(
            "edge protection's drops back to {current} in {secs:.1} s"
        )),
        _ => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use std::{
        collections::BTreeMap,
        time::{Duration, Instant},
    };

    use lb_common::counters::TrafficCounters;

    use super::*;

    fn sample(at: Instant, stateless: u64, martians: u64) -> Snapshot {
        let mut reasons = vec![0; REASONS.len()];
        reasons[Reason::DropMartianSource as usize] = martians;
        Snapshot {
            at,
            services: BTreeMap::from([(
                "web".to_string(),
                TrafficCounters {
                    stateless_forwards: stateless,
                    ..TrafficCounters::default()
                },
            )]),
            backends: BTreeMap::new(),
            reasons,
            flow_entries: 0,
            flow_entries6: 0,
            flow_overflow_entries: 0,
        }
    }

    #[test]
    fn a_surge_is_told_when_it_starts_and_when_it_stops_only() {
        let t = Instant::now();
        let s = |secs: u64, stateless, martians| {
            sample(t + Duration::from_secs(secs), stateless, martians)
        };
        let (quiet, flood1, flood2, after) = (
            s(0, 10, 0),
            s(1, 10 + 50_000, 7),
            s(2, 10 + 100_000, 9),
            s(3, 10 + 100_003, 9),
        );
        let started = lines(None, &quiet, &flood1);
        assert_eq!(started.len(), 2, "{started:?}");
        assert!(
            started[0].starts_with("service web: 50000 client packets"),
            "{started:?}"
        );
        assert!(started[1].contains("martian sources") && started[1].ends_with("7 in 1.0 s"));
        assert_eq!(lines(Some(&quiet), &flood1, &flood2), Vec::<String>::new());
        let stopped = lines(Some(&flood1), &flood2, &after);
        assert_eq!(
            stopped,
            vec![
                "service web: packets of no connection it placed back to 3 in 1.0 s".to_string(),
                "no more packets from martian sources".to_string()
            ]
        );
        // A few evicted connections coming back are no surge.
        assert_eq!(
            lines(None, &quiet, &s(1, 10 + STATELESS_SURGE, 0)),
            Vec::<String>::new()
        );
    }

    #[test]
    fn an_edge_flood_is_told_when_it_starts_and_when_it_stops() {
        let t = Instant::now();
        let s = |secs: u64, denied: u64, limited: u64| {
            let mut snap = sample(t + Duration::from_secs(secs), 0, 0);
            snap.reasons[Reason::DropEdgeDenied as usize] = denied;
            snap.reasons[Reason::DropRateLimited as usize] = limited;
            snap
        };
        let (quiet, flood1, flood2, after) = (
            s(0, 5, 0),
            s(1, 505, 600),
            s(2, 1005, 1200),
            s(3, 1006, 1200),
        );
        assert_eq!(
            lines(None, &quiet, &flood1),
            [
                "edge protection is turning away a flood: 1100 packets in 1.0 s (deny and allow \
              rules, SYN rate limits, unlisted ports; `lbctl filter limited` lists \
              rate-limited sources)"
            ]
        );
        assert_eq!(lines(Some(&quiet), &flood1, &flood2), Vec::<String>::new());
        assert_eq!(
            lines(Some(&flood1), &flood2, &after),
            ["edge protection's drops back to 1 in 1.0 s"]
        );
        assert_eq!(
            lines(None, &quiet, &s(1, 5 + EDGE_SURGE, 0)),
            Vec::<String>::new()
        );
    }
}
