//! Network namespaces and the command-running helper.
//!
//! * [`try_run`] / [`run`] run one external command (`ip`, `ethtool`, ...)
//!   with a time limit; failures name the full command line and its stderr.
//! * [`NetNs`] is a named namespace (`/run/netns/NAME`) deleted on drop,
//!   together with any process still running inside it.
//! * [`run_in`] / [`spawn_in`] run a closure on a fresh OS thread that has
//!   `setns(CLONE_NEWNET)`-ed into a namespace. Sockets created there belong to
//!   that namespace and keep working from any thread afterwards.

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::{Mutex, Once};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// Time limit for one external command started by [`try_run`].
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Where iproute2 keeps named namespaces.
pub const NETNS_DIR: &str = "/run/netns";

/// Where this library records the namespaces it created (one file per
/// namespace holding the creator's pid), so that [`cleanup_stale`] can remove
/// namespaces left behind by a test process that was killed.
pub const REGISTRY_DIR: &str = "/run/lb-tests/netns";

/// `ip netns add/delete` mount and unmount under /run/netns; serialise them
/// inside this process.
static NETNS_LOCK: Mutex<()> = Mutex::new(());

fn cmdline(program: &str, args: &[&str]) -> String {
    let mut s = program.to_string();
    for a in args {
        s.push(' ');
        if a.is_empty() || a.contains(char::is_whitespace) {
            s.push_str(&format!("{a:?}"));
        } else {
            s.push_str(a);
        }
    }
    s
}

/// Runs `program args...`, waits at most [`COMMAND_TIMEOUT`] and returns its
/// stdout. The error names the command line, its exit status and its stderr.
pub fn try_run(program: &str, args: &[&str]) -> Result<String, String> {
    try_run_timeout(program, args, COMMAND_TIMEOUT)
}

/// [`try_run`] with an explicit time limit; the command is killed when it
/// runs longer.
pub fn try_run_timeout(program: &str, args: &[&str], timeout: Duration) -> Result<String, String> {
    let line = cmdline(program, args);
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("`{line}`: cannot start: {e}"))?;
    let pid = child.id() as libc::pid_t;
    let (tx, rx) = mpsc::channel();
    let waiter = thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(timeout) {
        Ok(out) => out,
        Err(_) => {
            // SAFETY: kill only sends a signal; the pid is not reaped yet (the waiter
            // still holds it), so it is still our child's.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let _ = waiter.join();
            return Err(format!("`{line}`: timed out after {timeout:?}, killed"));
        }
    };
    let _ = waiter.join();
    let out = out.map_err(|e| format!("`{line}`: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let mut msg = format!("`{line}` failed ({}): {}", out.status, stderr.trim());
        if stderr.trim().is_empty() && !stdout.trim().is_empty() {
            msg.push_str(&format!(" (stdout: {})", stdout.trim()));
        }
        Err(msg)
    }
}

/// Like [`try_run`] but panics with the error message.
#[track_caller]
pub fn run(program: &str, args: &[&str]) -> String {
    try_run(program, args).unwrap_or_else(|e| panic!("{e}"))
}

/// `ip ARGS...` in the current (host) namespace; panics on failure.
#[track_caller]
pub fn ip(args: &[&str]) -> String {
    run("ip", args)
}

/// `ip -n NS ARGS...`; panics on failure.
#[track_caller]
pub fn ns_ip(ns: &str, args: &[&str]) -> String {
    let mut a = vec!["-n", ns];
    a.extend_from_slice(args);
    run("ip", &a)
}

/// `ip -n NS ARGS...`, returning the error instead of panicking.
pub fn try_ns_ip(ns: &str, args: &[&str]) -> Result<String, String> {
    let mut a = vec!["-n", ns];
    a.extend_from_slice(args);
    try_run("ip", &a)
}

/// Runs `program args...` inside the network namespace `ns` only (with
/// `nsenter --net=/run/netns/NS`; mounts, so the host bpffs, stay visible).
pub fn try_ns_exec(ns: &str, program: &str, args: &[&str]) -> Result<String, String> {
    let net = format!("--net={}", netns_path(ns).display());
    let mut a = vec![net.as_str(), "--", program];
    a.extend_from_slice(args);
    try_run("nsenter", &a)
}

/// [`try_ns_exec`] that panics on failure.
#[track_caller]
pub fn ns_exec(ns: &str, program: &str, args: &[&str]) -> String {
    try_ns_exec(ns, program, args).unwrap_or_else(|e| panic!("{e}"))
}

