//! Direct server return for an IPv6 service end to end, in the L3 modes: `lbd` wraps the
//! client's IPv6 packets in an outer IPv6 header (`ipip`, next header 41) or outer IPv6
//! and UDP (`gue`) to the backend, whose `lb-decap` strips it (the VIP held on its `lo`
//! by `lb-decap`); the backend answers the client directly from the VIP. Per mode: 300
//! connections through the IPv6 VIP, each seen by its backend from the client's own
//! address and port while the client sees the VIP, all served by the servers bound to
//! the VIP (none rewritten to a backend's own address), spread over the three backends,
//! and no reply translated by the node (`lb_service_packets_total` to_client stays 0);
//! then 20 MB echoed each way on one connection with no ICMPv6 packet too big from the
//! node: `lb-decap`'s MSS clamp on the IPv6 route makes every wrapped segment fit.
use std::{net::SocketAddr, time::Duration};

use lb_tests::{
    dsr_lab::{bulk_echo, dsr_servers, first_verdict, Decap},
    lbd_metrics,
    topology::Family,
    Lab, LabConfig, LabSpec, RunningLb, BACKEND_PORT, VIP6, VIP_PORT,
};

/// `lb_service_packets_total` of service `web` in `direction`, from lbd's `/metrics`.
fn web_packets(lb: &RunningLb, direction: &str) -> f64 {
    let body = lbd_metrics::get(&lb.lab, "/metrics").body;
    let wanted = format!("direction=\"{direction}\"");
    body.lines()
        .filter(|l| l.starts_with("lb_service_packets_total{"))
        .filter(|l| l.contains(&wanted) && l.contains("service=\"web\""))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no lb_service_packets_total for web {direction}:\n{body}"))
}

fn through(mode: &str) {
    let lab = Lab::build(&LabSpec::three_zones().family(Family::V6));
    let decaps: Vec<Decap> = (0..lab.backend_count())
        .map(|i| Decap::attach(&lab, i, VIP6))
        .collect();
    let servers: Vec<_> = (0..lab.backend_count())
        .map(|i| dsr_servers(&lab, i, VIP6))
        .collect();
    let config = LabConfig::new(&lab)
        .family(Family::V6)
        .yaml()
        .replace("mode: nat", &format!("mode: {mode}"))
        .replace(
            &format!("port: {BACKEND_PORT},"),
            &format!("port: {VIP_PORT},"),
        );
    assert!(config.contains(&format!("mode: {mode}")), "{config}");
    let lb = RunningLb::start(lab, &config);
    // Probed through their tunnels to the VIP: the probes also leave the backends'
    // neighbour entries the data path needs.
    for i in 0..lb.lab.backend_count() {
        let addr = lb.lab.backend_ip(i, Family::V6);
        let verdict = first_verdict(&lb, addr, Duration::from_secs(30));
        assert_eq!(verdict, "healthy", "{mode}: backend {addr}");
    }
    let result = lb.burst_in(
        Family::V6,
        300,
        Duration::from_secs(3),
        Duration::from_secs(120),
    );
    assert!(
        result.failed.is_empty() && result.ok == 300,
        "{mode}: {} of 300 connections failed: {:?}\nlbd log:\n{}",
        result.failed.len(),
        &result.failed[..result.failed.len().min(5)],
        lb.lbd.log()
    );
    let vip = SocketAddr::from((VIP6, VIP_PORT));
    for reply in &result.replies {
        assert_eq!(reply.remote, vip, "{mode}: the client must see the VIP");
        assert_eq!(
            reply.peer_seen_by_backend, reply.local,
            "{mode}: the backend must see the client's own address and port"
        );
    }
    let client = lb.lab.client_ip(Family::V6);
    let by_vip: usize = servers
        .iter()
        .map(|[on_vip, _]| {
            on_vip
                .peer_addrs()
                .iter()
                .filter(|p| p.ip() == client)
                .count()
        })
        .sum();
    assert_eq!(
        by_vip, 300,
        "{mode}: served on the VIP: {:?}",
        result.per_backend
    );
    assert_eq!(
        result.per_backend.len(),
        3,
        "{mode}: the hash spreads connections over the three backends: {:?}",
        result.per_backend
    );
    let (to_backend, to_client) = (
        web_packets(&lb, "to_backend"),
        web_packets(&lb, "to_client"),
    );
    assert!(
        to_backend >= 3.0 * 300.0,
        "{mode}: the node steered every connection's packets: {to_backend}"
    );
    assert_eq!(to_client, 0.0, "{mode}: no reply crossed the node");
    let client_ns = lb.lab.client_ns().to_string();
    let backend = bulk_echo(&client_ns, VIP6, 20 << 20, Duration::from_secs(60));
    assert!(
        ["b1", "b2", "b3"].contains(&backend.as_str()),
        "{mode}: echoed by {backend}"
    );
    let body = lbd_metrics::get(&lb.lab, "/metrics").body;
    assert_eq!(
        lbd_metrics::sample(
            &body,
            "lb_datapath_packets_total{action=\"tx\",reason=\"tx_packet_too_big\"}"
        ),
        Some(0.0),
        "{mode}: the clamped MSS fits the path, no packet too big was needed"
    );
    println!(
        "{mode} over IPv6: 300 connections through [{VIP6}]:{VIP_PORT}: {:?}; {to_backend} \
         packets steered, {to_client} replies through the node",
        result.per_backend
    );
    drop(lb);
    drop(decaps);
}

#[test]
fn three_hundred_ipv6_connections_answered_straight_from_the_backends_by_ipip() {
    through("ipip");
}

#[test]
fn three_hundred_ipv6_connections_answered_straight_from_the_backends_by_gue() {
    through("gue");
}
