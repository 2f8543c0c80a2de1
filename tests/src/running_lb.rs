//! A lab with backends serving and `lbd` attached in the LB namespace: the fixture of the
//! end-to-end tests and of the `lb-lab` demo.
use std::{
    collections::BTreeMap,
    fs,
    net::Ipv4Addr,
    path::PathBuf,
    time::{Duration, SystemTime},
};

use crate::{
    backend_server::BackendServer,
    process::{lbd_path, Daemon},
    topology::Lab,
};

/// The VIP every lab service uses.
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
pub const VIP_PORT: u16 = 80;
pub const BACKEND_PORT: u16 = 8080;

/// `lbd`'s config for a lab: one NAT/Maglev service on [`VIP`]:[`VIP_PORT`] whose
/// backends are the lab's, with `weights[i]` for backend `i`.
pub fn lab_config(lab: &Lab, weights: &[u32]) -> String {
    LabConfig::new(lab).weights(weights).yaml()
}

/// [`lab_config`] with more: service-level policy keys and per-backend keys.
pub struct LabConfig<'a> {
    lab: &'a Lab,
    weights: Vec<u32>,
    policy: Vec<String>,
    backend_keys: BTreeMap<usize, String>,
}

impl<'a> LabConfig<'a> {
    pub fn new(lab: &'a Lab) -> Self {
        Self {
            lab,
            weights: Vec::new(),
            policy: Vec::new(),
            backend_keys: BTreeMap::new(),
        }
    }

    /// Weight of backend `i` (default 1).
    pub fn weights(mut self, weights: &[u32]) -> Self {
        self.weights = weights.to_vec();
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
            "node:\n  zone: {}\ninterfaces: [{}]\nservices:\n  - name: web\n    vip: {VIP}\n    port: {VIP_PORT}\n    protocol: tcp\n    mode: nat\n    policy: maglev\n",
            lab.spec().backends[0].zone,
            lab.lb_interfaces().join(", "),
        );
        for line in &self.policy {
            yaml.push_str(&format!("    {line}\n"));
        }
        yaml.push_str("    backends:\n");
        for i in 0..lab.backend_count() {
            let extra = self
                .backend_keys
                .get(&i)
                .map(|k| format!(", {k}"))
                .unwrap_or_default();
            yaml.push_str(&format!(
                "      - {{ address: {}, port: {BACKEND_PORT}, zone: {}, weight: {}{extra} }}\n",
                lab.backend_addr(i),
                lab.backend_spec(i).zone,
                self.weights.get(i).copied().unwrap_or(1),
            ));
        }
        yaml
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
        let servers = lab.start_backends(BACKEND_PORT);
        let config_path = std::env::temp_dir().join(format!("{}-lbd.yaml", lab.prefix()));
        fs::write(&config_path, config)
            .unwrap_or_else(|e| panic!("writing {}: {e}", config_path.display()));
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
        lbd.wait_for_log("serving", Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("lbd did not start: {e}"));
        RunningLb {
            lbd,
            servers,
            config_path,
            lab,
        }
    }

    /// Rewrites the config file and sends lbd SIGHUP; returns what lbd logged about it
    /// (`Ok` if it reloaded, `Err` with the log if it rejected the file or said nothing).
    pub fn reload(&mut self, config: &str) -> Result<String, String> {
        fs::write(&self.config_path, config)
            .unwrap_or_else(|e| panic!("writing {}: {e}", self.config_path.display()));
        let mark = self.lbd.log_len();
        self.lbd.signal(libc::SIGHUP);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.lbd.log();
            let tail = &log[mark.min(log.len())..];
            if tail.contains("SIGHUP: reloaded") {
                return Ok(tail.to_string());
            }
            if tail.contains("SIGHUP: reload rejected") {
                // The whole message: the error lines follow the first.
                std::thread::sleep(Duration::from_millis(50));
                return Err(self.lbd.log()[mark..].to_string());
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
        for i in backends {
            let needle = format!("{}:{BACKEND_PORT}: ", self.lab.backend_addr(*i));
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

    /// Stops backend `i`'s server: its port closes, so new connections to it are refused
    /// by its host. Returns when the stop began and when it was done.
    pub fn kill_server(&mut self, i: usize) -> (SystemTime, SystemTime) {
        let name = &self.lab.backend_spec(i).name;
        let at = self
            .servers
            .iter()
            .position(|s| s.name() == name)
            .unwrap_or_else(|| panic!("backend {name} has no running server"));
        let server = self.servers.remove(at);
        let began = SystemTime::now();
        drop(server);
        (began, SystemTime::now())
    }

    /// Starts backend `i`'s server again; returns when it listens.
    pub fn restart_server(&mut self, i: usize) -> SystemTime {
        let spec = self.lab.backend_spec(i);
        self.servers.push(BackendServer::start(
            self.lab.backend_ns(i),
            self.lab.backend_addr(i),
            BACKEND_PORT,
            &spec.name,
        ));
        SystemTime::now()
    }

    /// Stops lbd (SIGTERM) and returns everything it logged.
    pub fn stop_lbd(&mut self) -> String {
        self.lbd.stop();
        self.lbd.log()
    }
}

impl Drop for RunningLb {
    fn drop(&mut self) {
        self.lbd.stop();
        let _ = fs::remove_file(&self.config_path);
    }
}
