//! Direct server return end to end, `dsr_l2`: `lbd` changes only the destination MAC of
//! the client's packets, backends on the LB's segment hold the VIP on `lo` and answer
//! the client directly (from the VIP, through their default route). 300 connections
//! through the VIP, each backend seeing the client's own address and the client seeing
//! the VIP; a 20 MB upload and a 20 MB download on one connection.
use std::{net::SocketAddr, time::Duration};

use lb_tests::{
    dsr_lab::{bulk_echo, dsr_backend, dsr_config},
    Lab, LabSpec, RunningLb, VIP, VIP_PORT,
};

#[test]
fn three_hundred_connections_and_twenty_megabytes_each_way_by_dsr_l2() {
    let lab = Lab::build(&LabSpec::three_zones());
    let servers: Vec<_> = (0..lab.backend_count())
        .map(|i| dsr_backend(&lab, i, VIP))
        .collect();
    let config = dsr_config(&lab, "dsr_l2");
    let lb = RunningLb::start(lab, &config);
    let result = lb.burst(300, Duration::from_secs(3), Duration::from_secs(120));
    assert!(
        result.failed.is_empty() && result.ok == 300,
        "{} of 300 connections failed: {:?}\nlbd log:\n{}",
        result.failed.len(),
        &result.failed[..result.failed.len().min(5)],
        lb.lbd.log()
    );
    let vip = SocketAddr::from((VIP, VIP_PORT));
    for reply in &result.replies {
        assert_eq!(reply.remote, vip, "the client must see the VIP as its peer");
        assert_eq!(
            reply.peer_seen_by_backend, reply.local,
            "the backend must see the client's own address and port"
        );
    }
    // Every connection reached a server bound to the VIP itself: none was rewritten to
    // a backend's own address.
    let client = lb.lab.client_addr();
    let by_vip: usize = servers
        .iter()
        .map(|[on_vip, _]| on_vip.peers().iter().filter(|p| **p == client).count())
        .sum();
    assert_eq!(
        by_vip, 300,
        "connections served on the VIP: {:?}",
        result.per_backend
    );
    assert!(
        result.per_backend.len() == 3,
        "the hash spreads connections over the three backends: {:?}",
        result.per_backend
    );
    let client_ns = lb.lab.client_ns().to_string();
    let backend = bulk_echo(&client_ns, VIP, 20 << 20, Duration::from_secs(60));
    assert!(
        ["b1", "b2", "b3"].contains(&backend.as_str()),
        "echoed by {backend}"
    );
}
