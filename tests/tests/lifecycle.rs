//! Backend lifecycle and reloads, real TCP through `lbd` on a namespace lab: a draining
//! backend keeps its long-lived connection until the deregistration delay and takes no
//! new one; SIGHUP applies a valid file and rejects a broken one as a whole, with
//! forwarding unchanged.
use std::{
    thread,
    time::{Duration, Instant, SystemTime},
};

use lb_tests::{
    burst, hold_via,
    lbd_log::{first_time, millis_between},
    scenario::*,
    ClientLoop, LabConfig, RunningLb, VIP, VIP_PORT,
};

#[test]
fn a_draining_backend_keeps_its_long_lived_connection_until_the_delay_and_gets_no_new_one() {
    const DELAY: Duration = Duration::from_secs(3);
    let lab = three_zones();
    let health = fast_health();
    let policy = [health.as_str(), "deregistration_delay: 3s"];
    let config = LabConfig::new(&lab).policy(&policy).yaml();
    let mut lb = RunningLb::start(lab, &config);
    lb.wait_healthy(0, &[0, 1, 2], Duration::from_secs(10));
    let mut held = hold_via(lb.lab.client_ns(), VIP, VIP_PORT, Duration::from_secs(5)).unwrap();
    let name = held.backend.clone();
    let i = lb
        .lab
        .spec()
        .backends
        .iter()
        .position(|b| b.name == name)
        .unwrap();

    let drained = LabConfig::new(&lb.lab)
        .policy(&policy)
        .backend(i, "state: draining")
        .yaml();
    let log = lb.reload(&drained).unwrap();
    let draining = first_time(&log, "draining (no new flows").expect("logged");
    let client = ClientLoop::start(
        lb.lab.client_ns(),
        VIP,
        VIP_PORT,
        Duration::from_secs(2),
        Duration::from_secs(60),
    );
    // The held connection keeps echoing through the delay.
    let mut echoes = 0;
    while SystemTime::now() < draining + DELAY - Duration::from_millis(400) {
        let msg = format!("echo {echoes}\n");
        assert_eq!(held.echo(&msg, Duration::from_secs(1)).unwrap(), msg);
        echoes += 1;
        thread::sleep(Duration::from_millis(200));
    }
    let attempts = client.stop();
    // After the delay its flow entries are purged: its next packet is placed anew and
    // the backend that gets it resets the connection.
    let deadline = Instant::now() + Duration::from_secs(5);
    let broken_at = loop {
        if held.echo("after\n", Duration::from_millis(300)).is_err() {
            break SystemTime::now();
        }
        assert!(
            Instant::now() < deadline,
            "the held connection outlived the delay"
        );
        thread::sleep(Duration::from_millis(100));
    };
    let log = lb.lbd.log();
    let failed: Vec<_> = attempts.iter().filter(|a| a.failure().is_some()).collect();
    let to_drained = attempts
        .iter()
        .filter(|a| a.backend() == Some(name.as_str()))
        .count();
    println!(
        "draining: held connection to {name} echoed {echoes} times during the {} ms delay, \
         broke {} ms after draining began; {} new connections, {to_drained} to {name}, {} failed",
        ms(DELAY),
        millis_between(draining, broken_at),
        attempts.len(),
        failed.len()
    );
    assert!(failed.is_empty(), "{failed:?}");
    assert!(attempts.len() > 20);
    assert_eq!(
        to_drained, 0,
        "a new connection reached the draining backend"
    );
    assert!(millis_between(draining, broken_at) >= ms(DELAY) - 50);
    assert!(millis_between(draining, broken_at) <= ms(DELAY + SLACK) + 500);
    assert!(log.contains("deregistration delay passed; purged"), "{log}");
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
    let r = burst(
        lb.lab.client_ns(),
        VIP,
        VIP_PORT,
        90,
        Duration::from_secs(2),
        Duration::from_secs(30),
    );
    assert_eq!(r.ok, 90, "forwarding must be unchanged: {:?}", r.failed);
    assert_eq!(r.backends_seen(), 3, "{:?}", r.per_backend);

    // A valid file: b3 removed. It takes no new connections at once.
    let shrunk: String = config
        .lines()
        .filter(|l| !l.contains(&lb.lab.backend_addr(2).to_string()))
        .map(|l| format!("{l}\n"))
        .collect();
    let log = lb.reload(&shrunk).unwrap();
    assert!(log.contains("removed from the config"), "{log}");
    let r = burst(
        lb.lab.client_ns(),
        VIP,
        VIP_PORT,
        60,
        Duration::from_secs(2),
        Duration::from_secs(30),
    );
    assert_eq!(r.ok, 60, "{:?}", r.failed);
    assert!(!r.per_backend.contains_key("b3"), "{:?}", r.per_backend);
}
