//! Checks of the lab itself (no XDP program involved): namespaces, wiring,
//! kernel forwarding through the LB namespace, backends, client, daemons and
//! teardown. Needs root (creates network namespaces).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::{Duration, Instant};

use lb_tests::client::http_get_checked;
use lb_tests::netns::{self, list_netns};
use lb_tests::process::STOP_GRACE;
use lb_tests::{burst, hold_via, http_get_via, Daemon, FailureKind, Lab, LabSpec};

const PORT: u16 = 8080;
const T: Duration = Duration::from_secs(5);

fn ns_of_pid(pid: u32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/ns/net"))
        .ok()
        .map(|p| p.display().to_string())
}

fn ns_of_file(path: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).unwrap();
    format!("net:[{}]", m.ino())
}

#[test]
fn kernel_routing_reaches_backends_with_client_address() {
    let lab = Lab::build(&LabSpec::with_backends(3));
    let servers = lab.start_backends(PORT);
    assert_eq!(lab.lb_interfaces(), vec!["lbc", "lbb"]);
    assert_eq!(lab.client_addr(), Ipv4Addr::new(10, 10, 0, 2));

    for (i, server) in servers.iter().enumerate() {
        let addr = lab.backend_addr(i);
        assert_eq!(addr, Ipv4Addr::new(10, 1, 0, 11 + i as u8));
        let r = http_get_via(lab.client_ns(), addr, PORT, T)
            .unwrap_or_else(|e| panic!("backend {i}: {e}"));
        assert_eq!(r.backend, lab.backend_spec(i).name);
        assert_eq!(r.remote, SocketAddr::new(IpAddr::V4(addr), PORT));
        assert_eq!(r.local.ip(), IpAddr::V4(lab.client_addr()));
        // Plain forwarding: the backend sees the client's real address/port.
        assert_eq!(r.peer_seen_by_backend, r.local);
        assert_eq!(server.served(), 1);
        assert_eq!(server.peers(), vec![Ipv4Addr::new(10, 10, 0, 2)]);
    }

    // Many sequential connections from one thread.
    let b = burst(
        lab.client_ns(),
        lab.backend_addr(1),
        PORT,
        50,
        T,
        Duration::from_secs(30),
    );
    assert!(b.failed.is_empty(), "{:?}", b.failed);
    assert_eq!(b.ok, 50);
    assert_eq!(b.attempted, 50);
    assert_eq!(b.per_backend.get("b2"), Some(&50));
    assert_eq!(servers[1].served(), 51);

    // A long-lived connection.
    let mut held = hold_via(lab.client_ns(), lab.backend_addr(2), PORT, T).unwrap();
    assert_eq!(held.backend, "b3");
    assert_eq!(held.echo("ping\n", T).unwrap(), "ping\n");
    let deadline = Instant::now() + T;
    while servers[2].held() != 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(servers[2].held(), 1);
    assert_eq!(held.echo("pong pong\n", T).unwrap(), "pong pong\n");
    held.close();
    let deadline = Instant::now() + T;
    while servers[2].held() != 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(servers[2].held(), 0);

    // A client that sends nothing still gets an answer (after ~200 ms).
    let quiet = netns::run_in(lab.client_ns(), || {
        use std::io::Read;
        let mut s = std::net::TcpStream::connect_timeout(
            &SocketAddr::new(IpAddr::V4(lab.backend_addr(0)), PORT),
            T,
        )
        .unwrap();
        s.set_read_timeout(Some(T)).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    });
    assert!(quiet.contains("backend=b1 peer=10.10.0.2:"), "{quiet}");

    // A VIP is not routed anywhere without the XDP program: the LB answers the SYN
    // with an ICMP network unreachable.
    let e = netns::run_in(lab.client_ns(), || {
        http_get_checked(Ipv4Addr::new(10, 0, 0, 100), 80, Duration::from_secs(2))
    })
    .unwrap_err();
    assert!(
        e.kind == FailureKind::Other && e.message.contains("Network is unreachable"),
        "{e:?}"
    );

    // Wiring details the XDP program relies on.
    assert_eq!(
        netns::ns_sysctl_get(lab.lb_ns(), "net.ipv4.ip_forward"),
        "1"
    );
    for dev in ["all", "default", "lbc", "lbb"] {
        let key = format!("net.ipv4.conf.{dev}.rp_filter");
        assert_eq!(netns::ns_sysctl_get(lab.lb_ns(), &key), "0", "{key}");
    }
    for (ns, dev) in [
        (lab.client_ns(), "cl0"),
        (lab.lb_ns(), "lbc"),
        (lab.lb_ns(), "lbb"),
        (lab.switch_ns(), "swlb"),
        (lab.switch_ns(), "swb3"),
        (lab.backend_ns(0), "eth0"),
    ] {
        let k = lab.exec(ns, "ethtool", &["-k", dev]);
        assert!(k.contains("tx-checksumming: off"), "{ns} {dev}: {k}");
        assert!(k.contains("generic-receive-offload: on"), "{ns} {dev}: {k}");
    }
    assert!(netns::ifindex(lab.lb_ns(), "lbb") > 0);
    lab.add_static_neighbors();
    let neigh = lab.ip(lab.lb_ns(), &["neigh", "show", "dev", "lbb"]);
    assert!(
        neigh.contains("10.1.0.13") && neigh.contains("PERMANENT"),
        "{neigh}"
    );

    // Unplugging a backend at the switch makes it unreachable, replugging
    // restores it.
    lab.set_backend_link(0, false);
    assert!(http_get_via(
        lab.client_ns(),
        lab.backend_addr(0),
        PORT,
        Duration::from_millis(500)
    )
    .is_err());
    lab.set_backend_link(0, true);
    http_get_via(lab.client_ns(), lab.backend_addr(0), PORT, T).unwrap();
}

