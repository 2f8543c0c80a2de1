//! UDP services in the direct-server-return modes end to end: `lbd` hands each client
//! datagram on unchanged (`dsr_l2`: to the backend's MAC; `ipip`, `gue`: wrapped, and
//! `lb-decap` on the backend strips the wrapping); a UDP echo server bound to the VIP on
//! each backend answers the client directly from the VIP. Per mode: 30 clients, each from
//! a socket of its own, send 10 datagrams each; every answer comes from the VIP:port and,
//! per client, from one backend that saw the client's own address; the three backends
//! share the clients; nothing reaches the echo servers on the backends' own addresses
//! (no datagram was rewritten to a backend); the UDP probes reached the VIP through the
//! tunnels and found every backend healthy.
use std::{
    collections::BTreeSet,
    net::SocketAddr,
    time::{Duration, Instant},
};

use lb_tests::{
    dsr_lab::{hold_vip_on_lo, Decap},
    udp_echo::{exchange, open_clients, UdpEcho},
    Lab, LabConfig, LabSpec, RunningLb, VIP,
};

const PORT: u16 = 53;
const CLIENTS: usize = 30;
const DATAGRAMS: usize = 10;

fn through(mode: &str) {
    let lab = Lab::build(&LabSpec::three_zones());
    let n = lab.backend_count();
    let _decaps: Vec<Decap> = if mode == "dsr_l2" {
        (0..n).for_each(|i| hold_vip_on_lo(lab.backend_ns(i), VIP));
        Vec::new()
    } else {
        (0..n).map(|i| Decap::attach(&lab, i, VIP)).collect()
    };
    let on_vip: Vec<UdpEcho> = (0..n)
        .map(|i| UdpEcho::start(lab.backend_ns(i), VIP, PORT, &lab.backend_spec(i).name))
        .collect();
    let on_own: Vec<UdpEcho> = (0..n)
        .map(|i| UdpEcho::start(lab.backend_ns(i), lab.backend_addr(i), PORT, "own-address"))
        .collect();
    let mut config = LabConfig::new(&lab).yaml();
    config.push_str(&format!(
        "  - name: dns\n    vip: {VIP}\n    port: {PORT}\n    protocol: udp\n    mode: {mode}\n    \
         health: {{ type: udp, send: ping, expect: ping, interval: 200ms, timeout: 200ms }}\n    \
         backends:\n"
    ));
    for i in 0..n {
        config.push_str(&format!(
            "      - {{ address: {}, port: {PORT}, zone: {} }}\n",
            lab.backend_addr(i),
            lab.backend_spec(i).zone
        ));
    }
    let lb = RunningLb::start(lab, &config);
    for i in 0..n {
        let addr = lb.lab.backend_addr(i);
        let needle = format!("dns/{addr}:{PORT}");
        let verdict = first_verdict_of(&lb, &needle);
        assert_eq!(verdict, "healthy", "{mode}: backend {addr}");
    }

    let clients = open_clients(lb.lab.client_ns(), CLIENTS);
    let vip = SocketAddr::from((VIP, PORT));
    let wait = Duration::from_millis(500);
    let records = exchange(&clients, vip, DATAGRAMS, wait, Duration::from_secs(60));
    let mut backends = BTreeSet::new();
    for r in &records {
        assert_eq!(
            (r.unanswered, r.answers.len()),
            (0, DATAGRAMS),
            "{mode}: client {} got no answer to some datagrams; lbd log:\n{}",
            r.local,
            lb.lbd.log()
        );
        let heard: BTreeSet<&str> = r.answers.iter().map(|a| a.backend.as_str()).collect();
        assert_eq!(heard.len(), 1, "{mode}: client {} heard {heard:?}", r.local);
        for a in &r.answers {
            assert_eq!(
                a.from, vip,
                "{mode}: client {}: an answer not from the VIP",
                r.local
            );
            assert_eq!(
                a.seen,
                SocketAddr::from((lb.lab.client_addr(), r.local.port())),
                "{mode}: the backend must see the client's own address and port"
            );
        }
        backends.insert(r.answers[0].backend.clone());
    }
    assert_eq!(
        backends.len(),
        n,
        "{mode}: the clients spread: {backends:?}"
    );
    let misrouted: u64 = on_own.iter().map(UdpEcho::served).sum();
    assert_eq!(
        misrouted, 0,
        "{mode}: datagrams reached a backend's own address"
    );
    drop(on_vip);
}

/// lbd's first verdict on backend `at` (`service/address:port`): `healthy` or
/// `unhealthy`. Panics naming the log when there is none within 30 s.
fn first_verdict_of(lb: &RunningLb, at: &str) -> String {
    let needle = format!("{at}: unknown -> ");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = lb.lbd.log();
        if let Some(i) = log.find(&needle) {
            let rest = &log[i + needle.len()..];
            return rest.split_whitespace().next().unwrap_or("").to_string();
        }
        assert!(Instant::now() < deadline, "no verdict on {at}; log:\n{log}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn udp_clients_are_served_directly_by_dsr_l2() {
    through("dsr_l2");
}

#[test]
fn udp_clients_are_served_directly_by_ipip() {
    through("ipip");
}

#[test]
fn udp_clients_are_served_directly_by_gue() {
    through("gue");
}
