//! UDP end to end: 100 clients in the client namespace, each from a socket (a 5-tuple)
//! of its own, send 50 datagrams each to a UDP service on the VIP, which shares its
//! VIP:port with the lab's TCP service; UDP echo servers in the backend namespaces
//! answer, and UDP probes check them. Every answer must come from the VIP:port and, for
//! each client, from one backend, which saw the client's own address; TCP to the same
//! VIP:port still works. Then one echo server stops: its probes fail on the ICMP
//! port-unreachable, and its clients move to the others while every other client stays.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::{SocketAddr, SocketAddrV4},
    time::{Duration, Instant},
};

use lb_tests::{
    lbd_metrics,
    running_lb::LabConfig,
    scenario::three_zones,
    udp_echo::{exchange, open_clients, ClientRecord, UdpEcho},
    RunningLb, BACKEND_PORT, VIP, VIP_PORT,
};

const CLIENTS: usize = 100;
const DATAGRAMS: usize = 50;

/// Each client's one backend; panics unless every datagram was answered from the VIP by
/// one backend that saw the client's own address.
fn backend_per_client(lb: &RunningLb, records: &[ClientRecord], datagrams: usize) -> Vec<String> {
    let vip = SocketAddr::from((VIP, VIP_PORT));
    records
        .iter()
        .map(|r| {
            assert_eq!(
                (r.unanswered, r.answers.len()),
                (0, datagrams),
                "client {} got no answer to some datagrams; lbd log:\n{}",
                r.local,
                lb.lbd.log()
            );
            let backends: BTreeSet<&str> = r.answers.iter().map(|a| a.backend.as_str()).collect();
            assert_eq!(backends.len(), 1, "client {} heard {backends:?}", r.local);
            for a in &r.answers {
                assert_eq!(
                    a.from, vip,
                    "client {}: an answer not from the VIP",
                    r.local
                );
                assert_eq!(
                    a.seen,
                    SocketAddr::from((lb.lab.client_addr(), r.local.port())),
                    "the backend must see the client's own address and port"
                );
            }
            r.answers[0].backend.clone()
        })
        .collect()
}