#[test]
fn one_nic_lab_routes_replies_through_the_lb() {
    let lab = Lab::build(&LabSpec::with_backends(2).one_nic(true));
    let _servers = lab.start_backends(PORT);
    assert_eq!(lab.lb_interfaces(), vec!["lbb"]);
    assert_eq!(lab.client_addr(), Ipv4Addr::new(10, 1, 0, 200));
    let route = lab.ip(lab.backend_ns(0), &["route", "get", "10.1.0.200"]);
    assert!(route.contains("via 10.1.0.1"), "{route}");
    for i in 0..2 {
        let r = http_get_via(lab.client_ns(), lab.backend_addr(i), PORT, T).unwrap();
        assert_eq!(
            r.peer_seen_by_backend.ip(),
            IpAddr::V4(Ipv4Addr::new(10, 1, 0, 200))
        );
    }
    let b = burst(
        lab.client_ns(),
        lab.backend_addr(0),
        PORT,
        20,
        T,
        Duration::from_secs(20),
    );
    assert!(b.failed.is_empty(), "{:?}", b.failed);
}

#[test]
fn namespaces_and_processes_are_gone_after_drop() {
    let lab = Lab::build(&LabSpec::with_backends(2));
    let names = lab.namespaces();
    assert_eq!(names.len(), 5);
    let listed = list_netns();
    for n in &names {
        assert!(listed.contains(n), "{n} not in {listed:?}");
        assert!(n.starts_with(lab.prefix()));
    }

    // A daemon runs inside the LB namespace and is stopped with SIGTERM.
    let mut d = Daemon::spawn_in_ns(
        lab.lb_ns(),
        Path::new("/bin/sh"),
        &["-c", "echo started; exec sleep 60"],
    );
    d.wait_for_log("started", T).unwrap();
    let pid = d.pid();
    assert_eq!(
        ns_of_pid(pid).unwrap(),
        ns_of_file(&netns::netns_path(lab.lb_ns()))
    );
    // SIGTERM ends it (no SIGKILL after the grace period was needed).
    let st = d.stop().expect("reaped");
    assert_eq!(st.signal(), Some(libc::SIGTERM), "{st:?}");
    drop(d);
    assert!(!Path::new(&format!("/proc/{pid}")).exists());

    // One that ignores SIGTERM is SIGKILLed after the grace period.
    let mut d = Daemon::spawn_in_ns(
        lab.lb_ns(),
        Path::new("/bin/sh"),
        &[
            "-c",
            "trap '' TERM; echo ready; while :; do sleep 0.1; done",
        ],
    );
    d.wait_for_log("ready", T).unwrap();
    let start = Instant::now();
    let st = d.stop().expect("reaped");
    assert_eq!(st.signal(), Some(libc::SIGKILL), "{st:?}");
    // A lower bound: load can only lengthen it.
    assert!(start.elapsed() >= STOP_GRACE, "{:?}", start.elapsed());
    drop(d);

    // A stray process left in a namespace is killed when the lab goes.
    let stray = std::process::Command::new("nsenter")
        .arg(format!(
            "--net={}",
            netns::netns_path(lab.backend_ns(0)).display()
        ))
        .args(["--", "sleep", "60"])
        .spawn()
        .unwrap();
    let stray_pid = stray.id();
    let servers = lab.start_backends(PORT);
    drop(lab);
    drop(servers);
    let listed = list_netns();
    for n in &names {
        assert!(!listed.contains(n), "{n} still listed: {listed:?}");
    }
    let mut stray = stray;
    let deadline = Instant::now() + T;
    let mut gone = false;
    while Instant::now() < deadline {
        if stray.try_wait().unwrap().is_some() {
            gone = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(gone, "stray process {stray_pid} survived");
}

#[test]
fn a_panicking_test_still_tears_down() {
    // Outside the caught panic and the threads, so that a machine without root fails
    // this test with the same message as the others.
    lb_tests::needs::lab();
    let mut names = Vec::new();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let lab = Lab::build(&LabSpec::with_backends(1));
        let _s = lab.start_backends(PORT);
        let _d = Daemon::spawn_in_ns(lab.lb_ns(), Path::new("/bin/sleep"), &["60"]);
        names = lab.namespaces();
        panic!("on purpose");
    }));
    assert!(r.is_err());
    assert_eq!(names.len(), 4);
    let listed = list_netns();
    for n in &names {
        assert!(!listed.contains(n), "{n} still listed");
    }
    // The daemon log was kept (and its tail printed) because of the panic.
    let dir = std::env::temp_dir().join("lb-tests-logs");
    let lb_ns = &names[1];
    let kept: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(lb_ns.as_str()))
        .collect();
    assert_eq!(kept.len(), 1);
    std::fs::remove_file(kept[0].path()).unwrap();
}

