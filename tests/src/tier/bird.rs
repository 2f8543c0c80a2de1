//! BIRD in the tier lab: the shipped configs (`deploy/bird/`) with the lab's addresses
//! put in, and what the routers' kernels learned from them.
//!
//! - Node `i` runs `lb-node.conf` with its router id, local address and neighbour (R1)
//!   replaced, plus, appended, the one thing the shipped file does not do: a BGP session
//!   to R2 exporting the clients' prefix (a static route via R1), so that R2 routes
//!   replies back through the tier by ECMP too.
//! - R1 runs `upstream-router.conf` with a `protocol bgp` per node instead of the
//!   example's one.
//! - R2 runs the same router file with the clients' prefix as the range it imports.
//!
//! Each replacement must match the shipped text exactly once, so a change to the shipped
//! files that the lab would silently not test fails here.
use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use crate::{netns, process::Daemon, tier::topology::CLIENT_NET};

const BIRD: &str = "/usr/sbin/bird";

pub fn deploy_file(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/bird")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

#[track_caller]
fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "the shipped BIRD config no longer contains {from:?} exactly once"
    );
    text.replacen(from, to, 1)
}

/// BGP timers of the lab's own session (node -> R2), the shipped ones.
const SESSION_TIMERS: &str = "  bfd on;\n  hold time 3;\n  keepalive time 1;\n  connect delay time 1;\n  connect retry time 1;\n  error wait time 1, 5;\n";

/// `lb-node.conf` for node `k` (1-based), whose neighbour R2 is at `r2`.
pub fn node_conf(k: usize, r2: std::net::Ipv4Addr) -> String {
    let shipped = deploy_file("lb-node.conf");
    let up = format!("10.20.{k}.2");
    let mut c = replace_once(
        &shipped,
        "router id 10.10.0.1;",
        &format!("router id {up};"),
    );
    c = replace_once(
        &c,
        "local 10.10.0.1 as 65001;",
        &format!("local {up} as 65001;"),
    );
    c = replace_once(
        &c,
        "neighbor 10.10.0.2 as 65000;",
        &format!("neighbor 10.20.{k}.1 as 65000;"),
    );
    c.push_str(&format!(
        "\n# Lab: the clients' prefix to R2, so replies cross the tier by ECMP too.\nprotocol static clients {{\n  ipv4;\n  route {CLIENT_NET} via 10.20.{k}.1;\n}}\n\nprotocol bgp downstream {{\n  local 10.30.{k}.2 as 65001;\n  neighbor {r2} as 65002;\n{SESSION_TIMERS}  ipv4 {{\n    import none;\n    export where proto = \"clients\";\n  }};\n}}\n"
    ));
    c
}

/// The shipped router file with one `protocol bgp` per node (`10.{net}.K.2`), AS `asn`,
/// importing `range` (a BIRD prefix set).
fn router_conf(router_id: &str, net: u8, nodes: usize, asn: u32, range: &str) -> String {
    let shipped = deploy_file("upstream-router.conf");
    let example = "protocol bgp lb1 from lb_node {\n  neighbor 10.10.0.1 as 65001;\n}\n";
    let mut c = replace_once(&shipped, example, "");
    c = replace_once(
        &c,
        "router id 10.10.0.2;",
        &format!("router id {router_id};"),
    );
    c = replace_once(&c, "local as 65000;", &format!("local as {asn};"));
    c = replace_once(
        &c,
        "define VIP_RANGE = [ 10.0.0.0/24{32,32} ];",
        &format!("define VIP_RANGE = {range};"),
    );
    for k in 1..=nodes {
        c.push_str(&format!(
            "protocol bgp lb{k} from lb_node {{\n  neighbor 10.{net}.{k}.2 as 65001;\n}}\n"
        ));
    }
    c
}

/// R1: learns the VIPs from every node.
pub fn r1_conf(nodes: usize) -> String {
    router_conf("10.10.0.1", 20, nodes, 65000, "[ 10.0.0.0/24{32,32} ]")
}

