//! `lb-lab --story`: six backends over three zones, background traffic, and a scripted
//! operator story told as it happens, with `lbctl`'s output at each step:
//! a backend fails and is ejected, a zone is drained, a backend is drained and removed.
//!
//! Health probes and the data-path meaning of draining come with issue 3. Until then
//! the story ejects the failed backend itself through the API (after the merge the
//! probes do it, and `lbctl health` shows why), and drains are recorded, persisted and
//! reported but new flows still reach drained backends and zones; the story says so
//! where it matters.
use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use lb_tests::{lab_config, lab_run_dir, BackendSpec, Lab, LabSpec, Lbctl, RunningLb};

use super::traffic::{Tally, Traffic};

/// Longest the background traffic runs with `--keep` (loops end by themselves).
const KEEP_LIMIT: Duration = Duration::from_secs(3600);

pub fn run(keep: bool, stop: &AtomicBool) -> Result<(), String> {
    let zones = ["az-a", "az-a", "az-b", "az-b", "az-c", "az-c"];
    let spec = LabSpec {
        backends: zones
            .iter()
            .enumerate()
            .map(|(i, z)| BackendSpec::new(format!("b{}", i + 1), *z))
            .collect(),
        one_nic: false,
    };
    say("building the lab: client, LB, switch and six backends (b1..b6) in zones az-a, az-b, az-c");
    let lab = Lab::build(&spec);
    let config = lab_config(&lab, &[1; 6]);
    let lb = RunningLb::start(lab, &config);
    let ctl = lb.lbctl();
    let socket = lab_run_dir(&lb.lab).join("lbd.sock");
    say(&format!(
        "lbd runs in namespace {}; its admin socket is {}",
        lb.lab.lb_ns(),
        socket.display()
    ));
    let limit = if keep {
        KEEP_LIMIT
    } else {
        Duration::from_secs(120)
    };
    let traffic = Traffic::start(lb.lab.client_ns(), 20, limit);
    pause(3, stop);

    chapter(1, "all six backends serve");
    show(&ctl, &["service", "list"]);
    show(&ctl, &["zone", "list"]);
    show(&ctl, &["stats"]);
    tally(&traffic.tally());

    chapter(2, "backend b3 (10.1.0.13, az-b) fails");
    say("its switch port goes down; connections that land on it now time out");
    lb.lab.set_backend_link(2, false);
    let before = traffic.tally().failed;
    pause(3, stop);
    let failed = traffic.tally().failed - before;
    say(&format!("{failed} connections failed in 3 s"));
    show(&ctl, &["health"]);
    say("nothing probes backends in this build (issue 3 brings probes that eject b3 by");
    say("themselves and show it unhealthy here); the operator ejects it through the API:");
    show(&ctl, &["backend", "remove", "web", "10.1.0.13:8080"]);
    let before = traffic.tally().failed;
    pause(3, stop);
    say(&format!(
        "{} connections failed in the 3 s after the ejection",
        traffic.tally().failed - before
    ));
    show(&ctl, &["backend", "list", "web"]);

    chapter(3, "zone az-c is drained");
    show(&ctl, &["zone", "drain", "az-c"]);
    show(&ctl, &["zone", "list"]);
    say("the drain is recorded in the desired state and persisted; its data-path meaning");
    say("(no new flows to az-c) arrives with issue 3, so az-c still takes new flows here:");
    pause(2, stop);
    show(&ctl, &["stats", "--service", "web"]);
    show(&ctl, &["zone", "undrain", "az-c"]);

    chapter(4, "backend b2 (10.1.0.12, az-a) is drained, then removed");
    show(&ctl, &["backend", "drain", "web", "10.1.0.12:8080"]);
    show(&ctl, &["backend", "list", "web"]);
    say("once its active flows reach 0 it can go (short connections here: at once)");
    pause(2, stop);
    show(&ctl, &["backend", "remove", "web", "10.1.0.12:8080"]);
    pause(2, stop);

    chapter(5, "where the traffic went");
    show(&ctl, &["stats"]);
    show(&ctl, &["top", "--duration", "1"]);
    tally(&traffic.tally());
    show(&ctl, &["config", "dump"]);

    if keep {
        say(&format!(
            "kept running with background traffic (Ctrl-C tears it down). Try:\n  target/debug/lbctl --socket {} top\n  target/debug/lbctl --socket {} stats\n  nsenter --net=/run/netns/{} curl -s http://127.0.0.1:9464/metrics",
            socket.display(),
            socket.display(),
            lb.lab.lb_ns()
        ));
        let mut waited = Duration::ZERO;
        while !stop.load(Ordering::SeqCst) && waited < KEEP_LIMIT {
            std::thread::sleep(Duration::from_millis(200));
            waited += Duration::from_millis(200);
        }
    }
    drop(traffic);
    drop(lb);
    say("torn down");
    Ok(())
}

fn say(line: &str) {
    println!("lab: {line}");
}

fn chapter(n: u32, title: &str) {
    println!("\n=== {n}. {title} ===");
}

fn show(ctl: &Lbctl, args: &[&str]) {
    println!("\n$ lbctl {}", args.join(" "));
    let out = ctl.run(args);
    print!("{}", out.stdout);
    if !out.success() {
        print!("{}", out.stderr);
    }
}

fn tally(t: &Tally) {
    let per: Vec<String> = t
        .per_backend
        .iter()
        .map(|(b, n)| format!("{b}={n}"))
        .collect();
    say(&format!(
        "client so far: {} answered ({}), {} failed",
        t.per_backend.values().sum::<u64>(),
        per.join(" "),
        t.failed
    ));
}

fn pause(secs: u64, stop: &AtomicBool) {
    for _ in 0..secs * 10 {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
