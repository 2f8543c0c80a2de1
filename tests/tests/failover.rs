//! Fault tests, real TCP through `lbd` on a namespace lab: a backend's server is killed
//! while a client keeps connecting; it must stop getting new connections within the
//! detection bound, nobody else may see a reset, and when it comes back it must be used
//! again, ramping under slow start. Passive signals eject a backend whose health check
//! still passes. Every figure is printed for the record (`--nocapture`).
use std::{thread, time::Duration};

use lb_tests::{
    client_loop::{share_of, started_between},
    lbd_log::{first_time, millis_between},
    scenario::*,
    Attempt, BackendServer, ClientLoop, FailureKind, LabConfig, RunningLb, BACKEND_PORT, VIP,
    VIP_PORT,
};

const PER_CONN: Duration = Duration::from_secs(2);
const LOOP_LIMIT: Duration = Duration::from_secs(60);

fn start(lab: lb_tests::Lab, policy: &[&str]) -> RunningLb {
    let config = LabConfig::new(&lab).policy(policy).yaml();
    let mut lb = RunningLb::start(lab, &config);
    lb.wait_healthy(0, &[0, 1, 2], Duration::from_secs(10));
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
    let health = fast_health();
    let mut lb = start(three_zones(), &[&health]);
    let client = ClientLoop::start(lb.lab.client_ns(), VIP, VIP_PORT, PER_CONN, LOOP_LIMIT);
    wait_attempts(&client, 50, Duration::from_secs(10));
    let mark = lb.lbd.log_len();
    let (killed, kill_done) = lb.kill_server(1);
    let dead = format!("backend web/{}:{BACKEND_PORT}", lb.lab.backend_addr(1));
    lb.lbd
        .wait_for_log_after(
            mark,
            &format!("{dead}: healthy -> unhealthy"),
            Duration::from_secs(10),
        )
        .unwrap();
    thread::sleep(Duration::from_secs(1));
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
    assert!(
        !refused.is_empty(),
        "the client never reached the dead backend"
    );
    let last_refused = refused.iter().map(|a| a.start).max().unwrap();
    let bound = detection_bound();
    let after_kill = millis_between(killed, last_refused);
    let first_failed = first_time(&log, &format!("{dead}: probe failed")).expect("a failed probe");
    let failover = millis_between(first_failed, last_refused);
    println!(
        "kill: last new connection to the dead backend {after_kill} ms after the kill \
         (bound {} ms + slack {} ms); failover, first failed probe -> last new connection: \
         {failover} ms; {} refused, {} reset, {} connections in all",
        ms(bound),
        ms(SLACK),
        refused.len(),
        others.len(),
        attempts.len()
    );
    assert!(
        after_kill <= ms(bound + SLACK),
        "a new connection reached the dead backend {after_kill} ms after the kill"
    );
    let late = started_between(
        &attempts,
        killed + bound + SLACK,
        std::time::SystemTime::now(),
    );
    assert!(
        late.len() > 20
            && late
                .iter()
                .all(|a| matches!(a.backend(), Some("b1" | "b3")))
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
    lb.lbd
        .wait_for_log_after(
            mark,
            &format!("{back}: healthy -> unhealthy"),
            Duration::from_secs(10),
        )
        .unwrap();
    // The state change is logged before the new table is written and flipped.
    lb.lbd
        .wait_for_log_after(mark, "tables updated", Duration::from_secs(10))
        .unwrap();
    let client = ClientLoop::start(lb.lab.client_ns(), VIP, VIP_PORT, PER_CONN, LOOP_LIMIT);
    wait_attempts(&client, 30, Duration::from_secs(10));

    let mark = lb.lbd.log_len();
    let restarted = lb.restart_server(1);
    let log = lb
        .lbd
        .wait_for_log_after(
            mark,
            &format!("{back}: slow start over 3s"),
            Duration::from_secs(10),
        )
        .unwrap();
    let healthy =
        first_time(&log, &format!("{back}: unhealthy -> healthy")).expect("healthy again");
    // Until a little after the ramp ends, then a while at full weight.
    thread::sleep(SLOW_START + SLACK + Duration::from_secs(2));
    let attempts = client.stop();

    let failed: Vec<&Attempt> = attempts.iter().filter(|a| a.failure().is_some()).collect();
    assert!(failed.is_empty(), "connections failed: {failed:?}");
    let back_after = millis_between(restarted, healthy);
    let early = started_between(&attempts, healthy, healthy + Duration::from_secs(1));
    let late = started_between(
        &attempts,
        healthy + SLOW_START + SLACK,
        std::time::SystemTime::now(),
    );
    let (early_share, late_share) = (share_of(&early, "b2"), share_of(&late, "b2"));
    println!(
        "come back: healthy and in the table {back_after} ms after the restart (bound {} ms); \
         share of new connections in the first second {:.1}% ({} connections), after the \
         3 s slow start {:.1}% ({} connections); 0 failed",
        ms(recovery_bound()),
        early_share * 100.0,
        early.len(),
        late_share * 100.0,
        late.len()
    );
    assert!(
        back_after <= ms(recovery_bound() + SLACK),
        "{back_after} ms"
    );
    // The ramp's first second gives it 10% to 40% of a full weight: about 9% of new
    // connections, against a third once the ramp is over.
    assert!(
        early.iter().any(|a| a.backend() == Some("b2")),
        "b2 is used again"
    );
    assert!(
        early_share < 0.2,
        "b2 took {early_share:.3} at the start of its ramp"
    );
    assert!(late_share > 0.2, "b2 took {late_share:.3} after its ramp");
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
    wait_attempts(&client, 30, Duration::from_secs(10));
    let mark = lb.lbd.log_len();
    let (killed, _) = lb.kill_server(1);
    let log = lb
        .lbd
        .wait_for_log_after(
            mark,
            &format!("{victim}: healthy -> unhealthy (passive:"),
            Duration::from_secs(10),
        )
        .unwrap();
    let ejected = first_time(&log, "(passive:").unwrap();
    // Fixed before the probes let it back in (5 consecutive successes, about 1 s).
    lb.restart_server(1);
    let log = lb
        .lbd
        .wait_for_log_after(
            mark,
            &format!("{victim}: unhealthy -> healthy"),
            Duration::from_secs(10),
        )
        .unwrap();
    let returned = first_time(&log, &format!("{victim}: unhealthy -> healthy")).unwrap();
    thread::sleep(Duration::from_secs(1));
    let attempts = client.stop();
    drop(health_servers);

    assert!(
        !log.contains(&format!("{victim}: probe failed")),
        "the active probe never failed:\n{log}"
    );
    let refused = failures(&attempts, FailureKind::Refused);
    let last_refused = refused
        .iter()
        .map(|a| a.start)
        .max()
        .expect("refusals seen");
    println!(
        "passive: ejected {} ms after the kill ({} refused connections, last {} ms after \
         the kill); back through the active probe {} ms after the ejection",
        millis_between(killed, ejected),
        refused.len(),
        millis_between(killed, last_refused),
        millis_between(ejected, returned)
    );
    // Ejected at the first counter sample (one probe interval) with enough attempts.
    assert!(millis_between(killed, ejected) <= ms(INTERVAL * 2 + SLACK));
    assert!(millis_between(ejected, last_refused) <= ms(SLACK));
    let after = started_between(&attempts, returned + SLACK, std::time::SystemTime::now());
    assert!(
        after.iter().all(|a| a.backend().is_some()),
        "failures after the return"
    );
    assert!(share_of(&after, "b2") > 0.15, "b2 takes connections again");
}
