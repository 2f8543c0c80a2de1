//! `lb-lab --story`: six backends over three zones, background traffic, and a scripted
//! operator story told as it happens, with `lbctl`'s output at each step:
//! a backend fails and the probes eject it, a zone is drained, a backend is drained and
//! removed.
use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use lb_tests::{lab_run_dir, BackendSpec, Lab, LabConfig, LabSpec, Lbctl, RunningLb};

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
        ipv6: false,
        tc: false,
    };
    say("building the lab: client, LB, switch and six backends (b1..b6) in zones az-a, az-b, az-c");
    let lab = Lab::build(&spec);
    // Quick probes, so that the story does not wait: a dead backend is out within
    // about 2 x 500 ms + 500 ms.
    let config = LabConfig::new(&lab)
        .policy(&["health: { interval: 500ms, timeout: 300ms }"])
        .yaml();
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
    say("its switch port goes down: probes and connections to it time out");
    lb.lab.set_backend_link(2, false);
    let before = traffic.tally().failed;
    let failed_at = Instant::now();
    let ejected = wait_unhealthy(&ctl, "10.1.0.13", Duration::from_secs(20), stop);
    say(&format!(
        "the probes ejected it after {:.1} s; {} connections failed meanwhile",
        failed_at.elapsed().as_secs_f64(),
        traffic.tally().failed - before
    ));
    if !ejected {
        say("(it was not ejected in time: see lbd's log)");
    }
    show(&ctl, &["health"]);
    show(&ctl, &["backend", "list", "web"]);
    let before = traffic.tally().failed;
    pause(3, stop);
    say(&format!(
        "{} connections failed in the 3 s after the ejection",
        traffic.tally().failed - before
    ));

    chapter(3, "zone az-c is drained");
    show(&ctl, &["zone", "drain", "az-c"]);
    show(&ctl, &["zone", "list"]);
    say("new flows leave az-c at once; its existing flows continue:");
    pause(3, stop);
    show(&ctl, &["stats", "--service", "web"]);
    show(&ctl, &["zone", "undrain", "az-c"]);

    chapter(4, "backend b2 (10.1.0.12, az-a) is drained, then removed");
    show(&ctl, &["backend", "drain", "web", "10.1.0.12:8080"]);
    show(&ctl, &["backend", "list", "web"]);
    say("it takes no new flows; once its active flows reach 0 it can go (short");
    say("connections here: at once)");
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

/// Waits (bounded) until `lbctl health` calls the backend at `address` unhealthy.
fn wait_unhealthy(ctl: &Lbctl, address: &str, limit: Duration, stop: &AtomicBool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline && !stop.load(Ordering::SeqCst) {
        let out = ctl.run(&["-o", "json", "health"]);
        let unhealthy = serde_json::from_str::<serde_json::Value>(&out.stdout)
            .ok()
            .and_then(|v| {
                v.as_array()?
                    .iter()
                    .find(|h| h["address"] == address)
                    .map(|h| h["state"] == "unhealthy")
            })
            .unwrap_or(false);
        if unhealthy {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
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