#[test]
fn udp_clients_each_stay_on_one_backend_hear_only_the_vip_and_move_off_a_dead_backend() {
    let lab = three_zones();
    let mut echoes: Vec<UdpEcho> = (0..lab.backend_count())
        .map(|i| {
            UdpEcho::start(
                lab.backend_ns(i),
                lab.backend_addr(i),
                BACKEND_PORT,
                &lab.backend_spec(i).name,
            )
        })
        .collect();
    let mut config = LabConfig::new(&lab).yaml();
    config.push_str(&format!(
        "  - name: dns\n    vip: {VIP}\n    port: {VIP_PORT}\n    protocol: udp\n    \
         health: {{ type: udp, send: ping, expect: ping, interval: 200ms, timeout: 200ms }}\n    \
         backends:\n"
    ));
    for i in 0..lab.backend_count() {
        config.push_str(&format!(
            "      - {{ address: {}, port: {BACKEND_PORT}, zone: {} }}\n",
            lab.backend_addr(i),
            lab.backend_spec(i).zone
        ));
    }
    let lb = RunningLb::start(lab, &config);

    let vip = SocketAddrV4::new(VIP, VIP_PORT);
    let clients = open_clients(lb.lab.client_ns(), CLIENTS);
    let wait = Duration::from_millis(500);
    let records = exchange(&clients, vip, DATAGRAMS, wait, Duration::from_secs(120));
    assert_eq!(records.len(), CLIENTS);
    let first = backend_per_client(&lb, &records, DATAGRAMS);
    let mut clients_per_backend: BTreeMap<&str, usize> = BTreeMap::new();
    for b in &first {
        *clients_per_backend.entry(b).or_default() += 1;
    }
    assert_eq!(
        clients_per_backend.len(),
        echoes.len(),
        "every backend takes some clients: {clients_per_backend:?}"
    );

    // One flow per client, every datagram counted (lbd samples the counters about once
    // a second, so this polls; a retransmitted datagram counts as one more packet).
    let metrics = wait_for_sample(&lb, "lb_service_new_flows_total{service=\"dns\"}", 100.0);
    let packets = lbd_metrics::sample(
        &metrics,
        "lb_service_packets_total{service=\"dns\",direction=\"to_backend\"}",
    );
    assert!(
        packets.is_some_and(|p| p >= (CLIENTS * DATAGRAMS) as f64),
        "{packets:?}"
    );

    // lbctl explain names the backend that answered a client, by its flow entry.
    let client = format!("{}:{}", lb.lab.client_addr(), records[0].local.port());
    let view = lb.lbctl().json(&[
        "explain",
        &client,
        &format!("{VIP}:{VIP_PORT}"),
        "--protocol",
        "udp",
    ]);
    let answered = lb.lab.backend_addr(lb.lab.backend_index(&first[0]));
    assert_eq!(view["service"]["name"], "dns", "{view}");
    assert_eq!(view["new_connection"]["by"], "flow_entry", "{view}");
    assert_eq!(
        view["new_connection"]["backend"]["address"],
        format!("{answered}:{BACKEND_PORT}"),
        "{view}"
    );

    // TCP on the same VIP:port is the TCP service's.
    let burst = lb.burst(20, Duration::from_secs(3), Duration::from_secs(60));
    assert_eq!(
        (burst.ok, burst.failed.len()),
        (20, 0),
        "{:?}",
        burst.failed
    );

    // lbctl shows the protocol, and adds a UDP service beside a TCP one on one port.
    let lbctl = lb.lbctl();
    let list = lbctl.ok(&["service", "list"]);
    let listener = |name: &str| {
        list.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .map(str::to_string)
    };
    assert_eq!(listener("web"), Some(format!("{VIP}:{VIP_PORT}")), "{list}");
    assert_eq!(
        listener("dns"),
        Some(format!("{VIP}:{VIP_PORT}/udp")),
        "{list}"
    );
    let add = |name: &str, protocol: &str| {
        lbctl.run(&[
            "service",
            "add",
            name,
            "--vip",
            "10.0.0.123",
            "--port",
            "123",
            "--protocol",
            protocol,
        ])
    };
    assert!(add("ntp", "udp").success() && add("ntp-tcp", "tcp").success());
    let services = lbctl.json(&["service", "list"]);
    let protocol_of = |name: &str| {
        services
            .as_array()
            .and_then(|l| l.iter().find(|s| s["name"] == name))
            .map(|s| s["protocol"].clone())
    };
    assert_eq!(protocol_of("ntp"), Some("udp".into()), "{services}");
    assert_eq!(protocol_of("ntp-tcp"), Some("tcp".into()), "{services}");
    let refused = add("ntp2", "udp");
    assert!(
        !refused.success() && refused.stderr.contains("already used by another service"),
        "{refused:?}"
    );

    // A backend's echo server stops: its UDP probes are refused (ICMP port-unreachable),
    // it turns unhealthy, its flows are deleted; its clients' next datagrams go to the
    // others, every other client stays where it was.
    let dead = echoes.remove(0);
    let dead_name = dead.name().to_string();
    let dead_addr = lb.lab.backend_addr(lb.lab.backend_index(&dead_name));
    drop(dead);
    let needle = format!("backend dns/{dead_addr}:{BACKEND_PORT}: ");
    wait_for_log(&lb, &needle, "UDP flows go by the table again");
    assert!(
        lb.lbd
            .log()
            .lines()
            .any(|l| l.contains(&needle) && l.contains("-> unhealthy") && l.contains("refused")),
        "the probes failed on the port-unreachable:\n{}",
        lb.lbd.log()
    );
    let records = exchange(&clients, vip, 5, wait, Duration::from_secs(60));
    let second = backend_per_client(&lb, &records, 5);
    for (i, (before, after)) in first.iter().zip(&second).enumerate() {
        if *before == dead_name {
            assert_ne!(*after, dead_name, "client {i} moved off the dead backend");
        } else {
            assert_eq!(after, before, "client {i} stays on its live backend");
        }
    }
}

/// Polls lbd's `/metrics` until `series` reads `want`; returns the exposition then.
fn wait_for_sample(lb: &RunningLb, series: &str, want: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = lbd_metrics::get(&lb.lab, "/metrics").body;
        let got = lbd_metrics::sample(&text, series);
        if got == Some(want) {
            return text;
        }
        assert!(Instant::now() < deadline, "{series} is {got:?}, not {want}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits (up to 20 s) for a log line holding both `a` and `b`.
fn wait_for_log(lb: &RunningLb, a: &str, b: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !lb.lbd.log().lines().any(|l| l.contains(a) && l.contains(b)) {
        assert!(
            Instant::now() < deadline,
            "no log line with `{a}` and `{b}`:\n{}",
            lb.lbd.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
