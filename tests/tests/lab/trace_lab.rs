//! `lbctl trace` against a real `lbd` in a namespace lab: a connection made while the
//! service is traced shows up packet by packet with the backend that holds it; the
//! trace switches itself off when its duration ends; a second trace of the same
//! service, an unknown service and a bad body are refused naming what is wrong.
use std::{
    thread,
    time::{Duration, Instant},
};

use lb_tests::{
    hold_via, http, lab_config, scenario::three_zones, RunningLb, BACKEND_PORT, VIP, VIP_PORT,
};

/// lbd's `/metrics` value of the unlabelled series `name`.
fn metric(lb: &RunningLb, name: &str) -> u64 {
    let body = lb_tests::lbd_metrics::get(&lb.lab, "/metrics").body;
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{body}"))
        .parse()
        .unwrap()
}

/// A child process killed and reaped however the test ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `f` every 50 ms until it holds or `within` has passed.
fn wait_for(within: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn lbctl_trace_shows_a_real_connections_packets_until_the_trace_ends() {
    let lab = three_zones();
    let config = lab_config(&lab, &[1, 1, 1]);
    let lb = RunningLb::start(lab, &config);
    let ctl = lb.lbctl();
    assert_eq!(metric(&lb, "lb_trace_sessions"), 0);

    let tracing = thread::scope(|s| {
        let run = s.spawn(|| ctl.run(&["-o", "json", "trace", "web", "--for", "4s"]));
        wait_for(Duration::from_secs(10), "the trace is on", || {
            metric(&lb, "lb_trace_sessions") == 1
        });
        let busy = http::unix(
            &lb.socket(),
            "POST",
            "/v1/services/web/trace",
            Some(br#"{"sample": 1, "duration": "1s"}"#),
        );
        assert_eq!(busy.status, 409, "{}", busy.body);
        assert!(
            busy.body.contains("service web is already being traced"),
            "{}",
            busy.body
        );
        let mut held = hold_via(lb.lab.client_ns(), VIP, VIP_PORT, Duration::from_secs(10))
            .expect("a connection through the VIP");
        assert_eq!(
            held.echo("ping\n", Duration::from_secs(5)).unwrap(),
            "ping\n"
        );
        let done = (run.join().unwrap(), held.local, held.backend.clone());
        held.close();
        done
    });
    let (out, client, holder_name) = tracing;
    assert!(out.success(), "lbctl trace: {out:?}");
    let i = lb.lab.backend_index(&holder_name);
    let holder = format!("{}:{BACKEND_PORT}", lb.lab.backend_addr(i));
    let client = client.to_string();
    let ours: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .filter(|v: &serde_json::Value| v["src"] == client.as_str())
        .collect();
    // The client's SYN, the handshake's ACK, then the data: every one to the holder.
    let seen: Vec<(&str, &str)> = ours
        .iter()
        .map(|v| {
            (
                v["flags"].as_str().unwrap(),
                v["decision"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(ours.len() >= 3, "{seen:?}\n{}", out.stdout);
    assert_eq!(
        seen[..2],
        [("S", "stateless_syn"), ("A", "syn_cache")],
        "{}",
        out.stdout
    );
    for v in &ours {
        assert_eq!(v["service"], "web", "{v}");
        assert_eq!(v["direction"], "to_backend", "{v}");
        assert_eq!(v["dst"], format!("{VIP}:{VIP_PORT}"), "{v}");
        assert_eq!(v["backend"], holder.as_str(), "{v}");
        // Sent on by XDP, or, before the backend's neighbour entry exists (the lab is
        // fresh), passed to the kernel to resolve it: which the reason counters tell.
        match v["action"].as_str().unwrap() {
            "redirect" => assert_eq!(v["reason"], "redirect_interface", "{v}"),
            "tx" => assert_eq!(v["reason"], "tx_same_interface", "{v}"),
            "pass" => assert!(v["reason"].is_null(), "{v}"),
            other => panic!("action {other}: {v}"),
        }
    }
    assert!(seen[2..].iter().all(|(_, d)| *d == "flow_hit"), "{seen:?}");
    assert!(out.stderr.contains("trace of web ended"), "{}", out.stderr);

    // Over: switched off, and a new connection writes no record.
    wait_for(Duration::from_secs(10), "the trace is off", || {
        metric(&lb, "lb_trace_sessions") == 0
    });
    let records = metric(&lb, "lb_trace_records_total");
    let mut again = hold_via(lb.lab.client_ns(), VIP, VIP_PORT, Duration::from_secs(10)).unwrap();
    assert_eq!(
        again.echo("ping\n", Duration::from_secs(5)).unwrap(),
        "ping\n"
    );
    again.close();
    assert_eq!(
        metric(&lb, "lb_trace_records_total"),
        records,
        "records with the trace off"
    );
    assert_eq!(metric(&lb, "lb_trace_records_lost_total"), 0);

    let unknown = ctl.run(&["trace", "nosuch", "--for", "1s"]);
    assert!(!unknown.success());
    assert!(
        unknown.stderr.contains("no service nosuch (HTTP 404)"),
        "{}",
        unknown.stderr
    );
    let zero = ctl.run(&["trace", "web", "--sample", "0"]);
    assert!(
        zero.stderr.contains("sample: must be at least 1"),
        "{}",
        zero.stderr
    );
    let long = ctl.run(&["trace", "web", "--for", "1h"]);
    assert!(
        long.stderr.contains("duration: 1h is out of range"),
        "{}",
        long.stderr
    );

    // A client that goes away (Ctrl-C) ends its trace at once, not at its duration.
    let mut gone = KillOnDrop(
        std::process::Command::new(lb_tests::lbctl::lbctl_path())
            .arg("--socket")
            .arg(lb.socket())
            .args(["trace", "web", "--for", "10m"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("starting lbctl trace"),
    );
    wait_for(Duration::from_secs(10), "the second trace is on", || {
        metric(&lb, "lb_trace_sessions") == 1
    });
    gone.0.kill().expect("killing lbctl");
    gone.0.wait().expect("reaping lbctl");
    wait_for(
        Duration::from_secs(10),
        "the trace ends with its client",
        || metric(&lb, "lb_trace_sessions") == 0,
    );
}
