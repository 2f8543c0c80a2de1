//! Direct server return end to end in the L3 modes, `ipip` and `gue`: `lbd` wraps the
//! client's packets in an outer IPv4 (and UDP) header to the backend, whose `lb-decap`
//! strips it; the backend answers the client directly from the VIP it holds on `lo`. Per
//! mode: 300 connections through the VIP, each backend seeing the client's own address
//! and the client seeing the VIP, and a 20 MB upload and download on one connection,
//! which on these 1500-byte links needs `lb-decap`'s MSS clamp.
use lb_tests::{
    dsr_lab::{
        dsr_config, dsr_servers, three_hundred_connections_and_twenty_megabytes_each_way, Decap,
    },
    Lab, LabSpec, RunningLb, VIP,
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
    three_hundred_connections_and_twenty_megabytes_each_way(&lb, &servers, mode);
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