/// `ethtool ARGS...` inside `ns`; panics on failure.
#[track_caller]
pub fn ns_ethtool(ns: &str, args: &[&str]) -> String {
    ns_exec(ns, "ethtool", args)
}

fn sysctl_path(key: &str) -> PathBuf {
    Path::new("/proc/sys").join(key.replace('.', "/"))
}

/// Sets sysctl `key` (dotted, e.g. `net.ipv4.ip_forward`) to `value` inside
/// `ns`. Network sysctls under /proc/sys/net belong to the namespace of the
/// writing thread, so this writes the file from a thread inside `ns`.
pub fn try_ns_sysctl(ns: &str, key: &str, value: &str) -> Result<(), String> {
    let path = sysctl_path(key);
    try_run_in(ns, || {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| {
                format!(
                    "sysctl {key}={value} in netns {ns}: open {}: {e}",
                    path.display()
                )
            })?;
        f.write_all(value.as_bytes())
            .map_err(|e| format!("sysctl {key}={value} in netns {ns}: write: {e}"))
    })?
}

/// [`try_ns_sysctl`] that panics on failure.
#[track_caller]
pub fn ns_sysctl(ns: &str, key: &str, value: &str) {
    try_ns_sysctl(ns, key, value).unwrap_or_else(|e| panic!("{e}"))
}

/// Reads sysctl `key` inside `ns` (trimmed).
#[track_caller]
pub fn ns_sysctl_get(ns: &str, key: &str) -> String {
    let path = sysctl_path(key);
    run_in(ns, || std::fs::read_to_string(&path))
        .unwrap_or_else(|e| panic!("read sysctl {key} in netns {ns}: {e}"))
        .trim()
        .to_string()
}

/// Interface index of `dev` inside `ns`.
#[track_caller]
pub fn ifindex(ns: &str, dev: &str) -> u32 {
    let c = CString::new(dev).expect("interface name contains NUL");
    // SAFETY: `c` is NUL-terminated and outlives the call.
    let idx = run_in(ns, || unsafe { libc::if_nametoindex(c.as_ptr()) });
    assert!(idx != 0, "no interface {dev} in netns {ns}");
    idx
}

/// MAC address (`aa:bb:cc:dd:ee:ff`) of `dev` inside `ns`.
#[track_caller]
pub fn link_mac(ns: &str, dev: &str) -> String {
    let out = ns_ip(ns, &["-o", "link", "show", "dev", dev]);
    let mut words = out.split_whitespace();
    while let Some(w) = words.next() {
        if w == "link/ether" {
            if let Some(mac) = words.next() {
                return mac.to_string();
            }
        }
    }
    panic!("no link/ether address for {dev} in netns {ns}: {out}")
}

/// `/run/netns/NAME`.
pub fn netns_path(ns: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(ns)
}

/// Moves the calling thread into the network namespace `ns`.
fn enter(ns: &str) -> Result<(), String> {
    let path = netns_path(ns);
    let f = File::open(&path).map_err(|e| format!("open {}: {e}", path.display()))?;
    // SAFETY: plain syscall on a valid fd; only this thread changes namespace.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(format!(
            "setns({}, CLONE_NEWNET): {}",
            path.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Runs `f` on a fresh OS thread inside network namespace `ns` and returns its
/// result. The thread ends afterwards, so nothing else ever runs in that
/// namespace by accident. Errors entering the namespace are returned.
pub fn try_run_in<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> Result<T, String> {
    thread::scope(|s| {
        let h = thread::Builder::new()
            .name(format!("netns:{ns}"))
            .spawn_scoped(s, move || {
                enter(ns).map_err(|e| format!("entering netns {ns}: {e}"))?;
                Ok(f())
            })
            .map_err(|e| format!("spawning a thread for netns {ns}: {e}"))?;
        match h.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Runs `f` on a fresh OS thread inside network namespace `ns` and returns its
/// result; panics (naming the namespace) if it cannot enter it. A panic in
/// `f` is propagated.
#[track_caller]
pub fn run_in<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    try_run_in(ns, f).unwrap_or_else(|e| panic!("{e}"))
}

/// Spawns a thread that enters network namespace `ns` and then runs `f`.
/// Threads it spawns itself inherit the namespace. If entering fails the
/// thread panics (visible through `join`).
pub fn spawn_in<T, F>(ns: &str, f: F) -> JoinHandle<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let ns = ns.to_string();
    thread::Builder::new()
        .name(format!("netns:{ns}"))
        .spawn(move || {
            enter(&ns).unwrap_or_else(|e| panic!("entering netns {ns}: {e}"));
            f()
        })
        .expect("spawning a thread")
}

static PREFIX_COUNTER: AtomicU32 = AtomicU32::new(0);

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    if n == 0 {
        return "0".into();
    }
    let mut v = Vec::new();
    while n > 0 {
        v.push(DIGITS[(n % 36) as usize]);
        n /= 36;
    }
    v.reverse();
    String::from_utf8(v).unwrap()
}

/// A short name prefix unique to this process and call: `lb` + the pid in
/// base 36 (padded to 4) + a per-process counter in base 36, e.g. `lb0p3k1`.
pub fn unique_prefix() -> String {
    let n = PREFIX_COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "lb{:0>4}{}",
        base36(std::process::id() as u64),
        base36(n as u64)
    )
}

