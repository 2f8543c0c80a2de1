//! Hitless operations end to end: lbd killed or upgraded under load, and a flow table
//! far smaller than the number of connections. Real TCP through the VIP; every client
//! loop is bounded in time.
use std::{
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use lb_tests::{
    client::http_get, hold_via, lab_config, netns, scenario::three_zones, HeldConn, RunningLb, VIP,
    VIP_PORT,
};

/// A client loop in the lab's client namespace: short connections one after another,
/// and long-lived ones echoing, until stopped (or 60 s pass). Counts everything.
struct Load {
    stop: Arc<AtomicBool>,
    /// Rounds done (a short connection and an echo each), failed or not.
    rounds: Arc<AtomicUsize>,
    thread: Option<thread::JoinHandle<LoadResult>>,
}

#[derive(Debug, Default)]
struct LoadResult {
    short_ok: usize,
    failures: Vec<String>,
    echoes_ok: usize,
}

impl LoadResult {
    /// Prints the counts (for the closing figures) and asserts that nothing failed and
    /// enough traffic ran to mean something.
    fn report_and_check(&self, label: &str) {
        println!(
            "{label}: {} short connections ok, {} echoes on 6 long-lived ok, {} failed",
            self.short_ok,
            self.echoes_ok,
            self.failures.len()
        );
        assert!(
            self.failures.is_empty(),
            "{} failures: {:?}",
            self.failures.len(),
            &self.failures[..self.failures.len().min(5)]
        );
        assert!(self.short_ok > 20 && self.echoes_ok > 20, "{self:?}");
    }
}

impl Load {
    fn start(lb: &RunningLb, held: Vec<HeldConn>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let rounds = Arc::new(AtomicUsize::new(0));
        let done = rounds.clone();
        let thread = netns::spawn_in(lb.lab.client_ns(), move || {
            let mut held = held;
            let mut r = LoadResult::default();
            let started = Instant::now();
            let mut i = 0usize;
            while !flag.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(60) {
                match http_get(VIP, VIP_PORT, Duration::from_secs(3)) {
                    Ok(_) => r.short_ok += 1,
                    Err(e) => r.failures.push(format!("short #{i}: {e}")),
                }
                let n = held.len();
                let conn = &mut held[i % n];
                let msg = format!("ping {i}\n");
                match conn.echo(&msg, Duration::from_secs(3)) {
                    Ok(reply) if reply == msg => r.echoes_ok += 1,
                    Ok(reply) => r.failures.push(format!("echo #{i}: got {reply:?}")),
                    Err(e) => r
                        .failures
                        .push(format!("echo #{i} on {}: {e}", conn.backend)),
                }
                i += 1;
                done.store(i, Ordering::SeqCst);
            }
            r
        });
        Load {
            stop,
            rounds,
            thread: Some(thread),
        }
    }

    /// Waits (up to 30 s) until the load has done `n` more rounds: traffic ran through
    /// whatever state the test is in, however slow the machine.
    fn wait_rounds(&self, n: usize) {
        let want = self.rounds.load(Ordering::SeqCst) + n;
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.rounds.load(Ordering::SeqCst) < want {
            assert!(
                Instant::now() < deadline,
                "the load did {} of {want} rounds in 30 s",
                self.rounds.load(Ordering::SeqCst)
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn finish(mut self) -> LoadResult {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().expect("load thread")
    }
}

fn hold_some(lb: &RunningLb, n: usize) -> Vec<HeldConn> {
    (0..n)
        .map(|i| {
            hold_via(lb.lab.client_ns(), VIP, VIP_PORT, Duration::from_secs(3))
                .unwrap_or_else(|e| panic!("long-lived connection #{i}: {e}"))
        })
        .collect()
}

fn new_flows_logged(log: &str) -> u64 {
    log.lines()
        .find_map(|l| l.split("service web: new_flows=").nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no service counters in:\n{log}"))
}

fn xdp_prog_id(lb: &RunningLb, dev: &str) -> String {
    let out = netns::ns_ip(lb.lab.lb_ns(), &["-d", "link", "show", dev]);
    out.split("prog/xdp id ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no XDP program on {dev}: {out}"))
        .to_string()
}

#[test]
fn sigkill_and_restart_under_load_fails_no_connection() {
    let lab = three_zones();
    let config = lab_config(&lab, &[1, 1, 1]);
    let mut lb = RunningLb::start(lab, &config);
    let held = hold_some(&lb, 6);
    let load = Load::start(&lb, held);
    load.wait_rounds(10);

    lb.lbd.signal(libc::SIGKILL);
    assert!(
        lb.lbd.wait_exit(Duration::from_secs(30)).is_some(),
        "lbd did not die"
    );
    // No controller at all for a while: the pinned data path carries on alone.
    load.wait_rounds(10);
    lb.restart_lbd();
    assert!(
        lb.lbd.log().contains("adopting the data path pinned"),
        "{}",
        lb.lbd.log()
    );
    load.wait_rounds(10);
    let result = load.finish();
    result.report_and_check("restart (SIGKILL)");

    // The counters are pinned too: the second lbd reports every flow of both lifetimes.
    let log = lb.stop_lbd();
    assert_eq!(
        new_flows_logged(&log),
        (result.short_ok + 6) as u64,
        "{log}"
    );
}

#[test]
fn upgrade_replaces_the_program_on_the_live_link_without_a_reset() {
    let lab = three_zones();
    let config = lab_config(&lab, &[1, 1, 1]);
    let mut lb = RunningLb::start(lab, &config);
    let before = (xdp_prog_id(&lb, "lbc"), xdp_prog_id(&lb, "lbb"));
    let held = hold_some(&lb, 6);
    let load = Load::start(&lb, held);
    load.wait_rounds(10);

    // systemd's restart: SIGTERM, then the new binary.
    let mut old = lb.restart_lbd_after_sigterm();
    assert!(
        old.try_wait().is_some_and(|s| s.success()),
        "the old lbd exits 0 on SIGTERM"
    );
    let after = (xdp_prog_id(&lb, "lbc"), xdp_prog_id(&lb, "lbb"));
    assert_ne!(before.0, after.0, "a new program on lbc");
    assert_ne!(before.1, after.1, "a new program on lbb");
    assert!(
        lb.lbd
            .log()
            .contains("replaced the program on lbc's pinned XDP link"),
        "{}",
        lb.lbd.log()
    );
    load.wait_rounds(20);
    load.finish().report_and_check("upgrade");
}

#[test]
fn established_connections_survive_a_flow_table_much_smaller_than_the_traffic() {
    let lab = three_zones();
    let config = lab_config(&lab, &[1, 1, 1])
        .replace("services:", "limits: { flow_table_size: 1024 }\nservices:");
    let lb = RunningLb::start(lab, &config);
    let mut held = hold_some(&lb, 20);
    // Churn several times the table's size of short connections: the idle long-lived
    // flows' entries are evicted.
    let churn = lb.burst(3000, Duration::from_secs(3), Duration::from_secs(120));
    churn.assert_all_answered(3000);
    // Their next packets miss the table and are placed by Maglev: on the same backend.
    let failures: Vec<String> = held
        .iter_mut()
        .enumerate()
        .filter_map(
            |(i, c)| match c.echo("after churn\n", Duration::from_secs(3)) {
                Ok(r) if r == "after churn\n" => None,
                Ok(r) => Some(format!("#{i} on {}: {r:?}", c.backend)),
                Err(e) => Some(format!("#{i} on {}: {e}", c.backend)),
            },
        )
        .collect();
    println!(
        "table full (1024 entries): {} churn connections ok, {} of 20 long-lived echoed after",
        churn.ok,
        20 - failures.len()
    );
    assert!(failures.is_empty(), "{failures:?}");
}
