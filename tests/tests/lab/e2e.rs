//! End to end: real TCP connections from a client namespace through the VIP, load
//! balanced by `lbd`'s XDP program in the LB namespace to backends in three zones.
use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use ::caps::Capability;
use lb_tests::{
    caps, jited, lab_config, lbd_path, netns, peer_xdp, running_lb, vip, Family, Lab, LabConfig,
    LabSpec, RunningLb, VIP_PORT,
};

fn three_zones(one_nic: bool) -> Lab {
    Lab::build(&LabSpec::three_zones().one_nic(one_nic))
}

/// Runs `count` connections and checks every one: it succeeded, the client saw the VIP
/// as its peer, and the backend saw the client's real address. Returns the count per
/// backend name.
fn connect_and_check(lb: &RunningLb, count: usize) -> BTreeMap<String, usize> {
    connect_and_check_in(lb, Family::V4, count)
}

/// [`connect_and_check`] through the VIP of `family`.
fn connect_and_check_in(lb: &RunningLb, family: Family, count: usize) -> BTreeMap<String, usize> {
    let result = lb.burst_in(
        family,
        count,
        Duration::from_secs(3),
        Duration::from_secs(120),
    );
    assert!(
        result.failed.is_empty() && result.ok == count,
        "{} of {count} connections failed: {:?}\nlbd log:\n{}",
        result.failed.len(),
        &result.failed[..result.failed.len().min(5)],
        lb.lbd.log()
    );
    let vip = SocketAddr::new(vip(family), VIP_PORT);
    let client = lb.lab.client_ip(family);
    for reply in &result.replies {
        assert_eq!(reply.remote, vip, "the client must see the VIP as its peer");
        assert_eq!(
            reply.peer_seen_by_backend.ip(),
            client,
            "the backend must see the client's own address"
        );
        assert_eq!(reply.peer_seen_by_backend.port(), reply.local.port());
    }
    // Besides the client, only lbd's health probes (from the LB's backend-side address)
    // reach the backends.
    let prober = lb.lab.backend_gateway_ip(family);
    for server in &lb.servers {
        let peers = server.peer_addrs();
        assert!(
            peers.iter().all(|p| p.ip() == client || p.ip() == prober),
            "{} saw a peer that is neither the client nor lbd's prober: {peers:?}",
            server.name(),
        );
    }
    result.per_backend
}

fn assert_shares(per_backend: &BTreeMap<String, usize>, weights: &[(&str, u32)], total: usize) {
    let weight_sum: u32 = weights.iter().map(|(_, w)| w).sum();
    for (name, weight) in weights {
        let got = per_backend.get(*name).copied().unwrap_or(0) as f64 / total as f64;
        let want = *weight as f64 / weight_sum as f64;
        assert!(
            (got - want).abs() <= 0.15,
            "{name}: {:.1}% of connections, weight share {:.1}% ({per_backend:?})",
            got * 100.0,
            want * 100.0
        );
    }
}

#[test]
fn three_hundred_connections_through_the_vip_follow_the_weights() {
    let lab = three_zones(false);
    let config = lab_config(&lab, &[2, 1, 1]);
    let mut lb = RunningLb::start(lab, &config);
    let per_backend = connect_and_check(&lb, 300);
    assert_shares(&per_backend, &[("b1", 2), ("b2", 1), ("b3", 1)], 300);
    let client = lb.lab.client_addr();
    let served: usize = lb
        .servers
        .iter()
        .map(|s| s.peers().iter().filter(|p| **p == client).count())
        .sum();
    assert_eq!(
        served, 300,
        "backends served exactly the client's connections"
    );

    let lb_ns = lb.lab.lb_ns().to_string();
    assert!(netns::ns_ip(&lb_ns, &["link", "show", "lbc"]).contains("xdp"));
    let log = lb.stop_lbd();
    assert!(
        log.contains("service web: new_flows=300"),
        "lbd's final counters:\n{log}"
    );
    // Stopping lbd leaves the data path pinned and forwarding...
    let after_stop = connect_and_check(&lb, 30);
    assert_eq!(after_stop.values().sum::<usize>(), 30);
    // ...until `lbd --detach` takes it down.
    let path = std::env::temp_dir().join(format!("{}-detach.yaml", lb.lab.prefix()));
    std::fs::write(&path, &config).unwrap();
    let mut detach = lb.lab.spawn_daemon(
        &lb_ns,
        &lbd_path(),
        &["--detach", "--config", path.to_str().unwrap()],
    );
    let status = detach
        .wait_exit(Duration::from_secs(10))
        .expect("lbd --detach exits");
    let _ = std::fs::remove_file(&path);
    assert!(status.success(), "{}", detach.log());
    assert!(
        detach.log().contains("detached from lbc, lbb")
            || detach.log().contains("detached from lbb, lbc"),
        "{}",
        detach.log()
    );
    for dev in ["lbc", "lbb"] {
        let link = netns::ns_ip(&lb_ns, &["link", "show", dev]);
        assert!(
            !link.contains("xdp"),
            "{dev} still has XDP after lbd --detach: {link}"
        );
    }
    assert!(
        !lb_tests::running_lb::pin_dir(&lb.lab).exists(),
        "pins removed"
    );
}

