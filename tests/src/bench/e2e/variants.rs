//! The ways the benchmark sends the same traffic through the same LB namespace, each set
//! up on its own and torn down before the next, so that no variant pays for another's
//! hooks (an XDP program passing packets on, a conntrack table):
//!
//! - `direct`: straight to one backend, the LB namespace only routes (the ceiling);
//! - `xdp`: `lbd` attached to the LB's two NICs, the VIP served by XDP (NAT);
//! - `dsr_l2`, `ipip`, `gue`: `lbd` with the service in that direct-server-return mode;
//!   the backends hold the VIP on `lo` (through `lb-decap` for `ipip` and `gue`), serve
//!   on it and send their replies to the client on a segment of their own, not through
//!   the LB namespace ([`DirectReturn`]). These run the bulk download only;
//! - `haproxy`: HAProxy in TCP mode, the VIP on the LB's loopback;
//! - `nftables`: a DNAT rule with `numgen inc` round robin, conntrack doing the rest;
//! - `tc`: `lbd` with the LB's two NICs at tc (`tc_interfaces`), in the lab whose veths
//!   keep their offloads ([`Variant::OFFLOADED`]), where XDP cannot run.
use std::{
    net::{SocketAddrV4, TcpStream},
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use lb_userspace::kernel::pins::PinDir;

use super::{
    direct_return::DirectReturn, haproxy, nft, server::BenchServer, standard::IPERF_PORT, Workload,
};
use crate::{
    dsr_lab::{dsr_config, hold_vip_on_lo, Decap},
    netns,
    process::Daemon,
    running_lb::{lab_config, pin_dir, BACKEND_PORT, VIP, VIP_PORT},
    topology::Lab,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    Direct,
    Xdp,
    DsrL2,
    Ipip,
    Gue,
    Haproxy,
    Nftables,
    Tc,
}

impl Variant {
    pub const ALL: [Variant; 7] = [
        Variant::Direct,
        Variant::Xdp,
        Variant::DsrL2,
        Variant::Ipip,
        Variant::Gue,
        Variant::Haproxy,
        Variant::Nftables,
    ];
    /// The variants of the lab whose veths keep their offloads (`LabSpec::tc`).
    pub const OFFLOADED: [Variant; 4] = [
        Variant::Direct,
        Variant::Tc,
        Variant::Haproxy,
        Variant::Nftables,
    ];

    pub fn key(self) -> &'static str {
        match self {
            Variant::Direct => "direct",
            Variant::Xdp => "xdp",
            Variant::DsrL2 => "dsr_l2",
            Variant::Ipip => "ipip",
            Variant::Gue => "gue",
            Variant::Haproxy => "haproxy",
            Variant::Nftables => "nftables",
            Variant::Tc => "tc",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Variant::Direct => "straight to one backend (ceiling)",
            Variant::Xdp => "lbd, XDP (VIP)",
            Variant::DsrL2 => "lbd, XDP, dsr_l2 (VIP)",
            Variant::Ipip => "lbd, XDP, ipip (VIP)",
            Variant::Gue => "lbd, XDP, gue (VIP)",
            Variant::Haproxy => "HAProxy tcp mode (VIP)",
            Variant::Nftables => "nftables DNAT numgen (VIP)",
            Variant::Tc => "lbd, tc (VIP)",
        }
    }

    /// The service's mode for a direct-server-return variant.
    pub fn dsr_mode(self) -> Option<&'static str> {
        match self {
            Variant::DsrL2 | Variant::Ipip | Variant::Gue => Some(self.key()),
            _ => None,
        }
    }

    /// Whether the variant runs `workload`: the DSR variants run only the bulk download,
    /// the row their target is stated on.
    pub fn runs(self, workload: Workload) -> bool {
        self.dsr_mode().is_none() || workload == Workload::Bulk
    }

    /// Whether the LB is a process of its own whose CPU is shown apart.
    pub fn lb_process(self) -> bool {
        !matches!(self, Variant::Direct | Variant::Nftables)
    }
}

/// What tears a variant down again.
enum Undo {
    Nothing,
    Lbd(Daemon),
    Haproxy(Daemon),
    Nftables,
    /// Dropped in this order: lbd, the servers on the VIP, the backends' `lb-decap`, the
    /// return path.
    Dsr {
        lbd: Daemon,
        servers: Vec<BenchServer>,
        decaps: Vec<Decap>,
        direct_return: DirectReturn,
        /// `dsr_l2`: the VIP added to each backend's `lo` by hand.
        vip_on_lo: bool,
    },
}

/// A variant set up on the lab; torn down on drop.
pub struct Active<'a> {
    pub variant: Variant,
    /// Where the client connects.
    pub target: SocketAddrV4,
    /// Where iperf3 connects: one port that leads to backend 0's `iperf3 -s` alone.
    pub iperf_target: SocketAddrV4,
    /// The LB's process, whose CPU time is counted.
    pub lb_pid: Option<u32>,
    lab: &'a Lab,
    undo: Undo,
}

