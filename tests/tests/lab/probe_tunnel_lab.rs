//! Health probes to DSR backends take the clients' path (`lb_probe_tunnel`): a probe to
//! the VIP, marked for one backend, reaches it through IPIP or GUE, so a backend that
//! decapsulates and holds the VIP on `lo` is healthy, and one without the VIP, or without
//! the decapsulation, is not; with `dsr_l2` the VIP on `lo` is all a backend needs.
//!
//! ```text
//!  ns lb: l1 10.1.1.5/24 <-> ns be1: 10.1.1.11, lb-decap (ipip), VIP on lo
//!         l2 10.1.2.5/24 <-> ns be2: 10.1.2.11, lb-decap (gue) for another VIP only
//!         l3 10.1.3.5/24 <-> ns be3: 10.1.3.11, VIP on lo, no lb-decap
//!         l4 10.1.4.5/24 <-> ns be4: 10.1.4.11, VIP on lo, no lb-decap (dsr_l2)
//!  route to the VIP: via 10.1.1.11 (l1), where the tunnel program runs on egress
//! ```
use std::{net::Ipv4Addr, path::PathBuf, process::Command, time::Duration};

use lb_common::{
    encap::{BACKEND_F_DSR_L2, BACKEND_F_GUE, BACKEND_F_IPIP},
    probe_tunnel::{probe_mark, ProbeTunnel},
};
use lb_tests::{
    netns::{self, NetNs},
    process::{ensure_bpffs, output_within, workspace_bin},
};
use lb_userspace::{
    control::health::{
        machine::Failure,
        probe::{probe, ProbeKind, ProbeSpec, ProbeVia},
    },
    kernel::probe_tunnel::{route_to, ProbeTunnels},
};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);

/// Removes the pin directories and state files of the lb-decap runs.
struct Scratch(Vec<PathBuf>);

impl Drop for Scratch {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

fn lb_decap(ns: &str, args: &[&str]) {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={}", netns::netns_path(ns).display()))
        .arg("--")
        .arg(workspace_bin("lb-decap", "LB_DECAP_BIN"))
        .args(args);
    let out = output_within(cmd, Duration::from_secs(30)).unwrap();
    assert!(
        out.status.success(),
        "lb-decap {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_probe_through_the_tunnel_fails_without_the_vip_on_lo_or_without_the_decap() {
    lb_tests::needs::packet();
    ensure_bpffs().unwrap();
    let prefix = netns::unique_prefix();
    let lb = NetNs::create(&format!("{prefix}pl"));
    let backends: Vec<NetNs> = (1..=4)
        .map(|n| NetNs::create(&format!("{prefix}p{n}")))
        .collect();
    for key in ["all", "default"] {
        netns::ns_sysctl(lb.name(), &format!("net.ipv4.conf.{key}.rp_filter"), "0");
    }
    for (i, be) in backends.iter().enumerate() {
        let n = i + 1;
        let (l, b) = (format!("{prefix}l{n}"), format!("{prefix}b{n}"));
        netns::run(
            "ip",
            &[
                "link",
                "add",
                &l,
                "netns",
                lb.name(),
                "type",
                "veth",
                "peer",
                "name",
                &b,
                "netns",
                be.name(),
            ],
        );
        lb.ip(&["link", "set", &l, "name", &format!("l{n}")]);
        be.ip(&["link", "set", &b, "name", "b0"]);
        netns::ns_sysctl(lb.name(), &format!("net.ipv4.conf.l{n}.rp_filter"), "0");
        lb.ip(&[
            "addr",
            "add",
            &format!("10.1.{n}.5/24"),
            "dev",
            &format!("l{n}"),
        ]);
        lb.ip(&["link", "set", &format!("l{n}"), "up"]);
        be.ip(&["addr", "add", &format!("10.1.{n}.11/24"), "dev", "b0"]);
        be.ip(&["link", "set", "b0", "up"]);
        be.ip(&["route", "add", "default", "via", &format!("10.1.{n}.5")]);
    }
    lb.ip(&["route", "add", "10.0.0.100/32", "via", "10.1.1.11"]);
    let mut scratch = Scratch(Vec::new());
    let mut decap = |be: &NetNs, vip: &str| {
        let pins = PathBuf::from(format!("/sys/fs/bpf/{}-decap", be.name()));
        let state = std::env::temp_dir().join(format!("{}-decap", be.name()));
        scratch.0.extend([pins.clone(), state.clone()]);
        let (pins, state) = (
            pins.display().to_string(),
            state.join("s.json").display().to_string(),
        );
        lb_decap(
            be.name(),
            &[
                "-i",
                "b0",
                "--vip",
                vip,
                "--lb-prefix",
                "10.1.0.0/16",
                "--pin-dir",
                &pins,
                "--state-file",
                &state,
                "--mss",
                "0",
            ],
        );
    };
    decap(&backends[0], "10.0.0.100");
    decap(&backends[1], "10.0.0.200");
    for be in &backends[2..] {
        be.ip(&["addr", "add", "10.0.0.100/32", "dev", "lo"]);
    }
    // Every backend listens on the VIP's port on every address: what differs is only
    // whether the probe can reach it.
    let _listeners: Vec<std::net::TcpListener> = backends
        .iter()
        .map(|be| {
            netns::run_in(be.name(), || {
                std::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, 80)).unwrap()
            })
        })
        .collect();