#[test]
fn three_hundred_ipv6_connections_through_an_ipv6_vip_are_each_answered_by_a_backend() {
    let lab = Lab::build(&LabSpec::three_zones().family(Family::V6));
    let config = LabConfig::new(&lab).family(Family::V6).yaml();
    let mut lb = RunningLb::start(lab, &config);
    let per_backend = connect_and_check_in(&lb, Family::V6, 300);
    assert_eq!(per_backend.values().sum::<usize>(), 300);
    assert_eq!(
        per_backend.keys().map(String::as_str).collect::<Vec<_>>(),
        ["b1", "b2", "b3"],
        "every backend takes some: {per_backend:?}"
    );
    assert_shares(&per_backend, &[("b1", 1), ("b2", 1), ("b3", 1)], 300);
    let client = lb.lab.client_ip(Family::V6);
    let served: usize = lb
        .servers
        .iter()
        .map(|s| s.peer_addrs().iter().filter(|p| p.ip() == client).count())
        .sum();
    assert_eq!(
        served, 300,
        "backends served exactly the client's connections"
    );
    println!(
        "300 IPv6 connections through [{}]:{VIP_PORT}: {per_backend:?}",
        vip(Family::V6)
    );
    let log = lb.stop_lbd();
    assert!(
        log.contains("service web: new_flows=300"),
        "lbd's final counters:\n{log}"
    );
}

#[test]
fn one_nic_gateway_balances_with_xdp_tx() {
    let lab = three_zones(true);
    let config = lab_config(&lab, &[1, 1, 1]);
    let mut lb = RunningLb::start(lab, &config);
    let per_backend = connect_and_check(&lb, 150);
    assert_shares(&per_backend, &[("b1", 1), ("b2", 1), ("b3", 1)], 150);
    let log = lb.stop_lbd();
    assert!(
        log.contains("tx_same_interface="),
        "XDP_TX was not used:\n{log}"
    );
}

#[test]
fn a_bad_config_exits_78_naming_the_field_and_attaches_nothing() {
    let lab = three_zones(false);
    let config = lab_config(&lab, &[1, 1, 1]).replace("port: 80\n", "port: 0\n");
    let path = std::env::temp_dir().join(format!("{}-bad.yaml", lab.prefix()));
    std::fs::write(&path, config).unwrap();
    let mut lbd = lab.spawn_daemon(
        lab.lb_ns(),
        &lbd_path(),
        &["--config", path.to_str().unwrap()],
    );
    let status = lbd.wait_exit(Duration::from_secs(10)).expect("lbd exits");
    let _ = std::fs::remove_file(&path);
    assert_eq!(status.code(), Some(78), "{}", lbd.log());
    assert!(
        lbd.log().contains("services[0].port: must be 1..=65535"),
        "{}",
        lbd.log()
    );
    let link = netns::ns_ip(lab.lb_ns(), &["link", "show", "lbc"]);
    assert!(!link.contains("xdp"), "{link}");
}

