//! The shipped FRR config (`deploy/frr/lb-node.conf`) on the same contract as BIRD's:
//! FRR (zebra, bfdd, bgpd) in the LB namespace exports the VIP /32 lbd holds on `lo` by
//! `redistribute connected` over BGP with BFD to BIRD in the client namespace (the
//! upstream router, `deploy/bird/upstream-router.conf`); the router loses the route when
//! lbd withdraws the VIP and learns it again when lbd announces it. Needs FRR (Debian
//! `frr`, installed by `cargo xtask setup`).
use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use lb_tests::{lbd_log::millis_between, netns, running_lb::vip, topology::Family, Daemon, Lab};

use crate::bird_announce::{
    announcing_lb, start_bird, wait_route, wait_router_bfd_up, withdraw_and_announce_again, WAIT,
};

const FRR: &str = "/usr/lib/frr";

/// FRR's run directory: FRR drops to its own user, so it cannot use the lab's root-only
/// one. Removed on drop.
struct FrrDir(PathBuf);

impl FrrDir {
    fn new(lab: &Lab) -> Self {
        let dir = std::env::temp_dir().join(format!("lb-tests-{}-frr", lab.prefix()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("FRR's directory");
        netns::run("chown", &["frr:frr", dir.to_str().unwrap()]);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        Self(dir)
    }
}

impl Drop for FrrDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts zebra, bfdd and bgpd in `ns` with empty configs, then loads the shipped
/// config into them with vtysh, as `vtysh -b` does at boot.
fn start_frr(ns: &str, dir: &Path) -> Vec<Daemon> {
    assert!(
        Path::new(FRR).join("bgpd").exists(),
        "FRR is not installed (Debian frr): run `cargo xtask setup`"
    );
    let empty = dir.join("empty.conf");
    std::fs::write(&empty, "").unwrap();
    let d = dir.to_str().unwrap();
    // zebra first, and its API socket up before the others start: a daemon that finds
    // no zebra retries only seconds later, and bgpd's BFD registrations go through it.
    let zserv = dir.join("zserv.api");
    let daemons: Vec<Daemon> = ["zebra", "bfdd", "bgpd"]
        .iter()
        .map(|name| {
            let pid = dir.join(format!("{name}.pid"));
            let daemon = Daemon::spawn_in_ns(
                ns,
                &Path::new(FRR).join(name),
                &[
                    "-f",
                    empty.to_str().unwrap(),
                    "-i",
                    pid.to_str().unwrap(),
                    "-z",
                    zserv.to_str().unwrap(),
                    "--vty_socket",
                    d,
                    "-P",
                    "0",
                    "--log",
                    "stdout",
                ],
            );
            let ready = [zserv.clone(), dir.join(format!("{name}.vty"))];
            let deadline = std::time::Instant::now() + WAIT;
            while !ready.iter().all(|p| p.exists()) {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{name} did not open {ready:?} within {WAIT:?}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            daemon
        })
        .collect();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/frr/lb-node.conf");
    // The daemons open their vty sockets a moment after they start.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let load = netns::try_run_timeout(
            "vtysh",
            &["--vty_socket", d, "-f", shipped.to_str().unwrap()],
            Duration::from_secs(10),
        );
        match load {
            Ok(out) if !out.contains('%') => break,
            other => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "vtysh did not load {} into FRR within {WAIT:?}: {other:?}",
                    shipped.display()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    daemons
}

/// How long FRR's session must have been up before the test moves on: on a loaded
/// machine BFD (100 ms x 3) may take it down once right after it first comes up, and a
/// withdraw sent across that flap is what the test would then measure.
const SETTLED: Duration = Duration::from_secs(3);

/// Waits until bgpd's session with the router has been established for [`SETTLED`].
fn wait_session_settled(dir: &Path) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let out = netns::try_run_timeout(
            "vtysh",
            &[
                "--vty_socket",
                dir.to_str().unwrap(),
                "-c",
                "show bgp neighbors 10.10.0.2 json",
            ],
            Duration::from_secs(10),
        );
        let up_ms = out
            .ok()
            .and_then(|o| serde_json::from_str::<serde_json::Value>(&o).ok())
            .and_then(|v| {
                let n = &v["10.10.0.2"];
                (n["bgpState"] == "Established").then(|| n["bgpTimerUpMsec"].as_u64())?
            });
        if up_ms.is_some_and(|ms| ms >= SETTLED.as_millis() as u64) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "FRR's session with the router was not up for {SETTLED:?} within {WAIT:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_router_learns_the_vip_from_frr_and_loses_it_when_lbd_withdraws() {
    learns_and_loses(Family::V4);
}

/// The same over IPv6: the /128 crosses the IPv4 session (multiprotocol BGP) with the
/// node's global IPv6 address on the link as next hop.
#[test]
fn the_router_learns_the_ipv6_vip_from_frr_and_loses_it_when_lbd_withdraws() {
    learns_and_loses(Family::V6);
}

fn learns_and_loses(family: Family) {
    let mut lb = announcing_lb(family);
    let dir = FrrDir::new(&lb.lab);
    let started = SystemTime::now();
    let _router = start_bird(&lb.lab, lb.lab.client_ns(), "upstream-router.conf");
    let _frr = start_frr(lb.lab.lb_ns(), &dir.0);
    let session_peer = lb.lab.client_gateway().to_string();
    let (gateway, flag) = match family {
        Family::V4 => (session_peer.clone(), "-4"),
        Family::V6 => (lb.lab.client_gateway6().to_string(), "-6"),
    };
    let vip = vip(family);
    let learned = wait_route(&lb.lab, family, Some(&gateway));
    println!(
        "router learned {vip} via {gateway} from FRR {} ms after the daemons started",
        millis_between(started, learned)
    );
    wait_router_bfd_up(&lb.lab, &session_peer);
    wait_session_settled(&dir.0);
    // Nothing but the VIP: the node's own subnets and lo's 127.0.0.1 (::1) stay
    // unexported. Polled: on a loaded machine BFD (100 ms x 3) can still take the session
    // down for a moment after it settled, and the routes are gone until it is back.
    let iface = lb.lab.client_iface();
    let want = [match family {
        Family::V4 => format!("{vip} via {gateway} dev {iface} metric 32"),
        Family::V6 => format!("{vip} via {gateway} dev {iface} metric 32 pref medium"),
    }];
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let learned_all = netns::ns_ip(
            lb.lab.client_ns(),
            &[flag, "route", "show", "proto", "bird"],
        );
        let learned: Vec<&str> = learned_all.lines().map(str::trim).collect();
        if learned == want || std::time::Instant::now() >= deadline {
            assert_eq!(learned, want, "{learned_all}");
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    withdraw_and_announce_again(&mut lb, family, &gateway);
}