fn scratch(lab: &Lab, what: &str) -> PathBuf {
    std::env::temp_dir().join(format!("{}-{what}", lab.prefix()))
}

fn vip() -> SocketAddrV4 {
    SocketAddrV4::new(VIP, VIP_PORT)
}

/// Backend 0's iperf3 server.
pub fn iperf_server(lab: &Lab) -> SocketAddrV4 {
    SocketAddrV4::new(lab.backend_addr(0), IPERF_PORT)
}

/// The lab's service, and a second one on the VIP's [`IPERF_PORT`] with only backend 0.
fn lbd_config(lab: &Lab) -> String {
    let weights = vec![1; lab.backend_count()];
    format!(
        "{}  - name: iperf\n    vip: {VIP}\n    port: {IPERF_PORT}\n    protocol: tcp\n    \
         mode: nat\n    policy: maglev\n    backends:\n      \
         - {{ address: {}, port: {IPERF_PORT}, zone: {} }}\n",
        lab_config(lab, &weights),
        lab.backend_addr(0),
        lab.backend_spec(0).zone,
    )
}

fn backends(lab: &Lab) -> Vec<SocketAddrV4> {
    (0..lab.backend_count())
        .map(|i| SocketAddrV4::new(lab.backend_addr(i), BACKEND_PORT))
        .collect()
}

/// Starts `lbd` in `lab`'s LB namespace on `config`; returns once it serves.
fn start_lbd(lab: &Lab, lbd: &Path, config: &str) -> Daemon {
    let path = scratch(lab, "lbd.yaml");
    std::fs::write(&path, config).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    let path = path.to_str().expect("UTF-8 path").to_string();
    let mut d = lab.spawn_daemon(lab.lb_ns(), lbd, &["--config", &path]);
    // As long as the tests wait: the quick mode in CI starts a debug lbd on a
    // loaded machine, whose program load and verification can take that long.
    d.wait_for_log("serving", Duration::from_secs(90))
        .unwrap_or_else(|e| panic!("lbd did not start: {e}"));
    d
}

/// Makes the lab's backends DSR backends for `mode` (see the module docs) and starts
/// `lbd` with the service in it. The servers listen on every address at the VIP's port,
/// which the health probes (to each backend's own address) reach too.
fn activate_dsr(lab: &Lab, mode: &str, lbd: &Path, workers: usize) -> Undo {
    let l3 = mode != "dsr_l2";
    let mut decaps = Vec::new();
    for i in 0..lab.backend_count() {
        if l3 {
            decaps.push(Decap::attach(lab, i, VIP));
        } else {
            hold_vip_on_lo(lab.backend_ns(i), VIP);
        }
    }
    let servers = (0..lab.backend_count())
        .map(|i| {
            let any = SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, VIP_PORT);
            BenchServer::start(lab.backend_ns(i), any, &lab.backend_spec(i).name, workers)
        })
        .collect();
    Undo::Dsr {
        lbd: start_lbd(lab, lbd, &dsr_config(lab, mode)),
        servers,
        decaps,
        direct_return: DirectReturn::add(lab),
        vip_on_lo: !l3,
    }
}

/// Sets `variant` up on `lab` and waits until a connection to its target succeeds;
/// `workers` is the backends' server threads (the DSR variants start their own servers).
pub fn activate<'a>(lab: &'a Lab, variant: Variant, lbd: &Path, workers: usize) -> Active<'a> {
    let (target, undo) = match variant {
        Variant::Direct => (backends(lab)[0], Undo::Nothing),
        // The lab's config says which hook (`tc_interfaces` in a tc lab).
        Variant::Xdp | Variant::Tc => (vip(), Undo::Lbd(start_lbd(lab, lbd, &lbd_config(lab)))),
        Variant::DsrL2 | Variant::Ipip | Variant::Gue => {
            let mode = variant.dsr_mode().expect("a DSR variant");
            (vip(), activate_dsr(lab, mode, lbd, workers))
        }
        Variant::Haproxy => {
            lab.ip(
                lab.lb_ns(),
                &["addr", "add", &format!("{VIP}/32"), "dev", "lo"],
            );
            let path = scratch(lab, "haproxy.cfg");
            let threads = thread::available_parallelism().map_or(1, |n| n.get());
            let pinned = (SocketAddrV4::new(VIP, IPERF_PORT), iperf_server(lab));
            std::fs::write(
                &path,
                haproxy::config(vip(), &backends(lab), threads, pinned),
            )
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
            (vip(), Undo::Haproxy(haproxy::start(lab, &path)))
        }
        Variant::Nftables => {
            let addrs: Vec<_> = backends(lab).iter().map(|b| *b.ip()).collect();
            let pinned = (IPERF_PORT, iperf_server(lab));
            let rules = nft::ruleset(vip(), &addrs, BACKEND_PORT, pinned);
            nft::add(lab.lb_ns(), &rules, &scratch(lab, "rules.nft"));
            (vip(), Undo::Nftables)
        }
    };
    let lb_pid = match &undo {
        Undo::Lbd(d) | Undo::Haproxy(d) | Undo::Dsr { lbd: d, .. } => Some(d.pid()),
        _ => None,
    };
    let iperf_target = match variant {
        Variant::Direct => iperf_server(lab),
        _ => SocketAddrV4::new(VIP, IPERF_PORT),
    };
    let active = Active {
        variant,
        target,
        iperf_target,
        lb_pid,
        lab,
        undo,
    };
    active.wait_ready();
    active
}

