//! Fault tests, real TCP through `lbd` on a namespace lab: a backend's server is killed
//! while a client keeps connecting; it must stop getting new connections within the
//! detection bound, nobody else may see a reset, and when it comes back it must be used
//! again, ramping under slow start. Passive signals eject a backend whose health check
//! still passes. Every figure is printed for the record (`--nocapture`).
//!
//! Which backend a connection may reach is judged by whether it started after lbd logged
//! the table swap (exact at any load); the bounds are measured to lbd's log stamps with
//! [`SLACK`]; the tests wait for numbers of connections, never for a while.
use std::time::{Duration, SystemTime};

use lb_tests::{
    client_loop::{share_of, started_between},
    lbd_log::{first_time, lines_with, millis_between, updates_after},
    scenario::*,
    vip, Attempt, BackendServer, ClientLoop, FailureKind, Family, Lab, LabConfig, LabSpec,
    RunningLb, BACKEND_PORT, VIP, VIP_PORT,
};
use lb_userspace::model::weights::RAMP_STEPS;

const PER_CONN: Duration = Duration::from_secs(5);
const LOOP_LIMIT: Duration = Duration::from_secs(120);
/// Bounds every wait for a log line or for connections (they end as soon as it comes).
const WAIT: Duration = Duration::from_secs(30);

fn start(lab: lb_tests::Lab, policy: &[&str]) -> RunningLb {
    start_in(Family::V4, lab, policy)
}

/// [`start`] with the service's VIP and backends in `family`.
fn start_in(family: Family, lab: lb_tests::Lab, policy: &[&str]) -> RunningLb {
    let config = LabConfig::new(&lab).family(family).policy(policy).yaml();
    let mut lb = RunningLb::start(lab, &config);
    lb.wait_healthy_in(family, 0, &[0, 1, 2], WAIT);
    lb
}

fn failures(attempts: &[Attempt], kind: FailureKind) -> Vec<&Attempt> {
    attempts
        .iter()
        .filter(|a| a.failure() == Some(kind))
        .collect()
}

#[test]
fn a_killed_backend_gets_no_new_connection_after_the_detection_bound() {
    a_killed_backend_gets_no_new_connection_after_the_detection_bound_in(Family::V4);
}

#[test]
fn over_ipv6_a_killed_backend_gets_no_new_connection_after_the_detection_bound() {
    a_killed_backend_gets_no_new_connection_after_the_detection_bound_in(Family::V6);
}

fn a_killed_backend_gets_no_new_connection_after_the_detection_bound_in(family: Family) {
    let health = fast_health();
    let lab = Lab::build(&LabSpec::three_zones().family(family));
    let mut lb = start_in(family, lab, &[&health]);
    let vip = vip(family);
    let client = ClientLoop::start(lb.lab.client_ns(), vip, VIP_PORT, PER_CONN, LOOP_LIMIT);
    wait_attempts(&client, 50, WAIT);
    let mark = lb.lbd.log_len();
    let (killed, kill_done) = lb.kill_server(1);
    let dead = format!("backend web/{}", lb.backend_socket(1, family));
    let swap = wait_table_update(
        &lb.lbd,
        mark,
        &format!("{dead}: healthy -> unhealthy"),
        WAIT,
    );
    wait_attempts_after(&client, swap.done, 30, WAIT);
    let attempts = client.stop();
    let log = lb.lbd.log()[mark..].to_string();

    // Only the dead backend's host refuses; a connection already queued on its listener
    // when it closed is reset by that host (at most the one in flight).
    let refused = failures(&attempts, FailureKind::Refused);
    let others: Vec<&Attempt> = attempts
        .iter()
        .filter(|a| matches!(a.failure(), Some(k) if k != FailureKind::Refused))
        .collect();
    assert!(
        others.len() <= 1 && others.iter().all(|a| a.start < kill_done),
        "connections failed other than by the dead backend's refusal: {others:?}"
    );
    // Every connection that started once the swap was logged met the new table.
    let late = started_between(&attempts, swap.done, SystemTime::now());
    assert!(late.len() >= 30);
    assert!(
        late.iter()
            .all(|a| matches!(a.backend(), Some("b1" | "b3"))),
        "after the swap: {:?}",
        late.iter()
            .filter(|a| !matches!(a.backend(), Some("b1" | "b3")))
            .collect::<Vec<_>>()
    );
    // The oracle saw the dead backend at all: with a third of the connections going to
    // it, 30 of them before the swap miss it once in 190,000 runs.
    if started_between(&attempts, kill_done, swap.begun).len() >= 30 {
        assert!(
            !refused.is_empty(),
            "the client never reached the dead backend"
        );
    }
    let bound = detection_bound();
    let detected = millis_between(killed, swap.done);
    let first_failed = first_time(&log, &format!("{dead}: probe failed")).expect("a failed probe");
    let last_refused = refused.iter().map(|a| a.start).max();
    println!(
        "kill ({family}): the table without the dead backend was live {detected} ms after the kill \
         (bound {} ms + slack {} ms); first failed probe -> swap logged: {} ms; last new \
         connection to the dead backend {} ms after the kill; {} refused, {} reset, {} \
         connections in all",
        ms(bound),
        ms(SLACK),
        millis_between(first_failed, swap.done),
        last_refused.map_or(-1, |t| millis_between(killed, t)),
        refused.len(),
        others.len(),
        attempts.len()
    );
    assert!(
        detected <= ms(bound + SLACK),
        "the dead backend left the table {detected} ms after the kill"
    );
}

