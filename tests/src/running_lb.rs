//! A lab with backends serving and `lbd` attached in the LB namespace: the fixture of the
//! end-to-end tests and of the `lb-lab` demo.
use std::{
    collections::BTreeMap,
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use lb_userspace::kernel::pins::PinDir;

use crate::{
    backend_server::BackendServer,
    client::{burst, BurstResult},
    lbctl::Lbctl,
    process::{lbd_path, Daemon},
    topology::{Family, Lab},
};

/// The VIP every lab service uses.
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
pub const VIP_PORT: u16 = 80;
pub const BACKEND_PORT: u16 = 8080;
/// The IPv6 VIP of a dual-stack lab's services.
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100);

/// The VIP of `family`.
pub fn vip(family: Family) -> IpAddr {
    family.pick(VIP, VIP6)
}

/// Directory of a lab's admin socket and state file (root-only, removed with the
/// [`RunningLb`]), so that labs running side by side never share them.
pub fn lab_run_dir(lab: &Lab) -> PathBuf {
    std::env::temp_dir().join(format!("lb-tests-{}", lab.prefix()))
}

/// `lbd`'s config for a lab: one NAT/Maglev service on [`VIP`]:[`VIP_PORT`] whose
/// backends are the lab's, with `weights[i]` for backend `i`.
pub fn lab_config(lab: &Lab, weights: &[u32]) -> String {
    LabConfig::new(lab).weights(weights).yaml()
}

/// Like [`lab_config`], with the service's selection `policy` (as in the config file).
pub fn lab_config_with_policy(lab: &Lab, weights: &[u32], policy: &str) -> String {
    LabConfig::new(lab)
        .weights(weights)
        .selection(policy)
        .yaml()
}

/// [`lab_config`] with more: service-level policy keys and per-backend keys.
pub struct LabConfig<'a> {
    lab: &'a Lab,
    weights: Vec<u32>,
    selection: String,
    policy: Vec<String>,
    backend_keys: BTreeMap<usize, String>,
    family: Family,
    more: Vec<MoreService>,
}

/// A service beside the first (see [`LabConfig::service`]).
struct MoreService {
    name: String,
    family: Family,
    protocol: String,
    port: u16,
    lines: Vec<String>,
}

impl<'a> LabConfig<'a> {
    pub fn new(lab: &'a Lab) -> Self {
        Self {
            lab,
            weights: Vec::new(),
            selection: "maglev".into(),
            policy: Vec::new(),
            backend_keys: BTreeMap::new(),
            family: Family::V4,
            more: Vec::new(),
        }
    }

    /// The service's VIP and backend addresses are of `family` (the lab must have it).
    pub fn family(mut self, family: Family) -> Self {
        self.family = family;
        self
    }

    /// One more service `name` on the VIP of `family`, `protocol` and `port`, with the
    /// weights and the selection policy of the first, service-level YAML `lines`, and
    /// the lab's backends in that family on [`BACKEND_PORT`].
    pub fn service(
        mut self,
        name: &str,
        family: Family,
        protocol: &str,
        port: u16,
        lines: &[&str],
    ) -> Self {
        self.more.push(MoreService {
            name: name.to_string(),
            family,
            protocol: protocol.to_string(),
            port,
            lines: lines.iter().map(|l| l.to_string()).collect(),
        });
        self
    }

    /// Weight of backend `i` (default 1).
    pub fn weights(mut self, weights: &[u32]) -> Self {
        self.weights = weights.to_vec();
        self
    }

    /// The service's selection policy (`maglev`, `round_robin`, ...).
    pub fn selection(mut self, policy: &str) -> Self {
        self.selection = policy.to_string();
        self
    }

    /// Service-level YAML lines, e.g. `cross_zone: false` or `health: { interval: 200ms }`.
    pub fn policy(mut self, lines: &[&str]) -> Self {
        self.policy.extend(lines.iter().map(|l| l.to_string()));
        self
    }

    /// Extra flow-mapping keys of backend `i`, e.g. `state: draining`.
    pub fn backend(mut self, i: usize, keys: &str) -> Self {
        self.backend_keys.insert(i, keys.to_string());
        self
    }

