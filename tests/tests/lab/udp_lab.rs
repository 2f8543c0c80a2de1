//! UDP end to end: 100 clients in the client namespace, each from a socket (a 5-tuple)
//! of its own, send 50 datagrams each to a UDP service on the VIP, which shares its
//! VIP:port with the lab's TCP service; UDP echo servers in the backend namespaces
//! answer. Every answer must come from the VIP:port and, for each client, from one
//! backend, which saw the client's own address; TCP to the same VIP:port still works.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::{SocketAddr, SocketAddrV4},
    time::Duration,
};

use lb_tests::{
    lbd_metrics,
    running_lb::LabConfig,
    scenario::three_zones,
    udp_echo::{exchange, UdpEcho},
    RunningLb, BACKEND_PORT, VIP, VIP_PORT,
};

const CLIENTS: usize = 100;
const DATAGRAMS: usize = 50;

#[test]
fn udp_clients_each_stay_on_one_backend_and_hear_only_the_vip_beside_tcp_on_the_same_port() {
    let lab = three_zones();
    // The UDP service's probes reach the backends' HTTP servers (TCP, same port).
    let mut config = LabConfig::new(&lab).yaml();
    config.push_str(&format!(
        "  - name: dns\n    vip: {VIP}\n    port: {VIP_PORT}\n    protocol: udp\n    \
         health: {{ port: {BACKEND_PORT} }}\n    backends:\n"
    ));
    for i in 0..lab.backend_count() {
        config.push_str(&format!(
            "      - {{ address: {}, port: {BACKEND_PORT}, zone: {} }}\n",
            lab.backend_addr(i),
            lab.backend_spec(i).zone
        ));
    }
    let lb = RunningLb::start(lab, &config);
    let echoes: Vec<UdpEcho> = (0..lb.lab.backend_count())
        .map(|i| {
            UdpEcho::start(
                lb.lab.backend_ns(i),
                lb.lab.backend_addr(i),
                BACKEND_PORT,
                &lb.lab.backend_spec(i).name,
            )
        })
        .collect();

    let vip = SocketAddrV4::new(VIP, VIP_PORT);
    let records = exchange(
        lb.lab.client_ns(),
        vip,
        CLIENTS,
        DATAGRAMS,
        Duration::from_millis(500),
        Duration::from_secs(120),
    );
    assert_eq!(records.len(), CLIENTS);
    let mut clients_per_backend: BTreeMap<String, usize> = BTreeMap::new();
    for r in &records {
        assert_eq!(
            (r.unanswered, r.answers.len()),
            (0, DATAGRAMS),
            "client {} got no answer to some datagrams; lbd log:\n{}",
            r.local,
            lb.lbd.log()
        );
        let backends: BTreeSet<&str> = r.answers.iter().map(|a| a.backend.as_str()).collect();
        assert_eq!(backends.len(), 1, "client {} heard {backends:?}", r.local);
        for a in &r.answers {
            assert_eq!(
                a.from,
                SocketAddr::V4(vip),
                "client {}: an answer not from the VIP",
                r.local
            );
            assert_eq!(
                a.seen,
                SocketAddr::from((lb.lab.client_addr(), r.local.port())),
                "the backend must see the client's own address and port"
            );
        }
        *clients_per_backend
            .entry(r.answers[0].backend.clone())
            .or_default() += 1;
    }
    assert_eq!(
        clients_per_backend.len(),
        echoes.len(),
        "every backend takes some clients: {clients_per_backend:?}"
    );
    let served: u64 = echoes.iter().map(UdpEcho::served).sum();
    assert!(
        served >= (CLIENTS * DATAGRAMS) as u64,
        "the backends answered {served} datagrams"
    );

    // One flow per client, every datagram counted (lbd samples the counters about once
    // a second, so this polls; a retransmitted datagram counts as one more packet).
    let metrics = wait_for_new_flows(&lb, CLIENTS as f64);
    let packets = lbd_metrics::sample(
        &metrics,
        "lb_service_packets_total{service=\"dns\",direction=\"to_backend\"}",
    );
    assert!(
        packets.is_some_and(|p| p >= (CLIENTS * DATAGRAMS) as f64),
        "{packets:?}"
    );

    // TCP on the same VIP:port is the TCP service's.
    let burst = lb.burst(20, Duration::from_secs(3), Duration::from_secs(60));
    assert_eq!(
        (burst.ok, burst.failed.len()),
        (20, 0),
        "{:?}",
        burst.failed
    );
}

/// Polls lbd's `/metrics` until the UDP service's new flows read `want`; returns the
/// exposition then.
fn wait_for_new_flows(lb: &RunningLb, want: f64) -> String {
    let series = "lb_service_new_flows_total{service=\"dns\"}";
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = lbd_metrics::get(&lb.lab, "/metrics").body;
        let got = lbd_metrics::sample(&text, series);
        if got == Some(want) {
            return text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{series} is {got:?}, not {want}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