impl Active<'_> {
    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let target = std::net::SocketAddr::V4(self.target);
        let mut last = String::new();
        while Instant::now() < deadline {
            match netns::run_in(self.lab.client_ns(), || {
                TcpStream::connect_timeout(&target, Duration::from_millis(500))
            }) {
                Ok(_) => return,
                Err(e) => last = e.to_string(),
            }
            thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "{}: {target} not reachable within 10 s: {last}",
            self.variant.key()
        );
    }

    /// Tears the variant down and returns what its LB reported, if anything (lbd logs
    /// its counters when it stops).
    pub fn finish(mut self) -> Option<String> {
        match &mut self.undo {
            Undo::Lbd(d) => {
                d.stop();
                let log = d.log();
                remove_pins(self.lab);
                Some(log)
            }
            _ => None,
        }
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        let lb = self.lab.lb_ns();
        match std::mem::replace(&mut self.undo, Undo::Nothing) {
            Undo::Nothing => {}
            Undo::Lbd(d) => {
                drop(d);
                remove_pins(self.lab);
            }
            Undo::Haproxy(d) => {
                drop(d);
                let cidr = format!("{VIP}/32");
                let _ = netns::try_ns_ip(lb, &["addr", "del", &cidr, "dev", "lo"]);
                let _ = std::fs::remove_file(scratch(self.lab, "haproxy.cfg"));
            }
            Undo::Nftables => nft::delete(lb),
            Undo::Dsr {
                lbd,
                servers,
                decaps,
                direct_return,
                vip_on_lo,
            } => {
                drop(lbd);
                remove_pins(self.lab);
                drop(servers);
                drop(decaps);
                drop(direct_return);
                if vip_on_lo {
                    let cidr = format!("{VIP}/32");
                    for i in 0..self.lab.backend_count() {
                        let ns = self.lab.backend_ns(i);
                        let _ = netns::try_ns_ip(ns, &["addr", "del", &cidr, "dev", "lo"]);
                    }
                }
            }
        }
        let _ = std::fs::remove_file(scratch(self.lab, "lbd.yaml"));
    }
}

/// lbd leaves its data path pinned and forwarding when it stops; the next variant must
/// meet the lab without it (and the next lbd must not adopt links of a past round).
fn remove_pins(lab: &Lab) {
    if let Err(e) = PinDir::new(pin_dir(lab)).remove_all() {
        eprintln!("removing lbd's pinned data path: {e}");
    }
}

/// The service counters lbd logs when it stops.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LbdCounters {
    pub new_flows: u64,
    pub packets_to_backend: u64,
    pub packets_to_client: u64,
}

impl LbdCounters {
    pub fn add(&mut self, other: LbdCounters) {
        self.new_flows += other.new_flows;
        self.packets_to_backend += other.packets_to_backend;
        self.packets_to_client += other.packets_to_client;
    }
}

/// Reads `new_flows=`, `packets_to_backend=` and `packets_to_client=` of the service line
/// of lbd's log.
pub fn lbd_counters(log: &str) -> Option<LbdCounters> {
    let line = log
        .lines()
        .find(|l| l.contains("service web: new_flows="))?;
    let field = |name: &str| -> Option<u64> {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))?
            .parse()
            .ok()
    };
    Some(LbdCounters {
        new_flows: field("new_flows")?,
        packets_to_backend: field("packets_to_backend")?,
        packets_to_client: field("packets_to_client")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_read_from_lbd_s_last_words() {
        let log = "[INFO] serving 1 services\n\
                   [INFO lb_userspace::daemon] service web: new_flows=1234 packets_to_backend=9 packets_to_client=8\n";
        let want = LbdCounters {
            new_flows: 1234,
            packets_to_backend: 9,
            packets_to_client: 8,
        };
        assert_eq!(lbd_counters(log), Some(want));
        assert_eq!(lbd_counters("nothing"), None);
    }
}