#[test]
fn a_killed_backend_comes_back_after_its_healthy_threshold_ramping_under_slow_start() {
    const SLOW_START: Duration = Duration::from_secs(3);
    let health = fast_health();
    let mut lb = start(three_zones(), &[&health, "slow_start: 3s"]);
    let back = format!("backend web/{}:{BACKEND_PORT}", lb.lab.backend_addr(1));
    let mark = lb.lbd.log_len();
    lb.kill_server(1);
    let out = wait_table_update(
        &lb.lbd,
        mark,
        &format!("{back}: healthy -> unhealthy"),
        WAIT,
    );
    let client = ClientLoop::start(lb.lab.client_ns(), VIP, VIP_PORT, PER_CONN, LOOP_LIMIT);
    wait_attempts(&client, 30, WAIT);

    let mark = lb.lbd.log_len();
    let restarted = lb.restart_server(1);
    let log = lb
        .lbd
        .wait_for_log_after(mark, &format!("{back}: slow start over 3s"), WAIT)
        .unwrap();
    assert!(
        log.contains(&format!("{back}: unhealthy -> healthy")),
        "{log}"
    );
    let ramp_start = first_time(&log, "slow start over").unwrap();
    // The ramp's last step (full weight) is due 9/10 of SLOW_START after it began (one
    // step every tenth, the first at once): wait for the whole window and the slack,
    // then for enough connections at full weight.
    let first = wait_table_update(
        &lb.lbd,
        mark,
        &format!("{back}: unhealthy -> healthy"),
        WAIT,
    );
    let ramp_end = ramp_start + SLOW_START + SLACK;
    if let Ok(left) = ramp_end.duration_since(SystemTime::now()) {
        std::thread::sleep(left);
    }
    let swaps = updates_after(
        &lb.lbd.log()[mark..],
        &format!("{back}: unhealthy -> healthy"),
    );
    let last = *swaps.last().unwrap();
    wait_attempts_after(&client, last.done, 150, WAIT);
    let attempts = client.stop();

    let failed: Vec<&Attempt> = attempts.iter().filter(|a| a.failure().is_some()).collect();
    assert!(failed.is_empty(), "connections failed: {failed:?}");
    let old = started_between(&attempts, out.done, first.begun);
    assert!(
        old.iter().all(|a| a.backend() != Some("b2")),
        "b2 took a connection while out of the table"
    );
    // Until the ramp's second swap the table gives b2 a tenth of its weight (weights
    // 1 : 0.1 : 1), after the last all of it.
    let early = match swaps.get(1) {
        Some(second) => started_between(&attempts, first.done, second.begun),
        None => Vec::new(),
    };
    let late = started_between(&attempts, last.done, SystemTime::now());
    let (early_share, late_share) = (share_of(&early, "b2"), share_of(&late, "b2"));
    let back_after = millis_between(restarted, first.done);
    let ramp = millis_between(ramp_start, last.done);
    // lbd takes the ramp's start a few statements before it logs it (200 ms for a thread
    // preempted in between).
    let last_step = SLOW_START * (RAMP_STEPS - 1) / RAMP_STEPS;
    println!(
        "come back: healthy and in the table {back_after} ms after the restart (bound {} ms); \
         ramp of {} swaps over {ramp} ms; share of new connections at the first step \
         {:.1}% ({} connections), after the 3 s slow start {:.1}% ({} connections); 0 failed",
        ms(recovery_bound()),
        swaps.len(),
        early_share * 100.0,
        early.len(),
        late_share * 100.0,
        late.len()
    );
    assert!(
        back_after <= ms(recovery_bound() + SLACK),
        "{back_after} ms"
    );
    assert!(swaps.len() >= 2, "no ramp: {swaps:?}");
    assert!(
        ramp >= ms(last_step) - 200 && ramp <= ms(last_step + SLACK),
        "the ramp's last step came {ramp} ms after it began, due at {} ms",
        ms(last_step)
    );
    let hits = |set: &[&Attempt]| set.iter().filter(|a| a.backend() == Some("b2")).count();
    assert_binomial(hits(&early), &vec![0.1 / 2.1; early.len()], "b2 at 10%");
    assert_binomial(
        hits(&late),
        &vec![1.0 / 3.0; late.len()],
        "b2 at full weight",
    );
}