    pub fn yaml(&self) -> String {
        let lab = self.lab;
        let mut yaml = format!(
            "node:\n  zone: {}\ninterfaces: [{}]\npin_dir: {}\napi:\n  socket: {}\nstate_file: {}\nservices:\n  - name: web\n    vip: {}\n    port: {VIP_PORT}\n    protocol: tcp\n    mode: nat\n    policy: {}\n",
            lab.spec().backends[0].zone,
            lab.lb_interfaces().join(", "),
            pin_dir(lab).display(),
            lab_run_dir(lab).join("lbd.sock").display(),
            lab_run_dir(lab).join("state.yaml").display(),
            vip(self.family),
            self.selection,
        );
        if lab.spec().tc {
            let tc = format!("tc_interfaces: [{}]\n", lab.lb_interfaces().join(", "));
            yaml.insert_str(yaml.find("pin_dir:").expect("written above"), &tc);
        }
        for line in &self.policy {
            yaml.push_str(&format!("    {line}\n"));
        }
        self.push_backends(&mut yaml, self.family);
        for more in &self.more {
            yaml.push_str(&format!(
                "  - name: {}\n    vip: {}\n    port: {}\n    protocol: {}\n    mode: nat\n    policy: {}\n",
                more.name,
                vip(more.family),
                more.port,
                more.protocol,
                self.selection,
            ));
            for line in &more.lines {
                yaml.push_str(&format!("    {line}\n"));
            }
            self.push_backends(&mut yaml, more.family);
        }
        yaml
    }

    /// A service's `backends:` list: the lab's backends in `family`.
    fn push_backends(&self, yaml: &mut String, family: Family) {
        let lab = self.lab;
        yaml.push_str("    backends:\n");
        for i in 0..lab.backend_count() {
            let extra = self
                .backend_keys
                .get(&i)
                .map(|k| format!(", {k}"))
                .unwrap_or_default();
            yaml.push_str(&format!(
                "      - {{ address: {}, port: {BACKEND_PORT}, zone: {}, weight: {}{extra} }}\n",
                lab.backend_ip(i, family),
                lab.backend_spec(i).zone,
                self.weights.get(i).copied().unwrap_or(1),
            ));
        }
    }
}

/// How long a test waits for lbd to serve (the wait ends as soon as it does): a debug
/// lbd started at the lowest priority beside four busy loops on 2 cores did not load
/// and verify its program within 20 s.
const LBD_START: Duration = Duration::from_secs(90);

/// Where labs' lbd instances pin their data paths.
pub const PIN_ROOT: &str = "/sys/fs/bpf/lb-tests";

/// Where a lab's lbd pins its data path: one directory per lab, so labs run in parallel.
pub fn pin_dir(lab: &Lab) -> PathBuf {
    PathBuf::from(PIN_ROOT).join(lab.prefix())
}

/// Removes pinned data paths left by labs that no longer exist (a test process that was
/// killed never ran its cleanup); a live lab's namespace `{prefix}lb` still exists, and a
/// live tier node's namespace has the name of its pin directory (see `tier`).
pub fn sweep_stale_pins() {
    let Ok(entries) = fs::read_dir(PIN_ROOT) else {
        return;
    };
    for entry in entries.flatten() {
        let prefix = entry.file_name().to_string_lossy().into_owned();
        let live = |ns: &str| crate::netns::netns_path(ns).exists();
        if entry.path().is_dir() && !live(&format!("{prefix}lb")) && !live(&prefix) {
            let _ = PinDir::new(entry.path()).remove_all();
        }
    }
}

/// Lab + backend servers + a running `lbd`; everything stops on drop (lbd first, so
/// it detaches while the namespace still exists).
pub struct RunningLb {
    pub lbd: Daemon,
    pub servers: Vec<BackendServer>,
    config_path: PathBuf,
    pub lab: Lab,
}

impl RunningLb {
    /// Starts backends and `lbd` with `config` (YAML), and waits until lbd serves.
    pub fn start(lab: Lab, config: &str) -> RunningLb {
        Self::start_wrapped(lab, config, &[])
    }

    /// Like [`RunningLb::start`], with `lbd` started through `wrapper` (a program and
    /// its arguments, e.g. `setpriv` dropping capabilities) that then execs it.
    pub fn start_wrapped(lab: Lab, config: &str, wrapper: &[&str]) -> RunningLb {
        sweep_stale_pins();
        let servers = lab.start_backends(BACKEND_PORT);
        let config_path = std::env::temp_dir().join(format!("{}-lbd.yaml", lab.prefix()));
        fs::write(&config_path, config)
            .unwrap_or_else(|e| panic!("writing {}: {e}", config_path.display()));
        let lbd = spawn_lbd(&lab, &config_path, wrapper);
        RunningLb {
            lbd,
            servers,
            config_path,
            lab,
        }
    }

