//! lbd probes a DSR backend the way clients reach it: to the VIP, through the backend's
//! tunnel (`ipip`, `gue`) or to its MAC (`dsr_l2`). Every backend answers on the VIP's
//! port on all its addresses, so what differs is only the VIP on `lo`: the two backends
//! that hold it are found healthy, the one without it unhealthy (a probe to its own
//! address would find it healthy, though no client can reach it). The LB namespace has
//! no route to the VIP: the probes take lbd's own route for their marks.
use std::{net::Ipv4Addr, time::Duration};

use lb_tests::{
    dsr_lab::{dsr_config, first_verdict, hold_vip_on_lo, Decap},
    netns, BackendServer, Lab, LabSpec, RunningLb, VIP, VIP_PORT,
};

const VERDICT: Duration = Duration::from_secs(30);

fn a_backend_without_the_vip_on_lo_is_found_unhealthy(mode: &str) {
    // Dual stack, so that an lbd that made the IPv6 probes' device for IPv4 DSR backends
    // could (where IPv6 is off, making it fails).
    let lab = Lab::build(&LabSpec::three_zones().family(lb_tests::topology::Family::V6));
    let without = 2;
    let mut decaps = Vec::new();
    for i in 0..lab.backend_count() {
        if mode == "dsr_l2" {
            if i != without {
                hold_vip_on_lo(lab.backend_ns(i), VIP);
            }
        } else {
            decaps.push(Decap::attach(&lab, i, VIP));
        }
    }
    if mode != "dsr_l2" {
        // lb-decap put the VIP on every backend's lo: taken off the last one's.
        netns::ns_ip(
            lab.backend_ns(without),
            &["addr", "del", &format!("{VIP}/32"), "dev", "lo"],
        );
    }
    let _servers: Vec<BackendServer> = (0..lab.backend_count())
        .map(|i| BackendServer::start(lab.backend_ns(i), Ipv4Addr::UNSPECIFIED, VIP_PORT, "any"))
        .collect();
    let config = dsr_config(&lab, mode);
    let lb = RunningLb::start(lab, &config);
    let verdicts: Vec<String> = (0..3)
        .map(|i| first_verdict(&lb, lb.lab.backend_addr(i), VERDICT))
        .collect();
    assert_eq!(
        verdicts,
        ["healthy", "healthy", "unhealthy"],
        "{mode}: backends 1 and 2 hold the VIP, 3 does not; lbd log:\n{}",
        lb.lbd.log()
    );
    // No IPv6 DSR backend: the IPv6 probes' device is not made.
    assert!(
        netns::try_ns_ip(lb.lab.lb_ns(), &["link", "show", "lbprobe6"]).is_err(),
        "{mode}: lbprobe6 made for IPv4 DSR backends only"
    );
    drop(lb);
    drop(decaps);
}

#[test]
fn a_backend_without_the_vip_on_lo_is_found_unhealthy_by_ipip() {
    a_backend_without_the_vip_on_lo_is_found_unhealthy("ipip");
}

#[test]
fn a_backend_without_the_vip_on_lo_is_found_unhealthy_by_gue() {
    a_backend_without_the_vip_on_lo_is_found_unhealthy("gue");
}

#[test]
fn a_backend_without_the_vip_on_lo_is_found_unhealthy_by_dsr_l2() {
    a_backend_without_the_vip_on_lo_is_found_unhealthy("dsr_l2");
}

/// A node that announces the VIP holds it on `lo`, so the probes' answers (from the VIP)
/// have a local source: lbd says which setting makes the kernel keep them.
#[test]
fn an_announcing_node_without_accept_local_is_told_why_its_probes_fail() {
    let lab = Lab::build(&LabSpec::three_zones());
    let decaps: Vec<Decap> = (0..lab.backend_count())
        .map(|i| Decap::attach(&lab, i, VIP))
        .collect();
    let config = format!(
        "{}announce:\n  vip_ranges: [10.0.0.0/24]\n",
        dsr_config(&lab, "ipip")
    );
    let mut lb = RunningLb::start(lab, &config);
    lb.lbd
        .wait_for_log("has accept_local=0", VERDICT)
        .unwrap_or_else(|e| panic!("{e}"));
    drop(lb);
    drop(decaps);
}
