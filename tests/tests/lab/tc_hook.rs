//! `lbd` with its NICs at tc (`tc_interfaces`) in a lab whose veths keep their offloads,
//! as a container's do: the client and the backends send GSO packets with partial
//! checksums, which `lb_tc` rewrites as they are. The LB's own NICs have transmit
//! checksum offload off, so the LB's egress completes each checksum (and segments each
//! GSO packet) from what `lb_tc` left in the header: a wrong partial checksum arrives as
//! a bad one, which the receiver drops and counts.
use std::time::Duration;

use aya::programs::{tc::TcAttachType, SchedClassifier};
use lb_tests::{
    client, lab_config, lbd_metrics, netns, vip, BurstResult, Family, Lab, LabSpec, RunningLb,
    VIP_PORT,
};

/// `lb_service_{packets,bytes}_total` of service `web` towards the backends.
fn web_to_backend(lb: &RunningLb) -> (f64, f64) {
    let body = lbd_metrics::get(&lb.lab, "/metrics").body;
    let series = |name: &str| {
        let s = format!("{name}{{service=\"web\",direction=\"to_backend\"}}");
        lbd_metrics::sample(&body, &s).unwrap_or_else(|| panic!("no {s} in:\n{body}"))
    };
    (
        series("lb_service_packets_total"),
        series("lb_service_bytes_total"),
    )
}

/// `Tcp: InCsumErrors` of namespace `ns` (/proc/net/snmp is the reader's namespace's).
fn tcp_checksum_errors(lab: &Lab, ns: &str) -> u64 {
    let snmp = lab.exec(ns, "cat", &["/proc/net/snmp"]);
    let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (tcp.next().unwrap(), tcp.next().unwrap());
    let at = names
        .split_whitespace()
        .position(|n| n == "InCsumErrors")
        .expect("an InCsumErrors column");
    values.split_whitespace().nth(at).unwrap().parse().unwrap()
}

/// The names of the programs at NIC `dev`'s tc ingress in namespace `ns`.
fn tc_programs(lab: &Lab, ns: &str, dev: &'static str) -> Vec<String> {
    lab.run_in(ns, move || {
        let (_, programs) = SchedClassifier::query_tcx(dev, TcAttachType::Ingress)
            .unwrap_or_else(|e| panic!("querying {dev}'s tc ingress: {e}"));
        programs
            .iter()
            .map(|p| p.name_as_str().unwrap_or("?").to_string())
            .collect()
    })
}