    /// The config file lbd was started with.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// `lbctl` pointed at this lab's lbd.
    pub fn lbctl(&self) -> Lbctl {
        Lbctl::new(&lab_run_dir(&self.lab).join("lbd.sock"))
    }

    /// This lab's admin socket.
    pub fn socket(&self) -> PathBuf {
        lab_run_dir(&self.lab).join("lbd.sock")
    }

    /// This lab's state file.
    pub fn state_file(&self) -> PathBuf {
        lab_run_dir(&self.lab).join("state.yaml")
    }

    /// The services lbd persisted (the state file with its journal replayed), as JSON
    /// text; panics if nothing was persisted.
    pub fn saved_state(&self) -> String {
        let doc = lb_userspace::model::desired::state_file::read(&self.state_file())
            .expect("the state file reads")
            .expect("the state file was written");
        serde_json::to_string_pretty(&doc.services).expect("services serialize")
    }

    /// Starts a new lbd with the same config (the old one must be gone or going): it
    /// adopts the pinned data path. Returns the old lbd's handle.
    pub fn restart_lbd(&mut self) -> Daemon {
        let path = self
            .config_path
            .to_str()
            .expect("temp path is UTF-8")
            .to_string();
        let mut lbd = self
            .lab
            .spawn_daemon(self.lab.lb_ns(), &lbd_path(), &["--config", &path]);
        lbd.wait_for_log("serving", LBD_START)
            .unwrap_or_else(|e| panic!("the new lbd did not start: {e}"));
        std::mem::replace(&mut self.lbd, lbd)
    }

    /// SIGTERM to lbd, then a new one once it has exited (as systemd restarts a unit).
    /// Returns the old lbd's handle.
    pub fn restart_lbd_after_sigterm(&mut self) -> Daemon {
        self.lbd.signal(libc::SIGTERM);
        self.lbd
            .wait_exit(Duration::from_secs(10))
            .expect("lbd exits on SIGTERM");
        self.restart_lbd()
    }

