//! Long-running processes (the `lbd` daemon, ...) started inside a lab
//! namespace, with their output captured to a log file and a guaranteed stop
//! on drop.
//!
//! Processes are started as `nsenter --net=/run/netns/NS -- PROGRAM ARGS...`:
//! nsenter enters only the network namespace and then execs PROGRAM, so the
//! pid is PROGRAM's own and the host's /sys/fs/bpf stays visible (unlike
//! `ip netns exec`, which remounts /sys).

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::netns;

/// How long [`Daemon`]'s drop waits after SIGTERM before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// How long a SIGKILLed process may take to be reaped before giving up on it.
const KILL_GRACE: Duration = Duration::from_secs(10);

static LOG_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A process running inside a network namespace. On drop: SIGTERM, wait up to
/// [`STOP_GRACE`], then SIGKILL. If the dropping thread is panicking, the tail
/// of the log is printed to stderr and the log file is kept; otherwise it is
/// deleted (set `LB_TESTS_KEEP_LOGS=1` to keep it).
pub struct Daemon {
    child: Option<Child>,
    status: Option<ExitStatus>,
    ns: String,
    program: PathBuf,
    log_path: PathBuf,
}

impl Daemon {
    /// Starts `program args...` inside namespace `ns`; panics if it cannot be
    /// started.
    #[track_caller]
    pub fn spawn_in_ns(ns: &str, program: &Path, args: &[&str]) -> Daemon {
        Daemon::try_spawn_in_ns(ns, program, args, &[]).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Daemon::spawn_in_ns`] with extra environment variables (e.g.
    /// `RUST_LOG`).
    #[track_caller]
    pub fn spawn_in_ns_with_env(
        ns: &str,
        program: &Path,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> Daemon {
        Daemon::try_spawn_in_ns(ns, program, args, envs).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts `program args...` inside namespace `ns`, returning errors.
    pub fn try_spawn_in_ns(
        ns: &str,
        program: &Path,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> Result<Daemon, String> {
        let base = program
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "daemon".into());
        let dir = std::env::temp_dir().join("lb-tests-logs");
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let log_path = dir.join(format!(
            "{base}-{ns}-{}-{}.log",
            std::process::id(),
            LOG_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let log =
            File::create(&log_path).map_err(|e| format!("creating {}: {e}", log_path.display()))?;
        let log_err = log
            .try_clone()
            .map_err(|e| format!("cloning {}: {e}", log_path.display()))?;
        let line = format!(
            "nsenter --net={} -- {} {}",
            netns::netns_path(ns).display(),
            program.display(),
            args.join(" ")
        );
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", netns::netns_path(ns).display()))
            .arg("--")
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err));
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("`{line}`: cannot start: {e}"))?;
        Ok(Daemon {
            child: Some(child),
            status: None,
            ns: ns.to_string(),
            program: program.to_path_buf(),
            log_path,
        })
    }

    /// The process id (PROGRAM's own: nsenter execs it).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn ns(&self) -> &str {
        &self.ns
    }

    pub fn program(&self) -> &Path {
        &self.program
    }

    /// Everything the process wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = File::open(&self.log_path) {
            let mut bytes = Vec::new();
            let _ = f.read_to_end(&mut bytes);
            s = String::from_utf8_lossy(&bytes).into_owned();
        }
        s
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Exit status if the process has exited (non-blocking).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    self.status = Some(st);
                }
            }
        }
        self.status
    }

    pub fn is_running(&mut self) -> bool {
        self.child.is_some() && self.try_wait().is_none()
    }

    /// Waits up to `timeout` for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_wait() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits up to `timeout` until the log contains `needle`. Fails (with the
    /// log) if the process exits first or the time runs out.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log().contains(needle) {
                return Ok(());
            }
            if let Some(st) = self.try_wait() {
                // It may have printed the line just before exiting.
                if self.log().contains(needle) {
                    return Ok(());
                }
                return Err(format!(
                    "{} exited ({st}) before logging {needle:?}; log:\n{}",
                    self.program.display(),
                    self.log()
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} did not log {needle:?} within {timeout:?}; log:\n{}",
                    self.program.display(),
                    self.log()
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The length of the log so far: a mark for [`Daemon::wait_for_log_after`].
    pub fn log_len(&self) -> usize {
        self.log().len()
    }

    /// Waits up to `timeout` until the log written after byte `mark` contains `needle`;
    /// returns that part of the log. Fails (with the log) if the process exits first or
    /// the time runs out.
    pub fn wait_for_log_after(
        &mut self,
        mark: usize,
        needle: &str,
        timeout: Duration,
    ) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log();
            let tail = log.get(mark..).unwrap_or("");
            if tail.contains(needle) {
                return Ok(tail.to_string());
            }
            if self.try_wait().is_some() || Instant::now() >= deadline {
                return Err(format!(
                    "{} did not log {needle:?} within {timeout:?} (exited: {:?}); log:\n{log}",
                    self.program.display(),
                    self.status
                ));
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `sig` (e.g. `libc::SIGHUP`) if the process still runs.
    pub fn signal(&mut self, sig: libc::c_int) {
        if self.is_running() {
            // SAFETY: plain syscall on our unreaped child's pid.
            unsafe { libc::kill(self.pid() as libc::pid_t, sig) };
        }
    }

    /// SIGTERM, wait up to [`STOP_GRACE`], then SIGKILL; returns the exit
    /// status (None only if it could not be reaped).
    pub fn stop(&mut self) -> Option<ExitStatus> {
        if self.try_wait().is_none() {
            self.signal(libc::SIGTERM);
            if self.wait_exit(STOP_GRACE).is_none() {
                if let Some(c) = self.child.as_mut() {
                    let _ = c.kill();
                }
                // A killed process normally goes at once; one stuck in the kernel must
                // not hang the test (it is reported as not reaped).
                let _ = self.wait_exit(KILL_GRACE);
            }
        }
        self.status
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
        let keep = std::env::var_os("LB_TESTS_KEEP_LOGS").is_some();
        if thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(60)..];
            eprintln!(
                "---- {} in netns {} ({:?}); log {} (last {} lines):\n{}\n----",
                self.program.display(),
                self.ns,
                self.status,
                self.log_path.display(),
                tail.len(),
                tail.join("\n")
            );
        } else if !keep {
            let _ = std::fs::remove_file(&self.log_path);
        }
    }
}

/// Finds a binary built in this workspace: env `env_var` if set, else `name`
/// next to the current executable, else in its parent directory (integration
/// test binaries live in target/<profile>/deps/). Panics if absent.
pub fn workspace_bin(name: &str, env_var: &str) -> PathBuf {
    find_workspace_bin(name, env_var).unwrap_or_else(|e| panic!("{e}"))
}

/// [`workspace_bin`], saying where it looked instead of panicking.
pub fn find_workspace_bin(name: &str, env_var: &str) -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os(env_var) {
        let p = PathBuf::from(p);
        if !p.is_file() {
            return Err(format!(
                "{env_var}={} does not name a file; run `cargo build --workspace --bins` first",
                p.display()
            ));
        }
        return Ok(p);
    }
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let dir = exe
        .parent()
        .expect("executable has a directory")
        .to_path_buf();
    let candidates = [dir.join(name), dir.join("..").join(name)];
    for c in &candidates {
        if c.is_file() {
            return Ok(c.canonicalize().unwrap_or_else(|_| c.clone()));
        }
    }
    Err(format!(
        "{name} binary not found at {} or {} (or set {env_var}); run `cargo build --workspace --bins` first",
        candidates[0].display(),
        candidates[1].display()
    ))
}

/// Path of the `lbd` daemon binary: env `LBD_BIN`, else next to the current
/// executable, else one directory up. Panics with a hint if absent.
pub fn lbd_path() -> PathBuf {
    workspace_bin("lbd", "LBD_BIN")
}

/// Mounts bpffs at /sys/fs/bpf in the host mount namespace if it is not
/// mounted yet (it is not at boot on this platform).
pub fn ensure_bpffs() -> Result<(), String> {
    // Two threads mounting at once would stack two bpffs instances.
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let mounts = std::fs::read_to_string("/proc/self/mounts")
        .map_err(|e| format!("/proc/self/mounts: {e}"))?;
    let mounted = mounts.lines().any(|l| {
        let mut f = l.split_whitespace();
        let _src = f.next();
        f.next() == Some("/sys/fs/bpf") && f.next() == Some("bpf")
    });
    if mounted {
        return Ok(());
    }
    netns::try_run("mount", &["-t", "bpf", "bpf", "/sys/fs/bpf"]).map(|_| ())
}

/// Runs `cmd` to its end, or kills it after `bound`.
pub fn output_within(mut cmd: Command, bound: Duration) -> Result<Output, String> {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting {cmd:?}: {e}"))?;
    let pid = child.id() as libc::pid_t;
    let (tx, rx) = mpsc::channel();
    let waiter = thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(bound) {
        Ok(out) => {
            let _ = waiter.join();
            out.map_err(|e| format!("running {cmd:?}: {e}"))
        }
        Err(_) => {
            // Not reaped yet (the waiter still waits for it), so the pid is still ours.
            // SAFETY: plain syscall.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let _ = waiter.join();
            Err(format!("{cmd:?} did not end within {bound:?}; killed"))
        }
    }
}
