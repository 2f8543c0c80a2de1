//! A tier lab with everything running: a backend server per zone, on every node an
//! `lbd` (its own pin directory, state file and API socket) and a BIRD, and BIRD on both
//! routers. In a DSR mode (see `mode`) each backend also holds the VIP on `lo` (through
//! `lb-decap` for `ipip` and `gue`) and serves on the VIP; a server on its own address
//! (named `own-address`) answers what should never come (lbd probes the VIP through the
//! tunnel too). Stops everything on drop, lbd
//! first (so it detaches while its namespace exists), then removes the pinned data
//! paths and the run directory.
use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

use lb_userspace::kernel::pins::PinDir;

use crate::{
    backend_server::BackendServer,
    dsr_lab::{hold_vip_on_lo, Decap},
    http, lbd_log,
    process::{lbd_path, Daemon},
    running_lb::{sweep_stale_pins, PIN_ROOT, VIP, VIP_PORT},
    scenario::fast_health,
    tier::{
        bird::{self, Bird},
        load::TierLoad,
        mode::TierMode,
        topology::{TierLab, CLIENT_NET, ZONES},
    },
};

/// How long lbd may take to serve (a debug build loading and verifying its program on a
/// loaded 2-core machine; see `running_lb`).
const LBD_START: Duration = Duration::from_secs(90);
/// How long the tier may take to converge: sessions up, every node announcing.
const CONVERGE: Duration = Duration::from_secs(60);

pub const VIP_PREFIX: &str = "10.0.0.100/32";
/// The name the DSR backends' servers on their own address answer with: a client
/// answered by one was not served through the VIP.
pub const OWN_ADDRESS_SERVER: &str = "own-address";
/// The LB nodes' addresses toward R2, the source of their encapsulated packets.
const NODES_DOWN_PREFIX: &str = "10.30.0.0/16";

/// One LB node's processes.
pub struct TierNode {
    pub lbd: Daemon,
    pub bird: Bird,
    pub(super) config_path: PathBuf,
    /// Drained through `lbctl node drain` (the routers should not use it).
    pub(super) drained: bool,
}

/// See the module docs.
pub struct RunningTier {
    pub nodes: Vec<TierNode>,
    pub r1: Bird,
    pub r2: Bird,
    pub servers: Vec<BackendServer>,
    /// `lb-decap` on each backend (`ipip`, `gue`); detached before the lab goes.
    _decaps: Vec<Decap>,
    pub lab: TierLab,
    /// Held until everything above is gone: see [`ONE_TIER_AT_A_TIME`].
    _turn: MutexGuard<'static, ()>,
}

/// Tier labs run one at a time in a test process. With two at once (ten BIRDs, six lbds,
/// two loads) on a 2-core CI machine, BFD (300 ms) took two nodes' sessions down within
/// 3 s of one test: R1 re-spread the flows over the nodes, and a test of "no connection
/// breaks" failed for a reason it does not test. Other labs still run beside a tier.
static ONE_TIER_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Long-lived connections of the tier tests' load, echoing every 100 ms.
pub const LOAD_LONG_LIVED: usize = 30;
/// New connections a second of the tier tests' load.
pub const LOAD_NEW_PER_SEC: u32 = 20;

impl RunningTier {
    /// The tier tests' load on the VIP ([`LOAD_LONG_LIVED`], [`LOAD_NEW_PER_SEC`]) for at
    /// most `lasts`, returned once it has attempted 20 new connections.
    pub fn start_load(&self, lasts: Duration) -> TierLoad {
        let load = TierLoad::start(
            &self.lab.client(),
            VIP,
            VIP_PORT,
            LOAD_LONG_LIVED,
            LOAD_NEW_PER_SEC,
            lasts,
        );
        load.wait_attempts(20, Duration::from_secs(30));
        load
    }

    /// Builds a tier lab of `nodes` nodes, starts everything and waits until R1 routes
    /// the VIP and R2 the clients through every node.
    pub fn start(nodes: usize) -> RunningTier {
        RunningTier::start_with(nodes, "")
    }

    /// [`RunningTier::start`] with `extra` (top-level YAML, e.g. `limits: ...`) appended
    /// to every node's config.
    pub fn start_with(nodes: usize, extra: &str) -> RunningTier {
        RunningTier::start_in(nodes, TierMode::Nat, extra)
    }

