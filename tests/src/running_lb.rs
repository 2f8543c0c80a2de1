//! A lab with backends serving and `lbd` attached in the LB namespace: the fixture of the
//! end-to-end tests and of the `lb-lab` demo.
use std::{
    fs,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::Duration,
};

use crate::{
    backend_server::BackendServer,
    lbctl::Lbctl,
    process::{lbd_path, Daemon},
    topology::Lab,
};

/// The VIP every lab service uses.
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
pub const VIP_PORT: u16 = 80;
pub const BACKEND_PORT: u16 = 8080;

/// Directory of a lab's admin socket and state file (root-only, removed with the
/// [`RunningLb`]), so that labs running side by side never share them.
pub fn lab_run_dir(lab: &Lab) -> PathBuf {
    std::env::temp_dir().join(format!("lb-tests-{}", lab.prefix()))
}

/// `lbd`'s config for a lab: one NAT/Maglev service on [`VIP`]:[`VIP_PORT`] whose
/// backends are the lab's, with `weights[i]` for backend `i`.
pub fn lab_config(lab: &Lab, weights: &[u32]) -> String {
    lab_config_with_policy(lab, weights, "maglev")
}

/// Like [`lab_config`], with the service's selection `policy` (as in the config file).
pub fn lab_config_with_policy(lab: &Lab, weights: &[u32], policy: &str) -> String {
    let run = lab_run_dir(lab);
    let mut yaml = format!(
        "node:\n  zone: {}\ninterfaces: [{}]\napi:\n  socket: {}\nstate_file: {}\nservices:\n  - name: web\n    vip: {VIP}\n    port: {VIP_PORT}\n    protocol: tcp\n    mode: nat\n    policy: {policy}\n    backends:\n",
        lab.spec().backends[0].zone,
        lab.lb_interfaces().join(", "),
        run.join("lbd.sock").display(),
        run.join("state.yaml").display(),
    );
    for i in 0..lab.backend_count() {
        yaml.push_str(&format!(
            "      - {{ address: {}, port: {BACKEND_PORT}, zone: {}, weight: {} }}\n",
            lab.backend_addr(i),
            lab.backend_spec(i).zone,
            weights.get(i).copied().unwrap_or(1),
        ));
    }
    yaml
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

    /// Stops lbd and starts it again with the same config file; returns the stopped
    /// lbd's log.
    pub fn restart_lbd(&mut self) -> String {
        let log = self.stop_lbd();
        self.lbd = spawn_lbd(&self.lab, &self.config_path, &[]);
        log
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
    lbd.wait_for_log("serving", Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("lbd did not start: {e}"));
    lbd
}

impl Drop for RunningLb {
    fn drop(&mut self) {
        self.lbd.stop();
        let _ = fs::remove_file(&self.config_path);
        let _ = fs::remove_dir_all(lab_run_dir(&self.lab));
    }
}