/// R2: learns the route back to the clients from every node.
pub fn r2_conf(nodes: usize) -> String {
    router_conf("10.30.1.1", 30, nodes, 65002, &format!("[ {CLIENT_NET} ]"))
}

/// A BIRD running in a namespace with its own config, control socket and pid file.
pub struct Bird {
    daemon: Daemon,
    ns: String,
    conf: PathBuf,
    socket: PathBuf,
    pid: PathBuf,
}

impl Bird {
    /// Writes `conf` (logging to stderr, which the [`Daemon`] keeps) to `dir/name.conf`
    /// and starts BIRD on it in `ns`.
    pub fn start(ns: &str, dir: &Path, name: &str, conf: &str) -> Bird {
        assert!(
            Path::new(BIRD).exists(),
            "bird is not installed (Debian bird2): run `cargo xtask setup`"
        );
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let path = dir.join(format!("{name}.conf"));
        std::fs::write(&path, format!("log stderr all;\n{conf}"))
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        let socket = dir.join(format!("{name}.ctl"));
        let pid = dir.join(format!("{name}.pid"));
        let daemon = spawn(ns, &path, &socket, &pid);
        Bird {
            daemon,
            ns: ns.to_string(),
            conf: path,
            socket,
            pid,
        }
    }

    /// Stops BIRD (SIGTERM: it closes its sessions) and starts it again on the same
    /// config; returns when the stop began.
    pub fn restart(&mut self) -> SystemTime {
        let stopping = SystemTime::now();
        self.daemon.stop();
        self.daemon = spawn(&self.ns, &self.conf, &self.socket, &self.pid);
        stopping
    }

    /// `birdc -s SOCKET ARGS...` in BIRD's namespace.
    pub fn birdc(&self, args: &[&str]) -> Result<String, String> {
        let mut a = vec!["-s", self.socket.to_str().expect("UTF-8")];
        a.extend_from_slice(args);
        netns::try_ns_exec(&self.ns, "birdc", &a)
    }

    pub fn log(&self) -> String {
        self.daemon.log()
    }
}

fn spawn(ns: &str, conf: &Path, socket: &Path, pid: &Path) -> Daemon {
    Daemon::spawn_in_ns(
        ns,
        Path::new(BIRD),
        &[
            "-f",
            "-c",
            conf.to_str().expect("UTF-8"),
            "-s",
            socket.to_str().expect("UTF-8"),
            "-P",
            pid.to_str().expect("UTF-8"),
        ],
    )
}

/// The usable next hops (gateway addresses) of `ns`'s route to `prefix` (a multipath
/// route, or one next hop), skipping dead and link-down ones.
pub fn next_hops(ns: &str, prefix: &str) -> Vec<String> {
    let Ok(out) = netns::try_ns_ip(ns, &["-j", "route", "show", prefix]) else {
        return Vec::new();
    };
    let routes: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    let Some(route) = routes.as_array().and_then(|r| r.first()) else {
        return Vec::new();
    };
    let usable = |h: &serde_json::Value| {
        !h["flags"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f == "dead" || f == "linkdown"))
    };
    let mut hops: Vec<String> = match route["nexthops"].as_array() {
        Some(hops) => hops
            .iter()
            .filter(|h| usable(h))
            .filter_map(|h| h["gateway"].as_str().map(str::to_string))
            .collect(),
        None if usable(route) => route["gateway"]
            .as_str()
            .map(str::to_string)
            .into_iter()
            .collect(),
        None => Vec::new(),
    };
    hops.sort();
    hops
}

/// Polls (every 2 ms, at most `limit`) until `ns`'s next hops to `prefix` satisfy
/// `want`; returns when that was first seen, or `None` on timeout.
pub fn wait_next_hops(
    ns: &str,
    prefix: &str,
    limit: Duration,
    want: impl Fn(&[String]) -> bool,
) -> Option<SystemTime> {
    let deadline = Instant::now() + limit;
    loop {
        let now = SystemTime::now();
        if want(&next_hops(ns, prefix)) {
            return Some(now);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}
