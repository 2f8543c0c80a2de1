//! Direct server return end to end, `dsr_l2`: `lbd` changes only the destination MAC of
//! the client's packets, backends on the LB's segment hold the VIP on `lo` and answer
//! the client directly (from the VIP, through their default route). 300 connections
//! through the VIP, each backend seeing the client's own address and the client seeing
//! the VIP; a 20 MB upload and a 20 MB download on one connection.
use lb_tests::{
    dsr_lab::{dsr_backend, dsr_config, three_hundred_connections_and_twenty_megabytes_each_way},
    Lab, LabSpec, RunningLb, VIP,
};

#[test]
fn three_hundred_connections_and_twenty_megabytes_each_way_by_dsr_l2() {
    let lab = Lab::build(&LabSpec::three_zones());
    let servers: Vec<_> = (0..lab.backend_count())
        .map(|i| dsr_backend(&lab, i, VIP))
        .collect();
    let config = dsr_config(&lab, "dsr_l2");
    let lb = RunningLb::start(lab, &config);
    three_hundred_connections_and_twenty_megabytes_each_way(&lb, &servers, "dsr_l2");
}