    let modes = [
        BACKEND_F_IPIP,
        BACKEND_F_GUE,
        BACKEND_F_IPIP,
        BACKEND_F_DSR_L2,
    ];
    let (tunnels, specs) = netns::run_in(lb.name(), move || {
        let mut tunnels = ProbeTunnels::load().expect("loading the probe tunnel object");
        tunnels.attach_egress("l1").unwrap();
        let mut specs = Vec::new();
        for (i, mode) in modes.into_iter().enumerate() {
            let n = i as u8 + 1;
            let source = Ipv4Addr::new(10, 1, n, 5);
            let backend = Ipv4Addr::new(10, 1, n, 11);
            let ifindex = netns::ifindex(&format!("{prefix}pl"), &format!("l{n}"));
            // What lbd asks the kernel for each backend.
            assert_eq!(route_to(backend).unwrap(), (source, ifindex));
            let mark = probe_mark(u16::from(n));
            let tunnel = ProbeTunnel {
                backend: u32::from_ne_bytes(backend.octets()),
                source: u32::from_ne_bytes(source.octets()),
                ifindex,
                gue_port: 6080u16.to_be(),
                mode,
                _pad: 0,
            };
            tunnels.set(mark, &tunnel).unwrap();
            specs.push(ProbeSpec {
                target: std::net::SocketAddrV4::new(VIP, 80).into(),
                kind: ProbeKind::Tcp,
                interval: Duration::from_secs(1),
                timeout: Duration::from_secs(2),
                via: Some(ProbeVia {
                    mark,
                    source: source.into(),
                }),
            });
        }
        (tunnels, specs)
    });
    // Probes run in the LB's namespace, where their sockets must be made.
    let probe_in_lb = |specs: Vec<ProbeSpec>| {
        netns::run_in(lb.name(), move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            specs
                .iter()
                .map(|s| runtime.block_on(probe(s)))
                .collect::<Vec<_>>()
        })
    };
    assert_eq!(
        probe_in_lb(specs.clone()),
        [Ok(()), Err(Failure::Timeout), Err(Failure::Timeout), Ok(())],
        "be1 (ipip, VIP on lo), be2 (gue, no VIP), be3 (VIP, no decap), be4 (dsr_l2, VIP)"
    );
    // be2 given the VIP: healthy, through GUE.
    backends[1].ip(&["addr", "add", "10.0.0.100/32", "dev", "lo"]);
    assert_eq!(
        probe_in_lb(vec![specs[1].clone()]),
        [Ok(())],
        "be2 (gue, VIP on lo)"
    );
    drop(tunnels);
}
