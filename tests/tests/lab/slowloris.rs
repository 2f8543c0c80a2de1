//! A local user holding connections to `/metrics` (idle ones and half-sent headers, from
//! uid 65534) cannot take `lbd`'s descriptors: lbd keeps at most the cap of them, closes
//! the rest by their timeouts, and `/healthz`, the admin API and the health probes keep
//! working throughout. lbd runs with a descriptor limit the attack would exhaust if it
//! could hold every connection it opens.
use std::{
    collections::HashSet,
    fs,
    io::{ErrorKind, Write},
    net::{SocketAddr, TcpStream},
    path::Path,
    time::{Duration, Instant},
};

use lb_tests::{
    http,
    scenario::{fast_health, SLACK},
    LabConfig, LabSpec, RunningLb,
};

const METRICS: &str = lb_tests::lbd_metrics::METRICS_LISTEN;
const CAP: usize = 32;
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const IDLE_TIMEOUT: Duration = Duration::from_secs(15);
/// Connections of each kind the attacker opens: together far over the cap, and over
/// what lbd's descriptor limit (`NOFILE`) leaves once its own are open.
const EACH: usize = 250;
const NOFILE: &str = "512";
const NOBODY: libc::uid_t = 65534;

/// lbd's descriptors that are accepted TCP connections on `port` (its listening socket
/// excluded), from its /proc: sockets of its network namespace by inode, then its fds.
fn lbd_connections_on(pid: u32, port: u16) -> usize {
    let table = fs::read_to_string(format!("/proc/{pid}/net/tcp")).expect("lbd's /proc/net/tcp");
    let inodes: HashSet<String> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let local_port = u16::from_str_radix(f[1].rsplit(':').next()?, 16).ok()?;
            let listening = f[3] == "0A";
            (local_port == port && !listening).then(|| f[9].to_string())
        })
        .collect();
    fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("lbd's fds")
        .flatten()
        .filter_map(|fd| fs::read_link(fd.path()).ok())
        .filter_map(|target| {
            let t = target.to_string_lossy().into_owned();
            Some(t.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .filter(|inode| inodes.contains(inode))
        .count()
}

/// Waits until lbd has let go of the test's last connection (it holds at most `CAP - 1`
/// attacking ones after the first scrape): its slot is free once its descriptor is
/// closed, so the next request of the test takes that slot instead of evicting.
fn our_connection_closed(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while lbd_connections_on(pid, 9464) > CAP - 1 {
        assert!(
            Instant::now() < deadline,
            "lbd kept the test's connection open"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Whether lbd closed the connection (EOF or reset), without waiting.
fn closed_by_peer(stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).expect("nonblocking");
    let closed = match stream.peek(&mut [0u8; 1]) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
        Err(_) => true,
    };
    stream.set_nonblocking(false).expect("blocking");
    closed
}

fn closed(held: &[TcpStream]) -> Vec<usize> {
    (0..held.len())
        .filter(|&i| closed_by_peer(&held[i]))
        .collect()
}

/// One sample's value from the exposition text.
fn sample(text: &str, series: &str) -> f64 {
    lb_tests::lbd_metrics::sample(text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

struct Listener<'a>(&'a str);

impl Listener<'_> {
    fn counter(&self, text: &str, name: &str) -> u64 {
        sample(text, &format!("{name}_total{{listener=\"{}\"}}", self.0)) as u64
    }
    fn closed(&self, text: &str, reason: &str) -> u64 {
        sample(
            text,
            &format!(
                "lb_listener_connections_closed_by_lbd_total{{listener=\"{}\",reason=\"{reason}\"}}",
                self.0
            ),
        ) as u64
    }
}

/// Waits (bounded) until exactly `count` of `held` are closed by lbd; their indices.
fn wait_closed(held: &[TcpStream], count: usize) -> Vec<usize> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let shut = closed(held);
        assert!(
            shut.len() <= count,
            "{} closed, {count} expected",
            shut.len()
        );
        if shut.len() == count {
            return shut;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} closed, {count} expected",
            shut.len(),
            held.len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn holding_connections_to_metrics_cannot_starve_lbd() {
    let lab = lb_tests::Lab::build(&LabSpec::with_backends(2));
    let config = format!(
        "{}limits: {{ max_backends: 16 }}\nmetrics:\n  connections: {{ max: {CAP}, header_timeout: {}s, idle_timeout: {}s }}\n",
        LabConfig::new(&lab).policy(&[&fast_health()]).yaml(),
        HEADER_TIMEOUT.as_secs(),
        IDLE_TIMEOUT.as_secs(),
    );
    let nofile = format!("--nofile={NOFILE}:{NOFILE}");
    let mut lb = RunningLb::start_wrapped(lab, &config, &["prlimit", &nofile]);
    lb.wait_healthy(0, &[0, 1], Duration::from_secs(10));
    let mark = lb.lbd.log_len();
    let pid = lb.lbd.pid();
    let addr: SocketAddr = METRICS.parse().unwrap();
    let metrics = |lb: &RunningLb, path: &'static str| {
        lb.lab
            .run_in(lb.lab.lb_ns(), move || {
                http::tcp(addr, "GET", path, &[], None)
            })
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    };
    // Connections the test itself makes to the metrics listener.
    let mut ours = 0u64;
    assert_eq!(lbd_connections_on(pid, 9464), 0);

    // The attack: idle connections and half-sent headers, alternating, from uid 65534.
    // The uid is dropped for this thread alone (the raw syscall, not libc's wrapper,
    // which would change every thread of the test).
    let held: Vec<TcpStream> = lb.lab.run_in(lb.lab.lb_ns(), move || {
        let ids = (NOBODY, NOBODY, NOBODY);
        // SAFETY: setresuid on the calling thread only; it exits after this closure.
        let rc = unsafe { libc::syscall(libc::SYS_setresuid, ids.0, ids.1, ids.2) };
        assert_eq!(rc, 0, "setresuid: {}", std::io::Error::last_os_error());
        (0..2 * EACH)
            .map(|i| {
                let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                    .unwrap_or_else(|e| panic!("connection {i}: {e}"));
                if i % 2 == 1 {
                    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: lbd\r\nX-Slow: ")
                        .expect("half a header");
                }
                s
            })
            .collect()
    });
    let attack_done = Instant::now();
    let total = held.len();
    // Older connections make room for newer ones (empty ones before those whose header
    // lbd had begun to read, which depends on when it read them): exactly `total - CAP`
    // are closed, never the newest.
    let shut = wait_closed(&held, total - CAP);
    assert!(
        !shut.contains(&(total - 1)),
        "the newest was closed: {shut:?}"
    );
    let held_by_lbd = lbd_connections_on(pid, 9464);
    assert_eq!(held_by_lbd, CAP, "lbd holds the cap, no more");
    eprintln!("descriptors lbd holds for {total} attacking connections: {held_by_lbd}");

    // A scrape gets in (making room: the oldest attacking connection goes) and counts
    // exactly what happened.
    let text = metrics(&lb, "/metrics").body;
    ours += 1;
    our_connection_closed(pid);
    let m = Listener("metrics");
    assert_eq!(
        m.counter(&text, "lb_listener_connections_accepted"),
        total as u64 + ours
    );
    assert_eq!(m.closed(&text, "cap_evicted"), (total - CAP) as u64 + 1);
    assert_eq!(m.closed(&text, "cap_refused"), 0);
    assert_eq!(m.closed(&text, "header_timeout"), 0);
    assert_eq!(m.closed(&text, "idle_timeout"), 0);
    assert_eq!(
        sample(&text, "lb_listener_connections_open{listener=\"metrics\"}"),
        CAP as f64
    );
    assert_eq!(sample(&text, "process_max_fds"), 512.0);
    let open_fds = sample(&text, "process_open_fds");
    assert!(open_fds < 256.0, "process_open_fds {open_fds}");
    eprintln!("process_open_fds during the hold: {open_fds} (limit {NOFILE})");
    assert!(
        attack_done.elapsed() < HEADER_TIMEOUT,
        "the counts above assume no timeout fired yet (the machine is too slow)"
    );
    let survivors: Vec<usize> = {
        let shut = wait_closed(&held, total - CAP + 1);
        (0..total).filter(|i| !shut.contains(i)).collect()
    };
    let half_sent = survivors.iter().filter(|i| *i % 2 == 1).count() as u64;
    let idle = survivors.len() as u64 - half_sent;

    // Until the timeouts have closed every attacking connection: /healthz, the admin
    // API and the probes keep working, and lbd never holds more than the cap.
    let bound = IDLE_TIMEOUT + SLACK + Duration::from_secs(5);
    let mut most = 0;
    loop {
        assert_eq!(metrics(&lb, "/healthz").status, 200);
        ours += 1;
        our_connection_closed(pid);
        let health = http::unix(&lb.socket(), "GET", "/v1/health", None);
        assert_eq!(health.status, 200);
        let states: Vec<String> = health
            .json()
            .as_array()
            .expect("a list of backends")
            .iter()
            .map(|b| b["state"].as_str().unwrap_or_default().to_string())
            .collect();
        assert_eq!(states, ["healthy", "healthy"], "{}", health.body);
        most = most.max(lbd_connections_on(pid, 9464));
        assert!(most <= CAP, "lbd held {most} connections");
        if closed(&held).len() == total {
            break;
        }
        assert!(
            attack_done.elapsed() < bound,
            "attacking connections still open after {bound:?}: {:?}",
            (0..total)
                .filter(|i| !closed_by_peer(&held[*i]))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let after = lbd_connections_on(pid, 9464);
    eprintln!("descriptors lbd holds once the timeouts ran: {after} (at most {most} during)");
    assert_eq!(after, 0);

    let text = metrics(&lb, "/metrics").body;
    ours += 1;
    assert_eq!(m.closed(&text, "header_timeout"), half_sent);
    assert_eq!(m.closed(&text, "idle_timeout"), idle);
    assert_eq!(m.closed(&text, "cap_evicted"), (total - CAP) as u64 + 1);
    assert_eq!(m.closed(&text, "cap_refused"), 0);
    assert_eq!(
        m.counter(&text, "lb_listener_connections_accepted"),
        total as u64 + ours
    );
    // The probes never failed: no health change since the attack began.
    let log = lb.lbd.log();
    let tail = &log[mark..];
    assert!(
        !tail
            .lines()
            .any(|l| l.contains("-> unhealthy") || l.contains("Too many open files")),
        "{tail}"
    );
    assert!(
        tail.contains("metrics listener: 32 connections open (the cap)"),
        "the refusals are logged: {tail}"
    );
    drop(held);
}

/// lbd refuses to start, before it touches the kernel, when its descriptor limit cannot
/// cover its listeners' caps, its probes and its maps; one descriptor more and it starts.
/// Runs in a namespace of its own (lbd attaches to its `lo`).
#[test]
fn lbd_refuses_a_descriptor_limit_below_its_budget() {
    // No lab fixture here to check what the machine has.
    lb_tests::needs::lab();
    let prefix = lb_tests::netns::unique_prefix();
    let ns = lb_tests::NetNs::create(&format!("{prefix}fd"));
    let dir = std::env::temp_dir().join(format!("{prefix}-nofile"));
    let pin_dir = format!("/sys/fs/bpf/{prefix}-nofile");
    /// Removes what the test made, also when it fails (the namespace goes with `ns`).
    struct Cleanup(std::path::PathBuf, String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = lb_userspace::kernel::pins::PinDir::new(&self.1).remove_all();
            let _ = fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Cleanup(dir.clone(), pin_dir.clone());
    fs::create_dir_all(&dir).unwrap();
    let config = dir.join("lb.yaml");
    fs::write(
        &config,
        format!(
            "node: {{ zone: a }}\ninterfaces: [lo]\npin_dir: {pin_dir}\n\
             limits: {{ max_backends: 100 }}\napi: {{ socket: {}/lbd.sock }}\n\
             state_file: {}/state.yaml\n",
            dir.display(),
            dir.display()
        ),
    )
    .unwrap();
    let lbd = lb_tests::lbd_path();
    let config = config.to_str().unwrap();
    let args = |nofile: &'static str| vec![nofile, "--", lbd.to_str().unwrap(), "--config", config];
    // 65 + 65 (api and metrics caps, plus their sockets) + 100 probes + 68 + 256 = 554.
    let mut refused =
        lb_tests::Daemon::spawn_in_ns(ns.name(), Path::new("prlimit"), &args("--nofile=553:553"));
    let status = refused
        .wait_exit(Duration::from_secs(30))
        .expect("lbd exits by itself");
    assert_eq!(status.code(), Some(78), "{}", refused.log());
    assert_eq!(
        refused.log().lines().last().unwrap_or_default(),
        "lbd: lbd needs 554 file descriptors: 130 for the listeners (api.connections.max, \
         metrics.connections.max), 100 for health probes (limits.max_backends), 68 for maps \
         and links, 256 spare; its descriptor limit (RLIMIT_NOFILE, hard) is 553: raise \
         LimitNOFILE= in its systemd unit (deploy/systemd/lbd.service sets 65536) or \
         `ulimit -Hn`, or lower those settings"
    );
    // The pin directory may exist (lbd locks it first), but holds nothing.
    let pinned = fs::read_dir(&pin_dir).map(|d| d.count()).unwrap_or(0);
    assert_eq!(pinned, 0, "nothing was pinned in {pin_dir}");
    let mut started =
        lb_tests::Daemon::spawn_in_ns(ns.name(), Path::new("prlimit"), &args("--nofile=554:554"));
    started
        .wait_for_log("serving", Duration::from_secs(90))
        .unwrap_or_else(|e| panic!("lbd did not start with 554 descriptors: {e}"));
    assert!(started
        .log()
        .contains("descriptor limit 554 (RLIMIT_NOFILE)"));
    started.stop();
}
