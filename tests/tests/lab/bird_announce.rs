//! The shipped BIRD configs (`deploy/bird/`) with lbd, in namespaces: BIRD in the LB
//! namespace exports the VIP /32 lbd holds on `lo` over BGP with BFD to BIRD in the
//! client namespace (the upstream router), which installs it with the LB as next hop;
//! when lbd withdraws the VIP the router loses the route, and learns it again when lbd
//! announces it; the same for an IPv6 VIP's /128, over the same session. Times are
//! printed from the router's view, measured from lbd's log stamps of its changes. Needs `bird` (Debian `bird2`, installed by `cargo xtask setup`).
use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use lb_tests::{
    lbd_log::{first_time, millis_between},
    netns,
    running_lb::{lab_run_dir, vip},
    scenario::*,
    topology::{Family, LabSpec},
    Daemon, Lab, LabConfig, RunningLb,
};

/// Bounds every wait (each ends as soon as what it waits for happens).
pub(crate) const WAIT: Duration = Duration::from_secs(30);

fn deploy(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/bird")
        .join(name)
}

/// Starts BIRD in `ns` on the shipped config `name`, logging to stderr (lbd's Daemon
/// keeps it), its control socket in the lab's run directory.
pub(crate) fn start_bird(lab: &Lab, ns: &str, name: &str) -> Daemon {
    let bird = Path::new("/usr/sbin/bird");
    assert!(
        bird.exists(),
        "bird is not installed (Debian bird2): run `cargo xtask setup`"
    );
    let shipped = std::fs::read_to_string(deploy(name)).expect("the shipped config reads");
    let dir = lab_run_dir(lab);
    let conf = dir.join(name);
    std::fs::write(&conf, format!("log stderr all;\n{shipped}")).expect("config written");
    let socket = bird_socket(lab, name);
    let pid = dir.join(format!("{name}.pid"));
    Daemon::spawn_in_ns(
        ns,
        bird,
        &[
            "-f",
            "-c",
            conf.to_str().unwrap(),
            "-s",
            socket.to_str().unwrap(),
            "-P",
            pid.to_str().unwrap(),
        ],
    )
}

/// The control socket of the BIRD that [`start_bird`] started on config `name`.
pub(crate) fn bird_socket(lab: &Lab, name: &str) -> PathBuf {
    lab_run_dir(lab).join(format!("{name}.ctl"))
}

/// The router's route to the VIP of `family` learned from BIRD, as its next hop.
pub(crate) fn router_route(lab: &Lab, family: Family) -> Option<String> {
    let vip = vip(family);
    let (flag, host) = match family {
        Family::V4 => ("-4", 32),
        Family::V6 => ("-6", 128),
    };
    let out = netns::ns_ip(
        lab.client_ns(),
        &[
            flag,
            "-j",
            "route",
            "show",
            &format!("{vip}/{host}"),
            "proto",
            "bird",
        ],
    );
    let routes: serde_json::Value = serde_json::from_str(&out).expect("ip -j prints JSON");
    routes
        .as_array()?
        .first()
        .and_then(|r| r["gateway"].as_str())
        .map(str::to_string)
}

