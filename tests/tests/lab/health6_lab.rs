//! IPv6 services on a namespace lab: `lbd` with an IPv6 service whose two IPv6 backends
//! share the LB's segment. Health: the one listening turns healthy, the other unhealthy,
//! and the second turns healthy once something listens on it, within the documented
//! bound measured from `lbd`'s own log. Announcement: the VIP's /128 is on `lo` (no DAD)
//! while a backend serves and gone when none does, and an operator's own address in the
//! range stays.
use std::{
    net::{SocketAddr, TcpListener},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant, SystemTime},
};

use lb_tests::{
    lbd_log::{first_time, millis_between},
    netns,
    running_lb::{lab_run_dir, pin_dir},
    topology::{Lab, LabSpec},
    RunningLb,
};
use serde_json::{json, Value};

const LB6: &str = "2001:db8:1::1";
const B1: &str = "2001:db8:1::11";
const B2: &str = "2001:db8:1::12";
const PORT: u16 = 8443;
/// `interval` and `healthy_threshold` of the service's probes (see `config`).
const INTERVAL: Duration = Duration::from_millis(200);
const HEALTHY_THRESHOLD: u32 = 2;
/// Added to every bound: a debug `lbd` on a machine busy with other tests.
const SLACK: Duration = Duration::from_secs(3);
const WAIT: Duration = Duration::from_secs(60);

/// Turns IPv6 on for `dev` in `ns` (a lab turns it off everywhere) without duplicate
/// address detection, and gives it `address`/64 at once usable (`nodad`).
fn add_ipv6(ns: &str, dev: &str, address: &str) {
    for conf in ["all", "default", dev] {
        netns::ns_sysctl(ns, &format!("net.ipv6.conf.{conf}.disable_ipv6"), "0");
        netns::ns_sysctl(ns, &format!("net.ipv6.conf.{conf}.accept_dad"), "0");
    }
    netns::ns_ip(
        ns,
        &[
            "-6",
            "addr",
            "add",
            &format!("{address}/64"),
            "dev",
            dev,
            "nodad",
        ],
    );
}