#[test]
fn passive_signals_eject_a_backend_whose_health_check_still_passes() {
    let lab = three_zones();
    // Health checks go to a separate port that keeps answering while the service
    // port dies: only the data path's counters can tell.
    let health_servers: Vec<BackendServer> = (0..3)
        .map(|i| BackendServer::start(lab.backend_ns(i), lab.backend_addr(i), 9090, "health"))
        .collect();
    let health = format!(
        "health: {{ type: http, port: 9090, path: /healthz, interval: {}ms, timeout: {}ms, \
         healthy_threshold: 5, passive_failure_ratio: 0.5, passive_min_attempts: 5 }}",
        INTERVAL.as_millis(),
        TIMEOUT.as_millis()
    );
    let mut lb = start(lab, &[&health]);
    let victim = format!("backend web/{}:{BACKEND_PORT}", lb.lab.backend_addr(1));
    let client = ClientLoop::start(lb.lab.client_ns(), VIP, VIP_PORT, PER_CONN, LOOP_LIMIT);
    wait_attempts(&client, 30, WAIT);
    let mark = lb.lbd.log_len();
    let (killed, _) = lb.kill_server(1);
    let log = lb
        .lbd
        .wait_for_log_after(
            mark,
            &format!("{victim}: healthy -> unhealthy (passive:"),
            WAIT,
        )
        .unwrap();
    let ejected = first_time(&log, "(passive:").unwrap();
    let out = wait_table_update(&lb.lbd, mark, "(passive:", WAIT);
    // Fixed before the probes let it back in (5 consecutive successes, about 1 s).
    lb.restart_server(1);
    let log = lb
        .lbd
        .wait_for_log_after(mark, &format!("{victim}: unhealthy -> healthy"), WAIT)
        .unwrap();
    let returned = first_time(&log, &format!("{victim}: unhealthy -> healthy")).unwrap();
    let back = wait_table_update(
        &lb.lbd,
        mark,
        &format!("{victim}: unhealthy -> healthy"),
        WAIT,
    );
    wait_attempts_after(&client, back.done, 90, WAIT);
    let attempts = client.stop();
    // Read before the health servers go: a probe after that is refused, rightly.
    let log = lb.lbd.log()[mark..].to_string();
    drop(health_servers);

    // The health server kept answering: no probe was refused or got a bad status (one
    // may time out when the machine is loaded; the ejection above was the passive one).
    assert!(
        lines_with(&log, &format!("{victim}: probe failed"))
            .iter()
            .all(|(_, l)| l.contains("probe failed (timeout)")),
        "the active probe failed:\n{log}"
    );
    let refused = failures(&attempts, FailureKind::Refused);
    let last_refused = refused
        .iter()
        .map(|a| a.start)
        .max()
        .expect("refusals seen");
    println!(
        "passive: ejected {} ms after the kill, out of the table {} ms after it ({} refused \
         connections, last {} ms after the kill); back through the active probe {} ms after \
         the ejection",
        millis_between(killed, ejected),
        millis_between(killed, out.done),
        refused.len(),
        millis_between(killed, last_refused),
        millis_between(ejected, returned)
    );
    // Ejected at the first counter sample (one probe interval) with enough attempts.
    assert!(millis_between(killed, out.done) <= ms(INTERVAL * 2 + SLACK));
    assert!(
        refused.iter().all(|a| a.start < out.done),
        "a connection that started after the ejection's swap reached the dead backend"
    );
    let after = started_between(&attempts, back.done, SystemTime::now());
    assert!(
        after.iter().all(|a| a.backend().is_some()),
        "failures after the return"
    );
    let b2 = after.iter().filter(|a| a.backend() == Some("b2")).count();
    assert_binomial(b2, &vec![1.0 / 3.0; after.len()], "b2 back at full weight");
}
