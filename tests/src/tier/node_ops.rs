//! What an operator does to one node of a running tier: `lbctl` on the node's API
//! socket (`node drain`, `node undrain`, `node status`, `backend add`), and a restart of
//! its `lbd` onto another binary, as a package upgrade does (SIGTERM, then the new
//! binary, which adopts the pinned data path and swaps its program onto the links).
use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use serde_json::Value;

use crate::{
    lbctl::Lbctl,
    process::{lbd_path, Daemon},
    tier::running::{api_socket, run_dir, spawn_lbd, RunningTier},
};

/// How long a restarted lbd may take to serve (see `running`).
const LBD_START: Duration = Duration::from_secs(90);
/// How long `lbctl node drain` waits for new flows to stop before it exits 5.
pub const DRAIN_FLOWS_TIMEOUT: &str = "10s";

/// What `lbctl node drain` reported, as printed with `-o json`.
#[derive(Debug)]
pub struct Drained {
    pub report: Value,
}

impl Drained {
    /// One line: the withdrawal and what was left.
    pub fn line(&self) -> String {
        let r = &self.report;
        format!(
            "withdrawal seen (lo and BIRD) after {} ms; new flows {}/s; flows still open {} (flow table entries {})",
            r["withdrawn_after_ms"], r["new_flows_per_sec"], r["active_flows"], r["flow_table_entries"]
        )
    }
}

impl RunningTier {
    /// `lbctl` on node `i`'s API socket.
    pub fn lbctl(&self, i: usize) -> Lbctl {
        Lbctl::new(&api_socket(&self.lab, i))
    }

    /// `lbctl node drain` on node `i`: panics unless it exits 0 (withdrawn from `lo` and
    /// from the node's BIRD, then no new flow for a second); the report.
    pub fn drain(&mut self, i: usize) -> Drained {
        let out = self.lbctl(i).run(&[
            "-o",
            "json",
            "node",
            "drain",
            "--flows-timeout",
            DRAIN_FLOWS_TIMEOUT,
        ]);
        assert!(
            out.success(),
            "lbctl node drain on node {i} exited {:?}: {}{}",
            out.code,
            out.stdout,
            out.stderr
        );
        let report: Value = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("lbctl node drain printed invalid JSON ({e}): {out:?}"));
        assert_eq!(report["changed"], true, "{report:#}");
        assert_eq!(report["node"]["drained"], true, "{report:#}");
        self.nodes[i].drained = true;
        Drained { report }
    }

    /// `lbctl node undrain` on node `i` (panics unless it removed the API's drain).
    pub fn undrain(&mut self, i: usize) {
        let r = self.lbctl(i).json(&["node", "undrain"]);
        assert_eq!(r["changed"], true, "{r:#}");
        self.nodes[i].drained = false;
    }

    /// `lbctl -o json node status` on node `i`.
    pub fn node_status(&self, i: usize) -> Value {
        self.lbctl(i).json(&["node", "status"])
    }

    /// The built `lbd` under another name (`name` in the lab's run directory, replacing
    /// whatever is there): the "new binary" of an upgrade (the same code: it proves the
    /// procedure, not a version change). A hard link where the filesystem allows one,
    /// since a debug `lbd` is tens of megabytes and several tests upgrade at once; else a
    /// copy.
    pub fn new_binary(&self, name: &str) -> PathBuf {
        let path = run_dir(&self.lab).join(name);
        let built = lbd_path();
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                panic!("removing {}: {e}", path.display())
            }
            _ => {}
        }
        if std::fs::hard_link(&built, &path).is_err() {
            std::fs::copy(&built, &path).unwrap_or_else(|e| {
                panic!("copying {} to {}: {e}", built.display(), path.display())
            });
        }
        path
    }

    /// Stops node `i`'s lbd with SIGTERM (as systemd does; the data path stays pinned and
    /// forwarding) and starts `binary` on the same config; returns when the new lbd
    /// serves, having swapped its program onto both pinned links. Returns the old
    /// handle.
    pub fn upgrade_lbd(&mut self, i: usize, binary: &Path) -> Daemon {
        let node = &mut self.nodes[i];
        node.lbd.signal(libc::SIGTERM);
        let status = node
            .lbd
            .wait_exit(Duration::from_secs(30))
            .unwrap_or_else(|| panic!("node {i}'s lbd did not exit on SIGTERM"));
        assert!(
            status.success(),
            "node {i}'s lbd exited {status} on SIGTERM:\n{}",
            node.lbd.log()
        );
        let mut lbd = spawn_lbd(&self.lab, i, &node.config_path, binary);
        lbd.wait_for_log("serving", LBD_START)
            .unwrap_or_else(|e| panic!("node {i}'s new lbd did not start: {e}"));
        let exe = std::fs::read_link(format!("/proc/{}/exe", lbd.pid()))
            .unwrap_or_else(|e| panic!("reading node {i}'s lbd's executable: {e}"));
        assert_eq!(exe, binary, "node {i} runs another binary");
        let log = lbd.log();
        for dev in ["up0", "dn0"] {
            assert!(
                log.contains(&format!("replaced the program on {dev}'s pinned XDP link")),
                "node {i}'s new lbd did not adopt {dev}'s pinned link:\n{log}"
            );
        }
        std::mem::replace(&mut node.lbd, lbd)
    }

    /// Node `i`'s new flows so far (`lb_service_new_flows_total` of the lab's service).
    pub fn new_flows(&self, i: usize) -> u64 {
        crate::lbd_metrics::sample(
            &self.metrics(i),
            "lb_service_new_flows_total{service=\"web\"}",
        )
        .unwrap_or(0.0) as u64
    }

    /// Polls node `i`'s new flows (every 20 ms, at most `limit`) until they exceed
    /// `above`; when that was seen, or `None`.
    pub fn wait_new_flows(&self, i: usize, above: u64, limit: Duration) -> Option<SystemTime> {
        let deadline = Instant::now() + limit;
        loop {
            let now = SystemTime::now();
            if self.new_flows(i) > above {
                return Some(now);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