#[test]
fn a_nic_running_another_xdp_program_is_refused_with_78_before_anything_is_pinned() {
    let lab = three_zones(false);
    // Another program on the client NIC, held by this test (no link in lbd's pin_dir).
    let foreign = peer_xdp::attach_pass(lab.lb_ns(), "lbc");
    let link = netns::ns_ip(lab.lb_ns(), &["link", "show", "lbc"]);
    let id: u32 = link
        .split_once("prog/xdp id ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no XDP program on lbc: {link}"));
    let path = std::env::temp_dir().join(format!("{}-foreign.yaml", lab.prefix()));
    std::fs::write(&path, lab_config(&lab, &[1, 1, 1])).unwrap();
    let mut lbd = lab.spawn_daemon(
        lab.lb_ns(),
        &lbd_path(),
        &["--config", path.to_str().unwrap()],
    );
    let status = lbd.wait_exit(Duration::from_secs(10)).expect("lbd exits");
    let _ = std::fs::remove_file(&path);
    assert_eq!(status.code(), Some(78), "{}", lbd.log());
    let named =
        format!("interfaces[0]: lbc already runs XDP program id {id} that this lbd did not attach");
    assert!(lbd.log().contains(&named), "{named}:\n{}", lbd.log());
    let pins = running_lb::pin_dir(&lab);
    assert!(
        !pins.join("maps").exists() && !pins.join("links").exists(),
        "{} holds pins",
        pins.display()
    );
    // The other program is still the one on the NIC.
    let after = netns::ns_ip(lab.lb_ns(), &["link", "show", "lbc"]);
    assert!(after.contains(&format!("prog/xdp id {id} ")), "{after}");
    drop(foreign);
}

/// The capabilities `lbd` keeps once serving, as /proc shows a set.
fn serving() -> u64 {
    caps::SERVING.iter().map(|c| c.bitmask()).sum()
}

/// The (effective, permitted) capability sets of each of `pid`'s threads.
fn thread_caps(pid: u32) -> Vec<(u64, u64)> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    let field = |status: &str, name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
            .unwrap()
    };
    // A runtime's blocking-pool thread may end between the listing and the read.
    tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("status")).ok())
        .map(|status| (field(&status, "CapEff:"), field(&status, "CapPrm:")))
        .collect()
}

/// The speculation barriers in the JIT image of the XDP program on the LB's client NIC.
fn barriers_of_attached_program(lb: &RunningLb) -> usize {
    let link = netns::ns_ip(lb.lab.lb_ns(), &["link", "show", "lbc"]);
    let id: u32 = link
        .split_once("prog/xdp id ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no XDP program on lbc: {link}"));
    jited::barriers(&jited::image(id).expect("reading the program's JIT image"))
}

/// `lbd` on a three-zone lab, started by `setpriv` with only the capabilities in
/// `bounding` (setpriv's syntax, e.g. "+bpf,+net_admin").
fn start_with_capabilities(bounding: &str) -> RunningLb {
    let lab = three_zones(false);
    let config = lab_config(&lab, &[1, 1, 1]);
    let bounding = format!("--bounding-set=-all,{bounding}");
    RunningLb::start_wrapped(lab, &config, &["setpriv", &bounding, "--inh-caps=-all"])
}

/// CAP_BPF to load and CAP_NET_ADMIN to attach are enough: without CAP_PERFMON the
/// program is hardened against Spectre (speculation barriers in its machine code), and
/// `lbd` says so.
#[test]
fn lbd_needs_only_cap_bpf_and_cap_net_admin() {
    let lb = start_with_capabilities("+bpf,+net_admin");
    for (effective, _) in thread_caps(lb.lbd.pid()) {
        assert_eq!(effective, serving(), "a thread's effective set");
    }
    assert!(barriers_of_attached_program(&lb) > 0);
    assert!(
        lb.lbd.log().contains("loaded without CAP_PERFMON"),
        "{}",
        lb.lbd.log()
    );
    connect_and_check(&lb, 30);
}

/// With CAP_PERFMON as well (the systemd unit), the program is loaded unhardened, and
/// then every thread of `lbd` holds only CAP_BPF and CAP_NET_ADMIN.
#[test]
fn lbd_holds_cap_perfmon_only_while_it_loads_the_program() {
    let lb = start_with_capabilities("+bpf,+net_admin,+perfmon");
    let threads = thread_caps(lb.lbd.pid());
    assert!(threads.len() > 1, "lbd's runtime threads are running");
    for (effective, permitted) in threads {
        assert_eq!(effective, serving(), "a thread's effective set");
        assert_eq!(permitted, serving(), "a thread's permitted set");
        assert_eq!(permitted & Capability::CAP_PERFMON.bitmask(), 0);
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", lb.lbd.pid())).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.split_whitespace().eq(["NoNewPrivs:", "1"])),
        "no exec can give CAP_PERFMON back: {status}"
    );
    assert_eq!(barriers_of_attached_program(&lb), 0);
    assert!(
        lb.lbd.log().contains("CAP_PERFMON dropped"),
        "{}",
        lb.lbd.log()
    );
    connect_and_check(&lb, 30);
}
