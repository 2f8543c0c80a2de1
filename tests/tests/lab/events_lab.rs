//! Lifecycle events through a real `lbd` on the namespace lab: the drain of a backend
//! holding a long connection is complete (`backend_drained`) exactly once, and only
//! after that connection closed; `lbctl events --follow` shows a backend's health
//! transitions and a zone drain in the exact order they happened, and nothing else.
use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use lb_tests::{
    hold_via, lbctl::lbctl_path, scenario::*, HeldConn, LabConfig, RunningLb, VIP, VIP_PORT,
};

const PER_CONN: Duration = Duration::from_secs(5);
const WAIT: Duration = Duration::from_secs(30);

fn start() -> RunningLb {
    start_with("")
}

/// lbd with `top` (top-level config keys) added.
fn start_with(top: &str) -> RunningLb {
    let lab = three_zones();
    let health = fast_health();
    // Longer than the test: the held connection is never purged while it runs, so
    // the drain can only complete by the connection ending.
    let config = LabConfig::new(&lab)
        .policy(&[&health, "deregistration_delay: 300s"])
        .yaml();
    let config = config.replacen("services:\n", &format!("{top}services:\n"), 1);
    let mut lb = RunningLb::start(lab, &config);
    lb.wait_healthy(0, &[0, 1, 2], WAIT);
    lb
}

/// A file the event hook appends to; removed on drop.
struct HookOutput(std::path::PathBuf);

impl Drop for HookOutput {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn hold_on(lb: &RunningLb, backend: &str) -> HeldConn {
    for _ in 0..100 {
        let conn = hold_via(lb.lab.client_ns(), VIP, VIP_PORT, PER_CONN).unwrap();
        if conn.backend == backend {
            return conn;
        }
        conn.close();
    }
    panic!("no connection landed on {backend} in 100 tries");
}

/// The kept events, as lbd's JSON lines parsed.
fn events(lb: &RunningLb) -> Vec<serde_json::Value> {
    lb.lbctl()
        .ok(&["-o", "json", "events"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn of_kind<'a>(
    all: &'a [serde_json::Value],
    kind: &str,
    backend: &str,
) -> Vec<&'a serde_json::Value> {
    all.iter()
        .filter(|e| e["event"] == kind && e["backend"] == backend)
        .collect()
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[test]
fn a_drain_completes_once_and_only_after_its_last_connection_closed() {
    let out = HookOutput(std::env::temp_dir().join(format!(
        "lb-events-hook-{}-{}",
        std::process::id(),
        unix_ms()
    )));
    let hook = format!(
        "events:\n  hook: {{ command: [/bin/sh, -c, 'cat >> {}'], timeout: 5s }}\n",
        out.0.display()
    );
    let lb = start_with(&hook);
    let mut held = hold_on(&lb, "b2");
    let b2 = format!("{}:8080", lb.lab.backend_addr(1));
    lb.lbctl().ok(&["backend", "drain", "web", &b2]);
    assert_eq!(held.echo("still here\n", PER_CONN).unwrap(), "still here\n");

    // Open: the drain stays incomplete (lbd looks every 50 ms; 3 s is 60 looks).
    std::thread::sleep(Duration::from_secs(3));
    let open = events(&lb);
    assert_eq!(
        of_kind(&open, "backend_draining", &b2).len(),
        1,
        "{open:#?}"
    );
    assert_eq!(of_kind(&open, "backend_drained", &b2).len(), 0, "{open:#?}");
    assert_eq!(held.echo("and here\n", PER_CONN).unwrap(), "and here\n");

    let closed_at = unix_ms();
    held.close();
    let deadline = Instant::now() + WAIT;
    let drained = loop {
        let all = events(&lb);
        if let Some(e) = of_kind(&all, "backend_drained", &b2).first() {
            break (*e).clone();
        }
        assert!(
            Instant::now() < deadline,
            "no backend_drained within {WAIT:?}: {all:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(drained["detail"], "no flows left");
    assert_eq!(drained["zone"], "az-b");
    let at = drained["time_unix_ms"].as_u64().unwrap();
    assert!(
        at >= closed_at,
        "drained at {at}, before the connection closed at {closed_at}"
    );
    // Exactly once: 2 s later (40 more looks) there is still one.
    std::thread::sleep(Duration::from_secs(2));
    let later = events(&lb);
    assert_eq!(
        of_kind(&later, "backend_drained", &b2).len(),
        1,
        "{later:#?}"
    );
    // The hook ran once for every event, with the line the API gives (it had 2 s).
    let hooked: Vec<serde_json::Value> = std::fs::read_to_string(&out.0)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let mut by_seq = hooked;
    by_seq.sort_by_key(|e| e["seq"].as_u64());
    assert_eq!(by_seq, later, "the hook's input against the API's events");
    println!("lbctl events:\n{}", lb.lbctl().ok(&["events"]));
    println!(
        "drain complete {} ms after the held connection closed (event {})",
        at - closed_at,
        drained["seq"]
    );
}

/// `lbctl events --follow` in the background; killed on drop.
struct Follower {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Follower {
    fn start(lb: &RunningLb, since: u64) -> Follower {
        let mut child = Command::new(lbctl_path())
            .arg("--socket")
            .arg(lb.socket())
            .args(["-o", "json", "events", "--follow", "--for", "120s"])
            .args(["--since", &since.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .expect("lbctl events --follow starts");
        let out = child.stdout.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Follower { child, lines }
    }

    /// The next event, within `within`.
    fn next(&self, within: Duration) -> serde_json::Value {
        let line = self
            .lines
            .recv_timeout(within)
            .unwrap_or_else(|e| panic!("no event within {within:?}: {e}"));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn events_follow_shows_health_transitions_and_zone_drains_in_order() {
    let mut lb = start();
    let since = events(&lb).last().map_or(0, |e| e["seq"].as_u64().unwrap());
    let follower = Follower::start(&lb, since);
    let b3 = format!("{}:8080", lb.lab.backend_addr(2));

    lb.kill_server(2);
    let down = follower.next(WAIT);
    lb.restart_server(2);
    let up = follower.next(WAIT);
    lb.lbctl()
        .ok(&["zone", "drain", "az-b", "--service", "web"]);
    let drained = follower.next(WAIT);
    lb.lbctl()
        .ok(&["zone", "undrain", "az-b", "--service", "web"]);
    let undrained = follower.next(WAIT);

    let got: Vec<(String, String)> = [&down, &up, &drained, &undrained]
        .iter()
        .map(|e| {
            let what = e.get("backend").unwrap_or(&e["zone"]);
            (
                e["event"].as_str().unwrap().to_string(),
                what.as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("backend_unhealthy", b3.as_str()),
        ("backend_healthy", b3.as_str()),
        ("zone_drained", "az-b"),
        ("zone_undrained", "az-b"),
    ]
    .iter()
    .map(|(k, w)| (k.to_string(), w.to_string()))
    .collect();
    assert_eq!(got, want);
    let seqs: Vec<u64> = [&down, &up, &drained, &undrained]
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(
        seqs,
        (since + 1..=since + 4).collect::<Vec<_>>(),
        "no other event between"
    );
    assert!(
        down["detail"].as_str().unwrap().contains("refused"),
        "{down}"
    );
    assert!(
        follower.lines.recv_timeout(Duration::from_secs(1)).is_err(),
        "nothing more"
    );
}
