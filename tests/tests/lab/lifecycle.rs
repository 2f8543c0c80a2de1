//! Backend lifecycle and reloads, real TCP through `lbd` on a namespace lab: a draining
//! backend keeps its long-lived connection until the deregistration delay and takes no
//! new one; SIGHUP applies a valid file and rejects a broken one as a whole, with
//! forwarding unchanged.
use std::{
    thread,
    time::{Duration, Instant, SystemTime},
};

use lb_tests::{
    hold_via,
    lbd_log::{first_time, live_after, millis_between},
    scenario::*,
    ClientLoop, LabConfig, RunningLb, VIP, VIP_PORT,
};

/// Bounds each connection that must succeed.
const PER_CONN: Duration = Duration::from_secs(5);
/// Bounds every wait for a log line or for connections (they end as soon as it comes).
const WAIT: Duration = Duration::from_secs(30);

#[test]
fn a_draining_backend_keeps_its_long_lived_connection_until_the_delay_and_gets_no_new_one() {
    const DELAY: Duration = Duration::from_secs(3);
    // lbd takes the draining's start a few statements before it logs it; a thread can be
    // preempted in between on a loaded machine.
    const LOG_GAP: Duration = Duration::from_millis(200);
    let lab = three_zones();
    let health = fast_health();
    let policy = [health.as_str(), "deregistration_delay: 3s"];
    let config = LabConfig::new(&lab).policy(&policy).yaml();
    let mut lb = RunningLb::start(lab, &config);
    lb.wait_healthy(0, &[0, 1, 2], WAIT);
    let mut held = hold_via(lb.lab.client_ns(), VIP, VIP_PORT, PER_CONN).unwrap();
    let name = held.backend.clone();
    let i = lb.lab.backend_index(&name);

    let drained = LabConfig::new(&lb.lab)
        .policy(&policy)
        .backend(i, "state: draining")
        .yaml();
    let mark = lb.lbd.log_len();
    let log = lb.reload(&drained).unwrap();
    let draining = first_time(&log, "draining (no new flows").expect("logged");
    let reload_logged = first_time(&log, "SIGHUP: reloaded").expect("logged");
    let reloaded = live_after(reload_logged);
    let client = ClientLoop::start(lb.lab.client_ns(), VIP, VIP_PORT, PER_CONN, WAIT * 2);
    // The held connection echoes until it breaks: (start, end, answered) of each echo.
    let mut echoes: Vec<(SystemTime, SystemTime, bool)> = Vec::new();
    let deadline = Instant::now() + DELAY + WAIT;
    loop {
        let msg = format!("echo {}\n", echoes.len());
        let start = SystemTime::now();
        let answered = held.echo(&msg, PER_CONN).is_ok_and(|r| r == msg);
        echoes.push((start, SystemTime::now(), answered));
        if !answered {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the held connection outlived the delay"
        );
        thread::sleep(Duration::from_millis(50));
    }
    let log = lb
        .lbd
        .wait_for_log_after(mark, "deregistration delay passed; purged", WAIT)
        .unwrap();
    let purged = first_time(&log, "deregistration delay passed; purged").unwrap();
    wait_attempts_after(&client, reloaded, 20, WAIT);
    let attempts = client.stop();
    let failed: Vec<_> = attempts.iter().filter(|a| a.failure().is_some()).collect();
    let to_drained = attempts
        .iter()
        .filter(|a| a.backend() == Some(name.as_str()))
        .count();
    let (_, broke_end, _) = *echoes.last().unwrap();
    println!(
        "draining: held connection to {name} echoed {} times, its flows purged {} ms after \
         draining began (delay {} ms), the first echo after that broke; {} new connections, \
         {to_drained} to {name}, {} failed",
        echoes.len() - 1,
        millis_between(draining, purged),
        ms(DELAY),
        attempts.len(),
        failed.len()
    );
    assert!(failed.is_empty(), "{failed:?}");
    assert!(attempts.len() >= 20);
    // The loop started once the reload was logged (a stamp in whole milliseconds, so
    // up to 1 ms before the line was written, never after it).
    assert!(attempts.iter().all(|a| a.start >= reload_logged));
    assert_eq!(
        to_drained, 0,
        "a new connection reached the draining backend"
    );
    // lbd's own stamps: the purge came after the delay, and not much later.
    let delay = millis_between(draining, purged);
    assert!(
        delay >= ms(DELAY - LOG_GAP) && delay <= ms(DELAY + SLACK),
        "purged {delay} ms after draining began"
    );
    // Nothing broke the connection before the delay, and the purge did.
    assert!(
        broke_end >= draining + DELAY - LOG_GAP,
        "the held connection broke {} ms after draining began",
        millis_between(draining, broke_end)
    );
    assert!(
        echoes
            .iter()
            .all(|(start, _, answered)| !answered || *start < live_after(purged)),
        "an echo that started after the purge was answered"
    );
}

#[test]
fn sighup_applies_a_valid_file_and_rejects_a_broken_one_without_touching_forwarding() {
    let lab = three_zones();
    let health = fast_health();
    let config = LabConfig::new(&lab).policy(&[&health]).yaml();
    let mut lb = RunningLb::start(lab, &config);

    let broken = config
        .replacen("weight: 1 }", "weight: 0 }", 1)
        .replace("interval: 200ms", "interval: fast");
    let err = lb.reload(&broken).unwrap_err();
    assert!(
        err.contains("SIGHUP: reload rejected") && err.contains("services[0].health.interval"),
        "{err}"
    );
    let err = lb
        .reload(&config.replacen("weight: 1 }", "weight: 0 }", 1))
        .unwrap_err();
    assert!(
        err.contains("services[0].backends[0].weight: 0 is out of range"),
        "{err}"
    );
    let err = lb
        .reload(&config.replace("interfaces: [lbc, lbb]", "interfaces: [lbc]"))
        .unwrap_err();
    assert!(err.contains("interfaces: cannot change"), "{err}");
    // Forwarding unchanged.
    let r = lb.burst(90, PER_CONN, WAIT);
    r.assert_all_answered(90);
    assert_eq!(r.backends_seen(), 3, "{:?}", r.per_backend);

    // A valid file: b3 removed. It takes no new connections at once.
    let shrunk: String = config
        .lines()
        .filter(|l| !l.contains(&lb.lab.backend_addr(2).to_string()))
        .map(|l| format!("{l}\n"))
        .collect();
    let log = lb.reload(&shrunk).unwrap();
    assert!(log.contains("removed from the config"), "{log}");
    let r = lb.burst(60, PER_CONN, WAIT);
    r.assert_all_answered(60);
    assert!(!r.per_backend.contains_key("b3"), "{:?}", r.per_backend);
}
