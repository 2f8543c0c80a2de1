//! Direct server return end to end in the L3 modes, `ipip` and `gue`: `lbd` wraps the
//! client's packets in an outer IPv4 (and UDP) header to the backend, whose `lb-decap`
//! strips it; the backend answers the client directly from the VIP it holds on `lo`. Per
//! mode: 300 connections through the VIP, each backend seeing the client's own address
//! and the client seeing the VIP, and a 20 MB upload and download on one connection,
//! which on these 1500-byte links needs `lb-decap`'s MSS clamp.
use std::{net::SocketAddr, time::Duration};

use lb_tests::{
    dsr_lab::{bulk_echo, dsr_config, dsr_servers, Decap},
    Lab, LabSpec, RunningLb, VIP, VIP_PORT,
};

fn through(mode: &str) {
    let lab = Lab::build(&LabSpec::three_zones());
    let decaps: Vec<Decap> = (0..lab.backend_count())
        .map(|i| Decap::attach(&lab, i, VIP))
        .collect();
    let servers: Vec<_> = (0..lab.backend_count())
        .map(|i| dsr_servers(&lab, i, VIP))
        .collect();
    let config = dsr_config(&lab, mode);
    let lb = RunningLb::start(lab, &config);
    let result = lb.burst(300, Duration::from_secs(3), Duration::from_secs(120));
    assert!(
        result.failed.is_empty() && result.ok == 300,
        "{mode}: {} of 300 connections failed: {:?}\nlbd log:\n{}",
        result.failed.len(),
        &result.failed[..result.failed.len().min(5)],
        lb.lbd.log()
    );
    let vip = SocketAddr::from((VIP, VIP_PORT));
    for reply in &result.replies {
        assert_eq!(reply.remote, vip, "{mode}: the client must see the VIP");
        assert_eq!(
            reply.peer_seen_by_backend, reply.local,
            "{mode}: the backend must see the client's own address and port"
        );
    }
    let client = lb.lab.client_addr();
    let by_vip: usize = servers
        .iter()
        .map(|[on_vip, _]| on_vip.peers().iter().filter(|p| **p == client).count())
        .sum();
    assert_eq!(
        by_vip, 300,
        "{mode}: served on the VIP: {:?}",
        result.per_backend
    );
    assert_eq!(
        result.per_backend.len(),
        3,
        "{mode}: {:?}",
        result.per_backend
    );
    let client_ns = lb.lab.client_ns().to_string();
    let backend = bulk_echo(&client_ns, VIP, 20 << 20, Duration::from_secs(60));
    assert!(
        ["b1", "b2", "b3"].contains(&backend.as_str()),
        "{mode}: echoed by {backend}"
    );
    drop(lb);
    drop(decaps);
}

#[test]
fn three_hundred_connections_and_twenty_megabytes_each_way_by_ipip() {
    through("ipip");
}

#[test]
fn three_hundred_connections_and_twenty_megabytes_each_way_by_gue() {
    through("gue");
}
