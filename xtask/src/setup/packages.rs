//! Debian packages that the tests and the lab call: they build namespace topologies,
//! tune veths, inspect BPF objects and send or watch traffic, and the benchmark runs the
//! load balancers it compares with; the packaging tests install the package, check
//! its unit and run a real Prometheus.

use std::process::Command;

use anyhow::{bail, Context as _, Result};

use super::{Need, Step};
use crate::cmd;

pub struct Packages;

/// (package, what it is used for)
const PACKAGES: &[(&str, &str)] = &[
    ("iproute2", "ip: namespaces, veths, routes"),
    ("ethtool", "GRO on and tx checksum offload off on veths"),
    ("bpftool", "inspecting loaded programs and maps"),
    ("tcpdump", "watching traffic in the lab"),
    ("hping3", "crafted TCP packets"),
    ("procps", "pgrep, sysctl"),
    ("util-linux", "nsenter, mount"),
    (
        "haproxy",
        "the TCP proxy the end-to-end benchmark compares with",
    ),
    (
        "bird2",
        "bird: the routing daemon of the LB tier's lab tests (deploy/bird/)",
    ),
    (
        "frr",
        "zebra, bgpd, bfdd: the FRR variant of the tier's routing (deploy/frr/)",
    ),
    (
        "nftables",
        "nft: the DNAT rule the end-to-end benchmark compares with",
    ),
    (
        "wrk",
        "the HTTP load generator of the benchmark's saturated rows",
    ),
    (
        "iperf3",
        "the single-stream throughput client and server of the benchmark's saturated rows",
    ),
    (
        "prometheus",
        "promtool and a real Prometheus scraping lbd (deploy/prometheus/; ~19 MB download, ~96 MB installed)",
    ),
    (
        "systemd",
        "systemd-analyze: verify and score the unit (deploy/systemd/)",
    ),
    ("strace", "the system calls lbd makes, against the unit's filter"),
    ("adduser", "the package's maintainer scripts (its system user)"),
    (
        "cloud-init",
        "cloud-init schema: validates deploy/cloud-init/ (about 18 s to install)",
    ),
];

fn installed(package: &str) -> bool {
    cmd::capture(Command::new("dpkg-query").args(["-W", "-f=${Status}", package]))
        .is_ok_and(|status| status.trim() == "install ok installed")
}

fn missing() -> Vec<&'static str> {
    PACKAGES
        .iter()
        .map(|(package, _)| *package)
        .filter(|package| !installed(package))
        .collect()
}

impl Step for Packages {
    fn name(&self) -> String {
        "debian packages".into()
    }

    fn needed_for(&self) -> Need {
        Need::Run
    }

    fn needs_root(&self) -> bool {
        true
    }

    fn check(&self) -> bool {
        missing().is_empty()
    }

    fn action(&self) -> String {
        let list: Vec<String> = missing()
            .into_iter()
            .map(|package| {
                let purpose = PACKAGES
                    .iter()
                    .find(|(name, _)| *name == package)
                    .map_or("", |(_, purpose)| *purpose);
                format!("{package} ({purpose})")
            })
            .collect();
        format!("installing with apt-get: {}", list.join(", "))
    }

    fn apply(&self) -> Result<()> {
        if !cmd::succeeds(Command::new("dpkg-query").arg("--version")) {
            bail!(
                "dpkg-query is not available: this is not a Debian-like system; install \
                 these by hand: {}",
                missing().join(" ")
            );
        }
        let missing = missing();
        if missing.contains(&"cloud-init") {
            disable_cloud_init()?;
        }
        cmd::run(Command::new("apt-get").arg("update"))?;
        cmd::run(
            Command::new("apt-get")
                .args(["install", "-y", "--no-install-recommends"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
    }
}

/// The tests only run `cloud-init schema`; the file cloud-init documents for turning it
/// off keeps it from configuring this machine at its next boot (host keys, network).
fn disable_cloud_init() -> Result<()> {
    let marker = std::path::Path::new("/etc/cloud/cloud-init.disabled");
    std::fs::create_dir_all("/etc/cloud").context("creating /etc/cloud")?;
    std::fs::write(
        marker,
        "written by cargo xtask setup: the tests only run `cloud-init schema`\n",
    )
    .with_context(|| format!("writing {}", marker.display()))
}