#[test]
fn two_labs_build_concurrently() {
    // Outside the caught panic and the threads, so that a machine without root fails
    // this test with the same message as the others.
    lb_tests::needs::lab();
    let spawn = |one_nic: bool| {
        std::thread::spawn(move || {
            let lab = Lab::build(&LabSpec::with_backends(3).one_nic(one_nic));
            let _s = lab.start_backends(PORT);
            let b = burst(
                lab.client_ns(),
                lab.backend_addr(2),
                PORT,
                10,
                T,
                Duration::from_secs(20),
            );
            assert!(b.failed.is_empty(), "{:?}", b.failed);
            (lab.prefix().to_string(), lab.namespaces())
        })
    };
    let handles = [spawn(false), spawn(false), spawn(true)];
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_ne!(results[0].0, results[1].0);
    assert_ne!(results[1].0, results[2].0);
    let listed = list_netns();
    for (_, names) in &results {
        for n in names {
            assert!(!listed.contains(n), "{n} still listed");
        }
    }
}

#[test]
fn backend_server_rejects_a_busy_port_and_stops_on_drop() {
    let lab = Lab::build(&LabSpec::with_backends(1));
    let s = lb_tests::BackendServer::start(lab.backend_ns(0), lab.backend_addr(0), PORT, "x");
    let e = lb_tests::BackendServer::try_start(lab.backend_ns(0), lab.backend_addr(0), PORT, "y")
        .err()
        .expect("second bind must fail");
    assert!(e.contains("bind"), "{e}");
    drop(s);
    // Nothing listens any more, and the port is free again.
    let e = netns::run_in(lab.client_ns(), || {
        http_get_checked(lab.backend_addr(0), PORT, T)
    })
    .unwrap_err();
    assert_eq!(e.kind, FailureKind::Refused, "{e:?}");
    let _s2 = lb_tests::BackendServer::start(lab.backend_ns(0), lab.backend_addr(0), PORT, "z");
    let r = http_get_via(lab.client_ns(), lab.backend_addr(0), PORT, T).unwrap();
    assert_eq!(r.backend, "z");
}