    /// [`RunningTier::start`] with the service in `mode`, on the lab shaped for it.
    pub fn start_mode(nodes: usize, mode: TierMode) -> RunningTier {
        RunningTier::start_in(nodes, mode, "")
    }

    fn start_in(nodes: usize, mode: TierMode, extra: &str) -> RunningTier {
        // A test that panicked while holding it poisoned it; its lab is gone all the same.
        let turn = ONE_TIER_AT_A_TIME
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        sweep_stale_pins();
        let lab = TierLab::build_for(nodes, mode);
        let decaps = dsr_backends(&lab);
        let port = mode.backend_port();
        let mut servers: Vec<BackendServer> = Vec::new();
        for z in 0..ZONES.len() {
            let (ns, name) = (lab.backend_ns(z), lab.backend_name(z));
            if mode.is_dsr() {
                servers.push(BackendServer::start(&ns, VIP, VIP_PORT, &name));
                let own = lab.backend_addr(z);
                servers.push(BackendServer::start(&ns, own, port, OWN_ADDRESS_SERVER));
            } else {
                servers.push(BackendServer::start(&ns, lab.backend_addr(z), port, &name));
            }
        }
        let dir = run_dir(&lab);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        // Every lbd loads its program at once; then BIRD.
        let mut started: Vec<(Daemon, PathBuf)> = (0..nodes)
            .map(|i| {
                let path = dir.join(format!("n{}-lbd.yaml", i + 1));
                std::fs::write(&path, lbd_config(&lab, i) + extra)
                    .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
                (spawn_lbd(&lab, i, &path, &lbd_path()), path)
            })
            .collect();
        for (lbd, _) in &mut started {
            lbd.wait_for_log("serving", LBD_START)
                .unwrap_or_else(|e| panic!("lbd did not start: {e}"));
        }
        let r1 = Bird::start(&lab.r1(), &dir, "r1", &bird::r1_conf(nodes));
        let r2 = Bird::start(&lab.r2(), &dir, "r2", &bird::r2_conf(nodes));
        let nodes_running = started
            .into_iter()
            .enumerate()
            .map(|(i, (lbd, config_path))| TierNode {
                bird: Bird::start(
                    &lab.node_ns(i),
                    &dir,
                    &format!("n{}", i + 1),
                    &bird::node_conf(i + 1, lab.r2_addr_for_node(i)),
                ),
                lbd,
                config_path,
                drained: false,
            })
            .collect();
        let tier = RunningTier {
            nodes: nodes_running,
            r1,
            r2,
            servers,
            _decaps: decaps,
            lab,
            _turn: turn,
        };
        tier.wait_converged(CONVERGE);
        tier
    }

    /// R1's next hops to the VIP and R2's to the clients, as node indices.
    pub fn vip_nodes(&self) -> Vec<usize> {
        hop_nodes(&bird::next_hops(&self.lab.r1(), VIP_PREFIX))
    }

    pub fn return_nodes(&self) -> Vec<usize> {
        hop_nodes(&bird::next_hops(&self.lab.r2(), CLIENT_NET))
    }

    /// R1's BGP sessions to the nodes as `birdc show protocols` lists them (name, state,
    /// since when): a session that went down and up again between two calls shows a later
    /// time, which a failure message can name as its cause.
    pub fn node_sessions(&self) -> Vec<String> {
        let shown = self
            .r1
            .birdc(&["show", "protocols"])
            .unwrap_or_else(|e| panic!("birdc show protocols on R1: {e}"));
        shown
            .lines()
            .filter(|l| l.starts_with("lb"))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect()
    }