    /// Rewrites the config file and sends lbd SIGHUP; returns what lbd logged about it
    /// (`Ok` if it reloaded, `Err` with the log if it rejected the file or said nothing).
    pub fn reload(&mut self, config: &str) -> Result<String, String> {
        fs::write(&self.config_path, config)
            .unwrap_or_else(|e| panic!("writing {}: {e}", self.config_path.display()));
        let mark = self.lbd.log_len();
        self.lbd.signal(libc::SIGHUP);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let log = self.lbd.log();
            let tail = &log[mark.min(log.len())..];
            if tail.contains("SIGHUP: reloaded") {
                return Ok(tail.to_string());
            }
            // The whole message: the error lines follow the first in the same record,
            // which lbd's logger writes at once; a read can only catch it cut short.
            if tail.contains("SIGHUP: reload rejected") && tail.ends_with('\n') {
                return Err(tail.to_string());
            }
            if std::time::Instant::now() >= deadline {
                return Err(format!("lbd said nothing about the reload; log:\n{log}"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until lbd has logged `<backend>: ... -> healthy` for each backend index,
    /// after log byte `mark`.
    pub fn wait_healthy(&mut self, mark: usize, backends: &[usize], timeout: Duration) {
        self.wait_healthy_in(Family::V4, mark, backends, timeout);
    }

    /// [`RunningLb::wait_healthy`] for the backends' addresses in `family`.
    pub fn wait_healthy_in(
        &mut self,
        family: Family,
        mark: usize,
        backends: &[usize],
        timeout: Duration,
    ) {
        for i in backends {
            let needle = format!("{}: ", self.backend_socket(*i, family));
            let deadline = std::time::Instant::now() + timeout;
            loop {
                let log = self.lbd.log();
                let tail = log.get(mark..).unwrap_or("");
                if tail
                    .lines()
                    .any(|l| l.contains(&needle) && l.contains("-> healthy"))
                {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "backend {i} not healthy within {timeout:?}; log:\n{log}"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    /// Backend `i`'s `address:port` in `family` as lbd names it (`[address]:port` for
    /// IPv6).
    pub fn backend_socket(&self, i: usize, family: Family) -> std::net::SocketAddr {
        std::net::SocketAddr::new(self.lab.backend_ip(i, family), BACKEND_PORT)
    }

    /// Stops backend `i`'s servers (one per family of the lab): its port closes, so new
    /// connections to it are refused by its host. Returns when the stop began and when
    /// it was done.
    pub fn kill_server(&mut self, i: usize) -> (SystemTime, SystemTime) {
        let name = self.lab.backend_spec(i).name.clone();
        let (gone, kept) = std::mem::take(&mut self.servers)
            .into_iter()
            .partition(|s| s.name() == name);
        self.servers = kept;
        let gone: Vec<BackendServer> = gone;
        assert!(!gone.is_empty(), "backend {name} has no running server");
        let began = SystemTime::now();
        drop(gone);
        (began, SystemTime::now())
    }

    /// Starts backend `i`'s servers again; returns when they listen.
    pub fn restart_server(&mut self, i: usize) -> SystemTime {
        let servers = self.lab.start_backend(i, BACKEND_PORT);
        self.servers.extend(servers);
        SystemTime::now()
    }

    /// `count` connections one after another from the client namespace to the VIP (see
    /// [`crate::burst`]), each bounded by `per_conn`, all of them by `within`.
    pub fn burst(&self, count: usize, per_conn: Duration, within: Duration) -> BurstResult {
        self.burst_in(Family::V4, count, per_conn, within)
    }

    /// [`RunningLb::burst`] to the VIP of `family`.
    pub fn burst_in(
        &self,
        family: Family,
        count: usize,
        per_conn: Duration,
        within: Duration,
    ) -> BurstResult {
        let ns = self.lab.client_ns();
        burst(ns, vip(family), VIP_PORT, count, per_conn, within)
    }

    /// Each backend's open flows (`address:port` -> count) as lbd's `/metrics` reports
    /// them on its default listener (lbd samples the data path's counts about once a
    /// second, so a test polls this until it shows what it waits for).
    pub fn active_flows(&self) -> BTreeMap<String, u64> {
        let body = crate::lbd_metrics::get(&self.lab, "/metrics").body;
        body.lines()
            .filter_map(|l| l.strip_prefix("lb_backend_active_flows{"))
            .filter_map(|l| {
                let backend = l.split("backend=\"").nth(1)?.split('"').next()?;
                let value = l.rsplit(' ').next()?.parse::<f64>().ok()?;
                Some((backend.to_string(), value as u64))
            })
            .collect()
    }

    /// Stops lbd (SIGTERM) and returns everything it logged.
    pub fn stop_lbd(&mut self) -> String {
        self.lbd.stop();
        self.lbd.log()
    }
}

/// Starts lbd in the lab's LB namespace (through `wrapper`, if any) and waits until it
/// serves.
fn spawn_lbd(lab: &Lab, config_path: &Path, wrapper: &[&str]) -> Daemon {
    let path = config_path.to_str().expect("temp path is UTF-8");
    let lbd_bin = lbd_path();
    let lbd_bin = lbd_bin.to_str().expect("lbd path is UTF-8");
    let mut lbd = match wrapper.split_first() {
        None => lab.spawn_daemon(lab.lb_ns(), lbd_bin.as_ref(), &["--config", path]),
        Some((program, args)) => {
            let mut all: Vec<&str> = args.to_vec();
            all.extend(["--", lbd_bin, "--config", path]);
            lab.spawn_daemon(lab.lb_ns(), program.as_ref(), &all)
        }
    };
    lbd.wait_for_log("serving", LBD_START)
        .unwrap_or_else(|e| panic!("lbd did not start: {e}"));
    lbd
}

impl Drop for RunningLb {
    fn drop(&mut self) {
        self.lbd.stop();
        for server in &self.servers {
            server.begin_stop();
        }
        // lbd leaves its data path pinned when it stops; a test lab takes it down.
        if let Err(e) = PinDir::new(pin_dir(&self.lab)).remove_all() {
            eprintln!("removing the lab's pinned data path: {e}");
        }
        let _ = fs::remove_file(&self.config_path);
        let _ = fs::remove_dir_all(lab_run_dir(&self.lab));
    }
}