/// Names of the namespaces `ip netns list` shows.
pub fn list_netns() -> Vec<String> {
    let out = try_run("ip", &["netns", "list"]).unwrap_or_default();
    out.lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// A named network namespace, deleted on drop (after SIGKILL-ing any process
/// still inside it).
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// `ip netns add NAME`; panics on failure. A namespace of the same name
    /// left over from an earlier process (names embed the pid) is replaced.
    #[track_caller]
    pub fn create(name: &str) -> NetNs {
        NetNs::try_create(name).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `ip netns add NAME`, returning errors.
    pub fn try_create(name: &str) -> Result<NetNs, String> {
        cleanup_stale_once();
        {
            let _g = NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = try_run("ip", &["netns", "add", name]) {
                if !e.contains("exists") {
                    return Err(e);
                }
                kill_pids_in(name);
                let _ = try_run("ip", &["netns", "delete", name]);
                try_run("ip", &["netns", "add", name])?;
            }
        }
        register(name);
        let ns = NetNs {
            name: name.to_string(),
        };
        ns_ip(name, &["link", "set", "lo", "up"]);
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/NAME`.
    pub fn path(&self) -> PathBuf {
        netns_path(&self.name)
    }

    /// `ip -n NAME ARGS...`; panics on failure.
    #[track_caller]
    pub fn ip(&self, args: &[&str]) -> String {
        ns_ip(&self.name, args)
    }

    /// Runs `f` inside this namespace (see [`run_in`]).
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        run_in(&self.name, f)
    }
}

impl AsRef<str> for NetNs {
    fn as_ref(&self) -> &str {
        &self.name
    }
}

impl std::fmt::Display for NetNs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        delete_netns(&self.name);
    }
}

/// SIGKILLs every process (other than this one) inside namespace `ns`.
fn kill_pids_in(ns: &str) {
    let me = std::process::id();
    if let Ok(out) = try_run("ip", &["netns", "pids", ns]) {
        for pid in out.split_whitespace().filter_map(|p| p.parse::<u32>().ok()) {
            if pid != me && pid > 1 {
                // SAFETY: plain syscall.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
        }
    }
}

/// Kills processes in `ns` and deletes it; never panics (runs in `Drop`).
fn delete_netns(ns: &str) {
    kill_pids_in(ns);
    let _g = NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if let Err(e) = try_run("ip", &["netns", "delete", ns]) {
        if netns_path(ns).exists() {
            eprintln!("lb-tests: deleting netns {ns}: {e}");
        }
    }
    let _ = std::fs::remove_file(Path::new(REGISTRY_DIR).join(ns));
}

fn register(name: &str) {
    if std::fs::create_dir_all(REGISTRY_DIR).is_ok() {
        let _ = std::fs::write(
            Path::new(REGISTRY_DIR).join(name),
            std::process::id().to_string(),
        );
    }
}

fn cleanup_stale_once() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        cleanup_stale();
    });
}

/// Deletes namespaces that this library created in processes that no longer
/// exist (e.g. a test run that was SIGKILLed). Only namespaces recorded in
/// [`REGISTRY_DIR`] are considered. Returns the names deleted. Called once per
/// process automatically before the first namespace is created.
pub fn cleanup_stale() -> Vec<String> {
    let mut removed = Vec::new();
    let Ok(dir) = std::fs::read_dir(REGISTRY_DIR) else {
        return removed;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let mut owner = String::new();
        if File::open(entry.path())
            .and_then(|mut f| f.read_to_string(&mut owner))
            .is_err()
        {
            continue;
        }
        let Ok(pid) = owner.trim().parse::<u32>() else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        if netns_path(&name).exists() {
            delete_netns(&name);
            removed.push(name);
        } else {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    removed
}