/// Polls the router until its route to the VIP of `family` is `want`; when it was first
/// seen so.
pub(crate) fn wait_route(lab: &Lab, family: Family, want: Option<&str>) -> SystemTime {
    let deadline = Instant::now() + WAIT;
    loop {
        let now = SystemTime::now();
        let got = router_route(lab, family);
        if got.as_deref() == want {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "the router's route to {} is {got:?}, not {want:?}, after {WAIT:?}",
            vip(family)
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Waits until the router's BFD session with `peer` is up; panics after [`WAIT`].
pub(crate) fn wait_router_bfd_up(lab: &Lab, peer: &str) {
    let socket = bird_socket(lab, "upstream-router.conf");
    let deadline = Instant::now() + WAIT;
    loop {
        let bfd = netns::ns_exec(
            lab.client_ns(),
            "birdc",
            &["-s", socket.to_str().unwrap(), "show", "bfd", "sessions"],
        );
        if bfd.lines().any(|l| l.contains(peer) && l.contains("Up")) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the router's BFD session with {peer} is not up after {WAIT:?}:\n{bfd}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The three-zone lab's lbd announcing the VIP of `family` on `lo` (no hold-up), once
/// it has; the lab is dual stack for IPv6.
pub(crate) fn announcing_lb(family: Family) -> RunningLb {
    let lab = Lab::build(&LabSpec::three_zones().family(family));
    let range = match family {
        Family::V4 => "10.0.0.0/24",
        Family::V6 => "2001:db8::/64",
    };
    let config = format!(
        "{}announce:\n  vip_ranges: [{range}]\n  hold_up: 0s\n",
        LabConfig::new(&lab)
            .family(family)
            .policy(&[&fast_health()])
            .yaml()
    );
    let mut lb = RunningLb::start(lab, &config);
    lb.lbd
        .wait_for_log_after(0, &format!("announced VIP {}", vip(family)), WAIT)
        .expect("lbd announces the VIP");
    lb
}

#[test]
fn the_router_learns_the_vip_from_bird_and_loses_it_when_lbd_withdraws() {
    learns_and_loses(Family::V4);
}

/// The same over IPv6: the /128 crosses the IPv4 session (multiprotocol BGP) with the
/// node's global IPv6 address on the link as next hop.
#[test]
fn the_router_learns_the_ipv6_vip_from_bird_and_loses_it_when_lbd_withdraws() {
    learns_and_loses(Family::V6);
}

fn learns_and_loses(family: Family) {
    let mut lb = announcing_lb(family);
    let started = SystemTime::now();
    let _node = start_bird(&lb.lab, lb.lab.lb_ns(), "lb-node.conf");
    let _router = start_bird(&lb.lab, lb.lab.client_ns(), "upstream-router.conf");
    let session_peer = lb.lab.client_gateway().to_string();
    let gateway = match family {
        Family::V4 => session_peer.clone(),
        Family::V6 => lb.lab.client_gateway6().to_string(),
    };
    let learned = wait_route(&lb.lab, family, Some(&gateway));
    println!(
        "router learned {} via {gateway} {} ms after BIRD started (session setup)",
        vip(family),
        millis_between(started, learned)
    );
    // BFD comes up beside the session (the router's view).
    wait_router_bfd_up(&lb.lab, &session_peer);

    withdraw_and_announce_again(&mut lb, family, &gateway);
}

/// Every backend gone: lbd withdraws, the routing daemon withdraws, the router's route
/// goes; a backend back: announced and learned again. Prints both delays from lbd's log
/// stamps to the router's FIB.
pub(crate) fn withdraw_and_announce_again(lb: &mut RunningLb, family: Family, gateway: &str) {
    let withdrew = format!("withdrew VIP {}", vip(family));
    let announced = format!("announced VIP {}", vip(family));
    // Every backend gone: lbd withdraws, BIRD withdraws, the router's route goes.
    let mark = lb.lbd.log_len();
    for i in 0..3 {
        lb.kill_server(i);
    }
    lb.lbd
        .wait_for_log_after(mark, &withdrew, WAIT)
        .expect("lbd withdraws the VIP");
    let withdrawn = first_time(&lb.lbd.log()[mark..], &withdrew).expect("stamped");
    let gone = wait_route(&lb.lab, family, None);
    println!(
        "router lost the route {} ms after lbd's withdraw (poll every 2 ms)",
        millis_between(withdrawn, gone)
    );

    // A backend back: announced again, learned again.
    let mark = lb.lbd.log_len();
    lb.restart_server(0);
    lb.lbd
        .wait_for_log_after(mark, &announced, WAIT)
        .expect("lbd announces the VIP again");
    let announced = first_time(&lb.lbd.log()[mark..], &announced).expect("stamped");
    let back = wait_route(&lb.lab, family, Some(gateway));
    println!(
        "router learned the route again {} ms after lbd's announce",
        millis_between(announced, back)
    );
}
