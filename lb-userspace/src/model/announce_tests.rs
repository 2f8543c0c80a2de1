//! Scripted readiness against a fake clock: the exact announce/withdraw sequence.
use std::net::Ipv4Addr;

use super::*;

const VIP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 100));
const OTHER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 101));
const HOLD_UP: Duration = Duration::from_secs(3);

fn ready(list: &[(IpAddr, Readiness)]) -> BTreeMap<IpAddr, Readiness> {
    list.iter().cloned().collect()
}

fn not(why: &str) -> Readiness {
    Readiness::Not(why.into())
}

/// Runs `script` (seconds since start, readiness of [`VIP`]) and returns every change
/// with the second it was made at.
fn run(announcer: &mut Announcer, script: &[(u64, Readiness)]) -> Vec<(u64, Change)> {
    let t0 = Instant::now();
    let mut out = Vec::new();
    for (at, r) in script {
        let now = t0 + Duration::from_secs(*at);
        for change in announcer.decide(now, HOLD_UP, &ready(&[(VIP, r.clone())])) {
            out.push((*at, change));
        }
    }
    out
}

fn announce(serving_for: u64) -> Change {
    Change::Announce {
        vip: VIP,
        serving_for: Duration::from_secs(serving_for),
    }
}

fn withdraw(why: &str) -> Change {
    Change::Withdraw {
        vip: VIP,
        why: why.into(),
    }
}

#[test]
fn a_vip_is_announced_after_the_hold_up_and_withdrawn_at_once() {
    use Readiness::*;
    let mut a = Announcer::default();
    let changes = run(
        &mut a,
        &[
            (0, Undecided),
            (1, Serving),
            (2, Serving),
            (3, Serving),
            (4, Serving),
            (5, Serving),
            (6, not("0 of 3 backends healthy")),
            (7, not("0 of 3 backends healthy")),
            (8, Serving),
            (11, Serving),
        ],
    );
    assert_eq!(
        changes,
        vec![
            (4, announce(3)),
            (6, withdraw("0 of 3 backends healthy")),
            (11, announce(3)),
        ]
    );
}

#[test]
fn a_flapping_service_is_not_announced_until_it_serves_for_the_whole_hold_up() {
    use Readiness::*;
    let mut a = Announcer::default();
    let down = || not("down");
    let changes = run(
        &mut a,
        &[
            (0, Serving),
            (2, down()),
            (3, Serving),
            (5, down()),
            (6, Serving),
            (8, Undecided),
            (9, Serving),
            (11, Serving),
            (12, Serving),
        ],
    );
    // Every break (a failure, or no verdict) restarts the count: only 9..12 is whole.
    assert_eq!(changes, vec![(12, announce(3))]);
    assert!(a.is_announced(VIP));
}

#[test]
fn a_zero_hold_up_announces_at_the_first_serving_step() {
    let mut a = Announcer::default();
    let now = Instant::now();
    let changes = a.decide(now, Duration::ZERO, &ready(&[(VIP, Readiness::Serving)]));
    assert_eq!(
        changes,
        vec![Change::Announce {
            vip: VIP,
            serving_for: Duration::ZERO
        }]
    );
}

#[test]
fn adopted_vips_stay_announced_until_a_verdict_withdraws_them() {
    use Readiness::*;
    let mut a = Announcer::default();
    a.adopt([VIP]);
    let changes = run(
        &mut a,
        &[
            (0, Undecided),
            (1, Undecided),
            (2, Serving),
            (9, Serving),
            (10, not("0 of 1 backends healthy")),
        ],
    );
    assert_eq!(changes, vec![(10, withdraw("0 of 1 backends healthy"))]);
}

#[test]
fn a_vip_no_longer_in_the_readiness_set_is_withdrawn_once() {
    let mut a = Announcer::default();
    let t0 = Instant::now();
    let both = ready(&[(VIP, Readiness::Serving), (OTHER, Readiness::Serving)]);
    assert_eq!(a.decide(t0, Duration::ZERO, &both).len(), 2);
    let only_other = ready(&[(OTHER, Readiness::Serving)]);
    assert_eq!(
        a.decide(t0, Duration::ZERO, &only_other),
        vec![Change::Withdraw {
            vip: VIP,
            why: "no service in an announced range has this VIP any more".into()
        }]
    );
    assert_eq!(a.decide(t0, Duration::ZERO, &only_other), vec![]);
    assert!(!a.is_announced(VIP));
    assert!(a.is_announced(OTHER));
}

#[test]
fn a_failed_change_is_tried_again_at_the_next_step() {
    let mut a = Announcer::default();
    let t0 = Instant::now();
    let serving = ready(&[(VIP, Readiness::Serving)]);
    let first = a.decide(t0, HOLD_UP, &serving);
    assert_eq!(first, vec![]);
    let at = t0 + HOLD_UP;
    let changes = a.decide(at, HOLD_UP, &serving);
    assert_eq!(changes, vec![announce(3)]);
    a.failed(&changes[0]);
    assert!(!a.is_announced(VIP));
    // Still serving since t0: no new hold-up.
    let later = at + Duration::from_secs(1);
    assert_eq!(a.decide(later, HOLD_UP, &serving), vec![announce(4)]);

    let down = ready(&[(VIP, not("down"))]);
    let changes = a.decide(later, HOLD_UP, &down);
    assert_eq!(changes, vec![withdraw("down")]);
    a.failed(&changes[0]);
    assert_eq!(a.decide(later, HOLD_UP, &down), vec![withdraw("down")]);
}

#[test]
fn withdraw_all_takes_every_announced_vip_and_restarts_the_hold_up() {
    let mut a = Announcer::default();
    let t0 = Instant::now();
    let both = ready(&[(VIP, Readiness::Serving), (OTHER, not("down"))]);
    assert_eq!(a.decide(t0, Duration::ZERO, &both).len(), 1);
    assert_eq!(
        a.withdraw_all("drained"),
        vec![Change::Withdraw {
            vip: VIP,
            why: "drained".into()
        }]
    );
    assert_eq!(a.withdraw_all("drained"), vec![]);
    let later = t0 + Duration::from_secs(1);
    assert_eq!(a.decide(later, HOLD_UP, &both), vec![]);
}
