//! UDP end to end: 100 clients in the client namespace, each from a socket (a 5-tuple)
//! of its own, send 50 datagrams each to a UDP service on the VIP, which shares its
//! VIP:port with the lab's TCP service; UDP echo servers in the backend namespaces
//! answer, and UDP probes check them. Every answer must come from the VIP:port and, for
//! each client, from one backend, which saw the client's own address; TCP to the same
//! VIP:port still works. Then one echo server stops: its probes fail on the ICMP
//! port-unreachable, and its clients move to the others while every other client stays.
//! Once over IPv4 and once over IPv6 (a dual-stack lab, the IPv6 VIP and backends).
use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use lb_tests::{
    lbd_metrics,
    running_lb::{vip, LabConfig},
    topology::{Family, LabSpec},
    udp_echo::{exchange, open_clients_on, ClientRecord, UdpEcho},
    Lab, RunningLb, BACKEND_PORT, VIP_PORT,
};

const CLIENTS: usize = 100;
const DATAGRAMS: usize = 50;

/// Each client's one backend; panics unless every datagram was answered from the VIP by
/// one backend that saw the client's own address.
fn backend_per_client(
    lb: &RunningLb,
    family: Family,
    records: &[ClientRecord],
    datagrams: usize,
) -> Vec<String> {
    let vip = SocketAddr::new(vip(family), VIP_PORT);
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
                    SocketAddr::new(lb.lab.client_ip(family), r.local.port()),
                    "the backend must see the client's own address and port"
                );
            }
            r.answers[0].backend.clone()
        })
        .collect()
}

#[test]
fn udp_clients_each_stay_on_one_backend_hear_only_the_vip_and_move_off_a_dead_backend() {
    clients_stay_hear_the_vip_and_move_off_a_dead_backend(Family::V4);
}

#[test]
fn ipv6_udp_clients_each_stay_on_one_backend_hear_only_the_vip_and_move_off_a_dead_backend() {
    clients_stay_hear_the_vip_and_move_off_a_dead_backend(Family::V6);
}

fn clients_stay_hear_the_vip_and_move_off_a_dead_backend(family: Family) {
    let lab = Lab::build(&LabSpec::three_zones().family(family));
    let mut echoes: Vec<UdpEcho> = (0..lab.backend_count())
        .map(|i| {
            UdpEcho::start(
                lab.backend_ns(i),
                lab.backend_ip(i, family),
                BACKEND_PORT,
                &lab.backend_spec(i).name,
            )
        })
        .collect();
    let vip_ip = vip(family);
    let mut config = LabConfig::new(&lab).family(family).yaml();
    config.push_str(&format!(
        "  - name: dns\n    vip: \"{vip_ip}\"\n    port: {VIP_PORT}\n    protocol: udp\n    \
         health: {{ type: udp, send: ping, expect: ping, interval: 200ms, timeout: 200ms }}\n    \
         backends:\n"
    ));
    for i in 0..lab.backend_count() {
        config.push_str(&format!(
            "      - {{ address: \"{}\", port: {BACKEND_PORT}, zone: {} }}\n",
            lab.backend_ip(i, family),
            lab.backend_spec(i).zone
        ));
    }
    let lb = RunningLb::start(lab, &config);

    let vip = SocketAddr::new(vip_ip, VIP_PORT);
    let any = match family {
        Family::V4 => IpAddr::from([0u8; 4]),
        Family::V6 => IpAddr::from([0u16; 8]),
    };
    let clients = open_clients_on(lb.lab.client_ns(), CLIENTS, any);
    let wait = Duration::from_millis(500);
    let records = exchange(&clients, vip, DATAGRAMS, wait, Duration::from_secs(120));
    assert_eq!(records.len(), CLIENTS);
    let first = backend_per_client(&lb, family, &records, DATAGRAMS);
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
    let client = SocketAddr::new(lb.lab.client_ip(family), records[0].local.port());
    let view = lb.lbctl().json(&[
        "explain",
        &client.to_string(),
        &vip.to_string(),
        "--protocol",
        "udp",
    ]);
    let answered = lb.lab.backend_ip(lb.lab.backend_index(&first[0]), family);
    assert_eq!(view["service"]["name"], "dns", "{view}");
    assert_eq!(view["new_connection"]["by"], "flow_entry", "{view}");
    assert_eq!(
        view["new_connection"]["backend"]["address"],
        SocketAddr::new(answered, BACKEND_PORT).to_string(),
        "{view}"
    );

    // TCP on the same VIP:port is the TCP service's.
    let burst = lb.burst_in(family, 20, Duration::from_secs(3), Duration::from_secs(60));
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
    assert_eq!(listener("web"), Some(vip.to_string()), "{list}");
    assert_eq!(listener("dns"), Some(format!("{vip}/udp")), "{list}");
    let other_vip = match family {
        Family::V4 => "10.0.0.123",
        Family::V6 => "2001:db8::123",
    };
    let add = |name: &str, protocol: &str| {
        lbctl.run(&[
            "service",
            "add",
            name,
            "--vip",
            other_vip,
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
    let dead_addr = lb.lab.backend_ip(lb.lab.backend_index(&dead_name), family);
    drop(dead);
    let needle = format!("backend dns/{}: ", SocketAddr::new(dead_addr, BACKEND_PORT));
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
    let second = backend_per_client(&lb, family, &records, 5);
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