/// A TCP listener inside a namespace that accepts and closes every connection (a probe
/// only connects), until dropped.
struct Listener {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Listener {
    fn start(lab: &Lab, ns: &str, at: SocketAddr) -> Listener {
        let listener = lab.run_in(ns, move || TcpListener::bind(at));
        let listener = listener.unwrap_or_else(|e| panic!("listening on {at} in {ns}: {e}"));
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(600);
            while !stopping.load(Ordering::Relaxed) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((stream, _)) => drop(stream),
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Listener {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn config(lab: &Lab) -> String {
    config_with(lab, "")
}

/// [`config`] followed by `more` top-level YAML.
fn config_with(lab: &Lab, more: &str) -> String {
    format!(
        "node:\n  zone: z1\ninterfaces: [{}]\npin_dir: {}\napi:\n  socket: {}\n\
         state_file: {}\nservices:\n  - name: web6\n    vip: 2001:db8::100\n    port: 80\n    \
         health: {{ interval: {}ms, timeout: 100ms, healthy_threshold: {HEALTHY_THRESHOLD} }}\n    \
         backends:\n      - {{ address: {B1}, port: {PORT}, zone: z1 }}\n      \
         - {{ address: {B2}, port: {PORT}, zone: z1 }}\n{more}",
        lab.lb_interfaces().join(", "),
        pin_dir(lab).display(),
        lab_run_dir(lab).join("lbd.sock").display(),
        lab_run_dir(lab).join("state.yaml").display(),
        INTERVAL.as_millis(),
    )
}

/// (address, port, state) of each backend as `lbctl -o json health` lists them.
fn health(lb: &RunningLb) -> Vec<(String, u64, String)> {
    let list = lb.lbctl().json(&["health"]);
    let rows = list.as_array().expect("a list").iter();
    rows.map(|h| {
        (
            h["address"].as_str().unwrap().to_string(),
            h["port"].as_u64().unwrap(),
            h["state"].as_str().unwrap().to_string(),
        )
    })
    .collect()
}

/// Waits until `lbctl health` shows `want`.
fn wait_health(lb: &RunningLb, want: &[(&str, &str)]) {
    let want: Vec<(String, u64, String)> = want
        .iter()
        .map(|(a, s)| (a.to_string(), u64::from(PORT), s.to_string()))
        .collect();
    let deadline = Instant::now() + WAIT;
    loop {
        let seen = health(lb);
        if seen == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "health is {seen:?}, not {want:?}, after {WAIT:?}; log:\n{}",
            lb.lbd.log()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn ipv6_backends_are_probed_and_a_new_listener_turns_healthy_within_the_bound() {
    let lab = Lab::build(&LabSpec::with_backends(2));
    add_ipv6(lab.lb_ns(), lab.lb_backend_iface(), LB6);
    for (i, address) in [B1, B2].into_iter().enumerate() {
        add_ipv6(lab.backend_ns(i), lab.backend_iface(i), address);
    }
    let at = |address: &str| SocketAddr::new(address.parse().unwrap(), PORT);
    let _first = Listener::start(&lab, lab.backend_ns(0), at(B1));
    let config = config(&lab);
    let mut lb = RunningLb::start(lab, &config);

    wait_health(&lb, &[(B1, "healthy"), (B2, "unhealthy")]);
    let backends = lb.lbctl().json(&["backend", "list"]);
    let weights: Vec<(&Value, &Value)> = backends
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (&b["address"], &b["effective_weight"]))
        .collect();
    assert_eq!(
        weights,
        [(&json!(B1), &json!(1.0)), (&json!(B2), &json!(0.0))],
        "{backends}"
    );

    let mark = lb.lbd.log_len();
    let listening = SystemTime::now();
    let _second = Listener::start(&lb.lab, lb.lab.backend_ns(1), at(B2));
    let needle = format!("backend web6/[{B2}]:{PORT}: unhealthy -> healthy");
    let log = lb
        .lbd
        .wait_for_log_after(mark, &needle, WAIT)
        .unwrap_or_else(|e| panic!("{e}"));
    let healthy = first_time(&log, &needle).expect("the line is stamped");
    // healthy_threshold consecutive successes, the first at most one interval after the
    // listener opened (docs/health-and-zones.md).
    let bound = INTERVAL * (HEALTHY_THRESHOLD + 1) + SLACK;
    let took = millis_between(listening, healthy);
    eprintln!("{B2} healthy {took} ms after its listener opened (bound {bound:?})");
    assert!(
        took <= bound.as_millis() as i64,
        "healthy {took} ms after the listener opened, more than {bound:?}"
    );
    wait_health(&lb, &[(B1, "healthy"), (B2, "healthy")]);
}

const VIP6: &str = "2001:db8::100";
/// The operator's own address on `lo`, inside the VIP range.
const OPERATOR6: &str = "2001:db8::200";

/// The IPv6 host addresses on `lo` in the LB namespace, as (address, scope, nodad).
fn lo_addresses6(lab: &Lab) -> Vec<(String, String, bool)> {
    let out = netns::ns_ip(lab.lb_ns(), &["-j", "-6", "addr", "show", "dev", "lo"]);
    let links: Value = serde_json::from_str(&out).expect("ip -j prints JSON");
    let mut found = Vec::new();
    for link in links.as_array().expect("a list of links") {
        for a in link["addr_info"].as_array().into_iter().flatten() {
            if a["prefixlen"] == json!(128) {
                found.push((
                    a["local"].as_str().unwrap_or_default().to_string(),
                    a["scope"].as_str().unwrap_or_default().to_string(),
                    a["nodad"] == json!(true),
                ));
            }
        }
    }
    found.sort();
    found
}

/// Waits until `lo` holds exactly `want` (besides ::1).
fn wait_lo(lab: &Lab, want: &[(&str, bool)]) {
    let want: Vec<(String, String, bool)> = want
        .iter()
        .map(|(a, nodad)| (a.to_string(), "global".to_string(), *nodad))
        .collect();
    let deadline = Instant::now() + WAIT;
    loop {
        let mut seen = lo_addresses6(lab);
        seen.retain(|(a, _, _)| a != "::1");
        if seen == want {
            return;
        }
        assert!(Instant::now() < deadline, "lo holds {seen:?}, not {want:?}");
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_ipv6_vip_is_held_on_lo_while_a_backend_serves_and_the_operators_address_stays() {
    let lab = Lab::build(&LabSpec::with_backends(2));
    add_ipv6(lab.lb_ns(), lab.lb_backend_iface(), LB6);
    netns::ns_sysctl(lab.lb_ns(), "net.ipv6.conf.lo.disable_ipv6", "0");
    netns::ns_ip(
        lab.lb_ns(),
        &[
            "-6",
            "addr",
            "add",
            &format!("{OPERATOR6}/128"),
            "dev",
            "lo",
            "nodad",
        ],
    );
    for (i, address) in [B1, B2].into_iter().enumerate() {
        add_ipv6(lab.backend_ns(i), lab.backend_iface(i), address);
    }
    let at = |address: &str| SocketAddr::new(address.parse().unwrap(), PORT);
    let first = Listener::start(&lab, lab.backend_ns(0), at(B1));
    let config = config_with(
        &lab,
        "announce:\n  vip_ranges: [2001:db8::/64]\n  hold_up: 0s\n",
    );
    let mut lb = RunningLb::start(lab, &config);

    let mark = lb.lbd.log_len();
    lb.lbd
        .wait_for_log_after(mark, &format!("announced VIP {VIP6} on lo"), WAIT)
        .unwrap_or_else(|e| panic!("{e}"));
    wait_lo(&lb.lab, &[(VIP6, true), (OPERATOR6, true)]);
    let node = lb.lbctl().json(&["node", "status"]);
    assert!(node.to_string().contains(VIP6), "{node}");
    // Its lifetime is renewed every second (the default 30 s lifetime): two renewals.
    thread::sleep(Duration::from_millis(2500));
    let log = lb.lbd.log();
    assert!(!log.contains("renewing the lifetime"), "{log}");
    assert!(!log.contains("without lbd's mark"), "{log}");

    // No backend serves: the VIP goes, the operator's address stays.
    let mark = lb.lbd.log_len();
    drop(first);
    lb.lbd
        .wait_for_log_after(mark, &format!("withdrew VIP {VIP6} from lo"), WAIT)
        .unwrap_or_else(|e| panic!("{e}"));
    wait_lo(&lb.lab, &[(OPERATOR6, true)]);
}