#[test]
fn connections_and_bulk_data_cross_lb_tc_with_offloads_on() {
    let lab = Lab::build(&LabSpec::three_zones().tc(true));
    let (lb_ns, cl_ns) = (lab.lb_ns().to_string(), lab.client_ns().to_string());
    let offloads = lab.exec(&cl_ns, "ethtool", &["-k", "cl0"]);
    for on in ["tx-checksumming: on", "tcp-segmentation-offload: on"] {
        assert!(offloads.contains(on), "the client's veth: {offloads}");
    }
    for dev in lab.lb_interfaces() {
        netns::ns_ethtool(&lb_ns, &["-K", &dev, "tx", "off"]);
    }
    let config = lab_config(&lab, &[1, 1, 1]);
    assert!(config.contains("tc_interfaces: [lbc, lbb]"), "{config}");
    let lb = RunningLb::start(lab, &config);
    for dev in ["lbc", "lbb"] {
        assert_eq!(tc_programs(&lb.lab, &lb_ns, dev), vec!["lb_tc"], "{dev}");
        let link = netns::ns_ip(&lb_ns, &["link", "show", dev]);
        assert!(!link.contains("xdp"), "no XDP on {dev}: {link}");
    }

    let result = connect(&lb, 300, Duration::from_secs(120));
    let client = lb.lab.client_addr();
    for reply in &result.replies {
        assert_eq!(reply.remote.ip(), vip(Family::V4));
        assert_eq!(reply.peer_seen_by_backend.ip(), client);
    }
    assert_eq!(result.per_backend.len(), 3, "{:?}", result.per_backend);

    // 4 MiB each way through one connection, in 64 KiB echoes: each write leaves the
    // client as GSO packets of many segments.
    let (packets_before, bytes_before) = web_to_backend(&lb);
    let mut held = client::hold_via(&cl_ns, vip(Family::V4), VIP_PORT, Duration::from_secs(5))
        .expect("a held connection through the VIP");
    for i in 0..64u32 {
        let chunk: String = (0..65536u32)
            .map(|j| char::from(b'a' + ((i * 7 + j / 3) % 26) as u8))
            .collect();
        let echoed = held
            .echo(&chunk, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("echo {i}: {e}\nlbd log:\n{}", lb.lbd.log()));
        assert!(echoed == chunk, "echo {i} came back changed");
    }
    held.close();
    let (packets_after, bytes_after) = web_to_backend(&lb);
    let (packets, bytes) = (packets_after - packets_before, bytes_after - bytes_before);
    assert!(
        bytes >= 4.0 * 1024.0 * 1024.0,
        "{bytes} bytes to the backend"
    );
    // More than an MTU-sized frame's bytes per packet counted: `lb_tc` ran once per GSO
    // packet, not once per segment.
    assert!(
        bytes / packets > 1514.0,
        "{packets} packets for {bytes} bytes to the backend"
    );

    for ns in [cl_ns.clone()]
        .into_iter()
        .chain((0..lb.lab.backend_count()).map(|i| lb.lab.backend_ns(i).to_string()))
    {
        assert_eq!(
            tcp_checksum_errors(&lb.lab, &ns),
            0,
            "TCP checksum errors in {ns}"
        );
    }
}

/// Runs `count` connections through the VIP within `within`; every one must succeed.
fn connect(lb: &RunningLb, count: usize, within: Duration) -> BurstResult {
    let result = lb.burst_in(Family::V4, count, Duration::from_secs(3), within);
    assert!(
        result.failed.is_empty() && result.ok == count,
        "{} of {count} connections failed: {:?}\nlbd log:\n{}",
        result.failed.len(),
        &result.failed[..result.failed.len().min(5)],
        lb.lbd.log()
    );
    result
}

#[test]
fn a_restart_swaps_lb_tc_on_its_pinned_links_and_leaving_tc_moves_the_nics_to_xdp() {
    let lab = Lab::build(&LabSpec::three_zones().tc(true));
    let lb_ns = lab.lb_ns().to_string();
    let config = lab_config(&lab, &[1, 1, 1]);
    let mut lb = RunningLb::start(lab, &config);
    connect(&lb, 30, Duration::from_secs(60));
    // SIGTERM leaves the links pinned, forwarding; the next lbd swaps its program in.
    lb.restart_lbd_after_sigterm();
    let log = lb.lbd.log();
    for dev in ["lbc", "lbb"] {
        assert!(
            log.contains(&format!("replaced the program on {dev}'s pinned TCX link")),
            "{log}"
        );
        assert_eq!(tc_programs(&lb.lab, &lb_ns, dev), vec!["lb_tc"], "{dev}");
    }
    connect(&lb, 30, Duration::from_secs(60));
    // The same node without `tc_interfaces`: XDP takes each NIC before tc leaves it.
    let xdp_config = config.replace("tc_interfaces: [lbc, lbb]\n", "");
    assert_ne!(xdp_config, config);
    std::fs::write(lb.config_path(), &xdp_config).expect("rewriting the config");
    lb.restart_lbd_after_sigterm();
    let log = lb.lbd.log();
    for dev in ["lbc", "lbb"] {
        assert!(log.contains(&format!("moved {dev} to lb_xdp")), "{log}");
        assert_eq!(
            tc_programs(&lb.lab, &lb_ns, dev),
            Vec::<String>::new(),
            "{dev}"
        );
        let link = netns::ns_ip(&lb_ns, &["link", "show", dev]);
        assert!(link.contains("xdp"), "XDP on {dev}: {link}");
    }
}