    /// Waits until both routers use every node that is not drained; panics naming
    /// what they have after `limit`.
    pub fn wait_converged(&self, limit: Duration) {
        let all: Vec<usize> = (0..self.nodes.len()).collect();
        let serving: Vec<usize> = all
            .iter()
            .copied()
            .filter(|&i| !self.nodes[i].drained)
            .collect();
        let deadline = Instant::now() + limit;
        while self.vip_nodes() != serving || self.return_nodes() != all {
            assert!(
                Instant::now() < deadline,
                "the tier did not converge in {limit:?}: R1 routes the VIP via nodes {:?}, R2 the clients via {:?} (want {serving:?} and {all:?})\nR1's BIRD:\n{}",
                self.vip_nodes(),
                self.return_nodes(),
                self.r1.birdc(&["show", "protocols"]).unwrap_or_else(|e| e),
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILLs node `i`'s lbd (its data path stays pinned and forwarding) and starts
    /// a new one on the same config, which adopts it; returns the old handle.
    pub fn kill_and_restart_lbd(&mut self, i: usize) -> Daemon {
        let node = &mut self.nodes[i];
        node.lbd.signal(libc::SIGKILL);
        node.lbd
            .wait_exit(Duration::from_secs(10))
            .expect("lbd dies on SIGKILL");
        let mut lbd = spawn_lbd(&self.lab, i, &node.config_path, &lbd_path());
        lbd.wait_for_log("serving", LBD_START)
            .unwrap_or_else(|e| panic!("the new lbd did not start: {e}"));
        std::mem::replace(&mut node.lbd, lbd)
    }

    /// Node `i`'s `/metrics` text.
    pub fn metrics(&self, i: usize) -> String {
        let addr: SocketAddr = crate::lbd_metrics::METRICS_LISTEN
            .parse()
            .expect("an address");
        netns_get(&self.lab.node_ns(i), addr)
    }

    /// Node `i`'s `lb_service_table_digest` for the lab's service.
    pub fn table_digest(&self, i: usize) -> u64 {
        crate::lbd_metrics::sample(&self.metrics(i), "lb_service_table_digest{service=\"web\"}")
            .unwrap_or_else(|| panic!("node {i} exports no table digest for web")) as u64
    }

    /// Each node's value of the sample `series` (as exported, labels included; 0 when
    /// absent).
    pub fn per_node(&self, series: &str) -> Vec<u64> {
        (0..self.nodes.len())
            .map(|i| crate::lbd_metrics::sample(&self.metrics(i), series).unwrap_or(0.0) as u64)
            .collect()
    }

    /// One line: each node's new flows, handshakes' ACKs that recorded nothing (their
    /// SYN-ACK went through another node), packets forwarded without state, and replies
    /// translated by the reverse map.
    pub fn spread_line(&self) -> String {
        let per = |name: &str| self.per_node(&format!("{name}{{service=\"web\"}}"));
        format!(
            "per node: new flows {:?}, unproven ACKs {:?}, stateless forwards {:?}, replies translated by the reverse map {:?}",
            per("lb_service_new_flows_total"),
            per("lb_service_unproven_acks_total"),
            per("lb_service_stateless_forwards_total"),
            per("lb_service_replies_reverse_mapped_total"),
        )
    }

    /// `lbctl service compare` over every node's API socket (exits 3 when the nodes'
    /// tables for a service differ).
    pub fn compare(&self) -> crate::lbctl::LbctlOutput {
        let dir = run_dir(&self.lab);
        let sockets: Vec<String> = (1..=self.nodes.len())
            .map(|k| dir.join(format!("n{k}.sock")).display().to_string())
            .collect();
        let mut args = vec!["service", "compare"];
        args.extend(sockets.iter().map(String::as_str));
        crate::lbctl::Lbctl::new(&dir.join("n1.sock")).run(&args)
    }

    /// Each node's table digest.
    pub fn table_digests(&self) -> Vec<u64> {
        (0..self.nodes.len())
            .map(|i| self.table_digest(i))
            .collect()
    }

    /// Waits until node `i` logged backend zone `z`'s probes changing to `state`
    /// (`healthy`/`unhealthy`) after log byte `mark`; the stamp of that line.
    pub fn wait_backend_state(
        &self,
        i: usize,
        mark: usize,
        z: usize,
        state: &str,
        limit: Duration,
    ) -> std::time::SystemTime {
        let needle = format!(
            "{}:{}: ",
            self.lab.backend_addr(z),
            self.lab.mode().backend_port()
        );
        let arrow = format!("-> {state}");
        let deadline = Instant::now() + limit;
        loop {
            let log = self.nodes[i].lbd.log();
            let tail = log.get(mark..).unwrap_or("");
            if let Some(line) = tail
                .lines()
                .find(|l| l.contains(&needle) && l.contains(&arrow))
            {
                return lbd_log::line_time(line).expect("lbd stamps its lines");
            }
            assert!(
                Instant::now() < deadline,
                "node {i} did not see {needle} become {state} in {limit:?}; log:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for RunningTier {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.lbd.stop();
        }
        for i in 0..self.nodes.len() {
            if let Err(e) = PinDir::new(pin_dir(&self.lab, i)).remove_all() {
                eprintln!("removing node {i}'s pinned data path: {e}");
            }
        }
        let _ = std::fs::remove_dir_all(run_dir(&self.lab));
    }
}

/// Makes every backend of `lab` a DSR backend of the VIP for the lab's mode: `lb-decap`
/// accepting the nodes' addresses toward R2 (`ipip`, `gue`), or the VIP on `lo` with the
/// ARP sysctls (`dsr_l2`); nothing for NAT.
fn dsr_backends(lab: &TierLab) -> Vec<Decap> {
    let mode = lab.mode();
    let mut decaps = Vec::new();
    for z in 0..ZONES.len() {
        let ns = lab.backend_ns(z);
        if mode.decap() {
            let name = format!("{}-decap-b{}", lab.prefix(), z + 1);
            decaps.push(Decap::attach_in(&ns, &name, VIP, NODES_DOWN_PREFIX));
        } else if mode.is_dsr() {
            hold_vip_on_lo(&ns, VIP);
        }
    }
    decaps
}

fn netns_get(ns: &str, addr: SocketAddr) -> String {
    crate::netns::run_in(ns, move || http::tcp(addr, "GET", "/metrics", &[], None))
        .unwrap_or_else(|e| panic!("GET /metrics in {ns}: {e}"))
        .body
}

/// Node indices of next hops `10.X.K.2`.
fn hop_nodes(hops: &[String]) -> Vec<usize> {
    let mut v: Vec<usize> = hops
        .iter()
        .filter_map(|h| h.split('.').nth(2)?.parse::<usize>().ok())
        .map(|k| k - 1)
        .collect();
    v.sort();
    v
}

/// The lab's sockets, state files, configs and BIRD files.
pub fn run_dir(lab: &TierLab) -> PathBuf {
    std::env::temp_dir().join(format!("lb-tests-{}", lab.prefix()))
}

/// Node `i`'s pin directory: `/sys/fs/bpf/lb-tests/{node namespace}` (a stale one is
/// swept once its namespace is gone, see `sweep_stale_pins`).
pub fn pin_dir(lab: &TierLab, i: usize) -> PathBuf {
    PathBuf::from(PIN_ROOT).join(lab.node_ns(i))
}

/// Starts `binary` as node `i`'s lbd on `config`.
pub(super) fn spawn_lbd(
    lab: &TierLab,
    i: usize,
    config: &std::path::Path,
    binary: &std::path::Path,
) -> Daemon {
    let config = config.to_str().expect("UTF-8");
    Daemon::spawn_in_ns(&lab.node_ns(i), binary, &["--config", config])
}

/// Node `i`'s API socket.
pub fn api_socket(lab: &TierLab, i: usize) -> PathBuf {
    run_dir(lab).join(format!("n{}.sock", i + 1))
}

/// Node `i`'s lbd config: the tier's one service (Maglev, in the lab's mode; stateless
/// return in NAT) on both of its links, announcing the VIP, with its BIRD's socket
/// (which `lbctl node drain` reads to confirm a withdrawal).
pub fn lbd_config(lab: &TierLab, i: usize) -> String {
    let dir = run_dir(lab);
    let mode = lab.mode();
    let k = i + 1;
    let mut yaml = format!(
        "node:\n  zone: {}\ninterfaces: [up0, dn0]\npin_dir: {}\napi:\n  socket: {}\nstate_file: {}\nannounce:\n  vip_ranges: [10.0.0.0/24]\n  hold_up: 0s\n  bird_socket: {}\nservices:\n  - name: web\n    vip: {VIP}\n    port: {VIP_PORT}\n    protocol: tcp\n    mode: {}\n    policy: maglev\n{}    {}\n    backends:\n",
        ZONES[i % ZONES.len()],
        pin_dir(lab, i).display(),
        api_socket(lab, i).display(),
        dir.join(format!("n{k}-state.yaml")).display(),
        dir.join(format!("n{k}.ctl")).display(),
        mode.key(),
        // A DSR service is placed as a tier's hash-placed one anyway, and refuses the key.
        if mode.is_dsr() {
            ""
        } else {
            "    stateless_return: true\n"
        },
        fast_health(),
    );
    for (z, zone) in ZONES.iter().enumerate() {
        yaml.push_str(&format!(
            "      - {{ address: {}, port: {}, zone: {zone} }}\n",
            lab.backend_addr(z),
            mode.backend_port(),
        ));
    }
    yaml
}
