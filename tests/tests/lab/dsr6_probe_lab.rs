//! lbd probes an IPv6 DSR backend the way clients reach it: to the IPv6 VIP, through the
//! backend's tunnel (outer IPv6 with next header 41 for `ipip`, outer IPv6 and UDP for
//! `gue`). Every backend answers on the VIP's port on all its addresses, so only what
//! clients need differs: the two backends running `lb-decap` (which holds the VIP on
//! their `lo`) are found healthy, the one with neither unhealthy (a probe to its own
//! address would find it healthy, though no client can reach it through the VIP).
use std::{net::Ipv6Addr, time::Duration};

use lb_tests::{
    dsr_lab::{first_verdict, Decap},
    topology::Family,
    BackendServer, Lab, LabConfig, LabSpec, RunningLb, BACKEND_PORT, VIP6, VIP_PORT,
};

const VERDICT: Duration = Duration::from_secs(30);

fn a_backend_without_decap_or_the_vip_is_found_unhealthy(mode: &str) {
    let lab = Lab::build(&LabSpec::three_zones().family(Family::V6));
    let without = 2;
    let decaps: Vec<Decap> = (0..lab.backend_count())
        .filter(|i| *i != without)
        .map(|i| Decap::attach(&lab, i, VIP6))
        .collect();
    let _servers: Vec<BackendServer> = (0..lab.backend_count())
        .map(|i| BackendServer::start(lab.backend_ns(i), Ipv6Addr::UNSPECIFIED, VIP_PORT, "any"))
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
    let verdicts: Vec<String> = (0..3)
        .map(|i| first_verdict(&lb, lb.lab.backend_ip(i, Family::V6), VERDICT))
        .collect();
    assert_eq!(
        verdicts,
        ["healthy", "healthy", "unhealthy"],
        "{mode}: backends 1 and 2 run lb-decap and hold the VIP, 3 does neither; lbd log:\n{}",
        lb.lbd.log()
    );
    drop(lb);
    drop(decaps);
}

#[test]
fn an_ipv6_backend_without_decap_or_the_vip_is_found_unhealthy_by_ipip() {
    a_backend_without_decap_or_the_vip_is_found_unhealthy("ipip");
}

#[test]
fn an_ipv6_backend_without_decap_or_the_vip_is_found_unhealthy_by_gue() {
    a_backend_without_decap_or_the_vip_is_found_unhealthy("gue");
}
