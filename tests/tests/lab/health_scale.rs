//! Health checking at 10,000 backends: lbd must apply every probe result as it comes
//! (a verdict for every backend within a few intervals of start), and a backend that
//! goes silent must be `unhealthy` within the documented detection bound
//! (`unhealthy_threshold x interval + interval`), measured from lbd's own log stamps.
//! The backends are addresses on `lo` of one namespace with one responder for all their
//! probes; the silent one gets an nftables drop rule. Figures are printed
//! (`--nocapture`).
use std::{
    thread,
    time::{Duration, Instant, SystemTime},
};

use lb_tests::{
    lbd_log::{first_time, lines_with, millis_between},
    many_backends::{self, ProbeResponder},
    Lab, LabConfig, LabSpec, RunningLb,
};

const BACKENDS: usize = 10_000;
const PROBE_PORT: u16 = 9090;
const INTERVAL: Duration = Duration::from_secs(1);
const UNHEALTHY_THRESHOLD: u32 = 2;
/// On top of the bound: a loaded 2-core machine running 10,000 probes a second next to
/// other builds and tests. Before the fix lbd applied a few dozen results a second, so
/// a silent backend stayed `healthy` for minutes.
const SLACK: Duration = Duration::from_secs(5);

/// Lines of `log` that say some backend became healthy.
fn healthy_count(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("unknown -> healthy"))
        .count()
}

#[test]
fn a_silent_backend_among_ten_thousand_is_detected_within_the_bound() {
    let lab = Lab::build(&LabSpec::with_backends(1));
    many_backends::add_addresses(&lab, BACKENDS);
    let _responder = ProbeResponder::start(lab.backend_ns(0), PROBE_PORT);
    let health = format!(
        "health: {{ port: {PROBE_PORT}, interval: {}ms, timeout: 500ms, healthy_threshold: 2, unhealthy_threshold: {UNHEALTHY_THRESHOLD}, passive_failure_ratio: 0 }}",
        INTERVAL.as_millis()
    );
    let mut yaml = format!(
        "limits: {{ max_backends: 16384 }}\n{}",
        LabConfig::new(&lab).policy(&[&health]).yaml()
    );
    let zone = &lab.backend_spec(0).zone;
    for i in 0..BACKENDS {
        yaml.push_str(&format!(
            "      - {{ address: {}, port: 8080, zone: {zone} }}\n",
            many_backends::address(i)
        ));
    }
    let started = Instant::now();
    let mut lb = RunningLb::start(lab, &yaml);

    // Every backend (the lab's own and the 10,000) gets its verdict within a few
    // intervals: each needs two results, and all of them are applied.
    let all = BACKENDS + 1;
    let deadline = started + Duration::from_secs(60);
    let mut log = lb.lbd.log();
    while healthy_count(&log) < all {
        assert!(
            Instant::now() < deadline,
            "{} of {all} backends healthy 60 s after lbd started",
            healthy_count(&log)
        );
        assert!(lb.lbd.is_running(), "lbd exited:\n{log}");
        thread::sleep(Duration::from_millis(100));
        log = lb.lbd.log();
    }
    println!(
        "all {all} backends healthy {:.1} s after lbd was started",
        started.elapsed().as_secs_f64()
    );

    // Let it settle into its rhythm, then silence one backend.
    thread::sleep(INTERVAL * 2);
    let victim = many_backends::address(BACKENDS / 2);
    let needle = format!("backend web/{victim}:8080: healthy -> unhealthy");
    let mark = lb.lbd.log_len();
    many_backends::silence(&lb.lab, victim, PROBE_PORT);
    let silenced = SystemTime::now();
    let bound = INTERVAL * (UNHEALTHY_THRESHOLD + 1);
    let deadline = Instant::now() + bound + SLACK + Duration::from_secs(10);
    let tail = loop {
        let log = lb.lbd.log();
        let tail = log.get(mark..).unwrap_or("").to_string();
        if tail.contains(&needle) {
            break tail;
        }
        assert!(
            Instant::now() < deadline,
            "backend {victim} still not unhealthy {:?} after it went silent (bound {bound:?}); \
             lbd logged since: {} lines",
            bound + SLACK + Duration::from_secs(10),
            tail.lines().count()
        );
        thread::sleep(Duration::from_millis(50));
    };
    let detected = first_time(&tail, &needle).expect("the line has a time stamp");
    let took = millis_between(silenced, detected);
    let others = lines_with(&tail, "-> unhealthy").len() - 1;
    for (_, line) in lines_with(&tail, &format!("web/{victim}:8080")) {
        println!("  {line}");
    }
    println!(
        "{BACKENDS} backends probed every {INTERVAL:?}: silent backend unhealthy {took} ms after \
         its drop rule (bound {} ms + slack {} ms); {others} other backends went unhealthy meanwhile",
        bound.as_millis(),
        SLACK.as_millis()
    );
    assert!(
        took <= (bound + SLACK).as_millis() as i64,
        "detected {took} ms after the backend went silent; the bound is {bound:?} (+{SLACK:?})"
    );
}
