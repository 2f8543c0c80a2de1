//! The tier lab's namespaces and links: a client, router R1, N LB nodes, router R2 and
//! one backend per zone, torn down on drop.
//!
//! ```text
//!  {p}cl            {p}r1                {p}nI (I = 1..N)               {p}r2                {p}bZ (Z = 1..3)
//!  cl0 10.10.0.2 -- c0 10.10.0.1
//!                   nI 10.20.I.1 ------- up0 10.20.I.2
//!                                        dn0 10.30.I.2 ---------------- nI 10.30.I.1
//!                                                                       bZ 10.1.Z.1 ------- eth0 10.1.Z.10
//! ```
//!
//! Every link is a veth pair of its own (so a node's links can go down one node at a
//! time). The routers forward with `fib_multipath_hash_policy=1` (5-tuple), skip next
//! hops whose link is down (`ignore_routes_with_linkdown`, as a router with a dead
//! port does), and run the rehash tc program on every port (see `rehash_tc`). Their
//! routes to the VIP (R1) and back to the clients (R2) come from BGP (see `bird`),
//! nothing else is routed between them: a node's own routes are static (clients via
//! R1, backends via R2). Transmit checksum offload is off and GRO on on every veth end,
//! and the routers' ports facing the nodes run `lb_pass` (see `peer_xdp`).
//!
//! For the DSR modes (see `mode`) R1 and R2 also share a link of their own (`r2` 10.40.0.1
//! -- `r1` 10.40.0.2), over which R2 routes the client's /32: the backends' replies
//! bypass the tier. With `dsr_l2` the nodes and backends are on one segment instead, a
//! bridge in R2 (10.30.0.1/16) with ports `nK` and `bZ`: node `dn0` 10.30.K.2/16,
//! backend `eth0` 10.30.(100+Z).10/16 (there [`TierLab::hang_node`] does not apply:
//! bridged frames do not pass R2's inet hooks).
use std::{net::Ipv4Addr, path::Path};

use crate::{
    netns::{self, NetNs},
    peer_xdp::{attach_pass, PassProgram},
    rehash_tc::attach_rehash,
    running_lb::{BACKEND_PORT, PIN_ROOT},
    tier::mode::TierMode,
};

pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 10, 0, 2);
pub const CLIENT_NET: &str = "10.10.0.0/24";
/// The backends' subnets (10.1.Z.0/24), as the nodes route them.
pub const BACKEND_NETS: &str = "10.1.0.0/16";
pub const ZONES: [&str; 3] = ["az-a", "az-b", "az-c"];
/// Most nodes a tier lab has.
pub const MAX_NODES: usize = 8;
/// R1's and R2's ends of their direct link (DSR modes: the backends' replies).
pub const R1_RETURN_ADDR: Ipv4Addr = Ipv4Addr::new(10, 40, 0, 1);
pub const R2_RETURN_ADDR: Ipv4Addr = Ipv4Addr::new(10, 40, 0, 2);
/// R2's address on the one segment of a `dsr_l2` lab.
pub const R2_SEGMENT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 30, 0, 1);

/// See the module docs.
pub struct TierLab {
    prefix: String,
    nodes: usize,
    mode: TierMode,
    peer_programs: Vec<PassProgram>,
    namespaces: Vec<NetNs>,
}

impl TierLab {
    /// Builds the topology with `nodes` LB nodes for a NAT service. Panics (after
    /// deleting what exists) when a step fails.
    pub fn build(nodes: usize) -> TierLab {
        TierLab::build_for(nodes, TierMode::Nat)
    }

    /// [`TierLab::build`] shaped for a service in `mode` (see the module docs).
    pub fn build_for(nodes: usize, mode: TierMode) -> TierLab {
        crate::needs::lab();
        assert!(
            (1..=MAX_NODES).contains(&nodes),
            "a tier lab has 1..={MAX_NODES} nodes"
        );
        let mut lab = TierLab {
            prefix: netns::unique_prefix(),
            nodes,
            mode,
            peer_programs: Vec::new(),
            namespaces: Vec::new(),
        };
        for name in lab.all_namespaces() {
            lab.namespaces.push(NetNs::create(&name));
            for c in ["all", "default"] {
                let _ =
                    netns::try_ns_sysctl(&name, &format!("net.ipv6.conf.{c}.disable_ipv6"), "1");
                netns::ns_sysctl(&name, &format!("net.ipv4.conf.{c}.accept_redirects"), "0");
            }
        }
        lab.wire();
        for i in 0..nodes {
            let port = format!("n{}", i + 1);
            lab.peer_programs.push(attach_pass(&lab.r1(), &port));
            lab.peer_programs.push(attach_pass(&lab.r2(), &port));
        }
        let pin = |r: &str| Path::new(PIN_ROOT).join(format!("{r}-rehash"));
        attach_rehash(&lab.r1(), &lab.r1_ports(), &pin(&lab.r1()));
        attach_rehash(&lab.r2(), &lab.r2_ports(), &pin(&lab.r2()));
        lab
    }

    fn all_namespaces(&self) -> Vec<String> {
        let mut v = vec![self.client(), self.r1(), self.r2()];
        v.extend((0..self.nodes).map(|i| self.node_ns(i)));
        v.extend((0..ZONES.len()).map(|z| self.backend_ns(z)));
        v
    }

    /// R1's ports: one per node (`nK`), and the client's (`c0`).
    fn r1_ports(&self) -> Vec<String> {
        let mut v: Vec<String> = (1..=self.nodes).map(|k| format!("n{k}")).collect();
        v.push("c0".into());
        v
    }

    /// R2's ports: one per node (`nK`), and one per backend (`bZ`).
    fn r2_ports(&self) -> Vec<String> {
        let mut v: Vec<String> = (1..=self.nodes).map(|k| format!("n{k}")).collect();
        v.extend((1..=ZONES.len()).map(|z| format!("b{z}")));
        v
    }

    fn wire(&self) {
        let (cl, r1, r2) = (self.client(), self.r1(), self.r2());
        let mut ends: Vec<(String, String)> = Vec::new();
        let one_segment = self.mode.one_segment();
        if one_segment {
            netns::ns_ip(&r2, &["link", "add", "br0", "type", "bridge"]);
            let addr = format!("{R2_SEGMENT_ADDR}/16");
            netns::ns_ip(&r2, &["addr", "add", &addr, "dev", "br0"]);
            netns::ns_ip(&r2, &["link", "set", "br0", "up"]);
        }
        // An empty address: a port of R2's bridge.
        let mut link = |a: &str, da: &str, addr_a: String, b: &str, db: &str, addr_b: String| {
            netns::ip(&[
                "link", "add", da, "netns", a, "type", "veth", "peer", "name", db, "netns", b,
            ]);
            for (ns, dev, addr) in [(a, da, addr_a), (b, db, addr_b)] {
                if addr.is_empty() {
                    netns::ns_ip(ns, &["link", "set", dev, "master", "br0"]);
                } else {
                    netns::ns_ip(ns, &["addr", "add", &addr, "dev", dev]);
                }
                netns::ns_ip(ns, &["link", "set", dev, "up"]);
                ends.push((ns.to_string(), dev.to_string()));
            }
        };
        let r2_port = |addr: String| if one_segment { String::new() } else { addr };
        link(
            &cl,
            "cl0",
            format!("{CLIENT_ADDR}/24"),
            &r1,
            "c0",
            "10.10.0.1/24".into(),
        );
        for i in 0..self.nodes {
            let n = self.node_ns(i);
            let k = i + 1;
            link(
                &r1,
                &format!("n{k}"),
                format!("10.20.{k}.1/24"),
                &n,
                "up0",
                format!("10.20.{k}.2/24"),
            );
            link(
                &r2,
                &format!("n{k}"),
                r2_port(format!("10.30.{k}.1/24")),
                &n,
                "dn0",
                format!("10.30.{k}.2/{}", if one_segment { 16 } else { 24 }),
            );
        }
        for z in 0..ZONES.len() {
            let k = z + 1;
            link(
                &r2,
                &format!("b{k}"),
                r2_port(format!("{}/24", self.backend_gateway(z))),
                &self.backend_ns(z),
                "eth0",
                format!(
                    "{}/{}",
                    self.backend_addr(z),
                    if one_segment { 16 } else { 24 }
                ),
            );
        }
        if self.mode.is_dsr() {
            link(
                &r1,
                "r2",
                format!("{R1_RETURN_ADDR}/30"),
                &r2,
                "r1",
                format!("{R2_RETURN_ADDR}/30"),
            );
        }
        for (ns, dev) in &ends {
            netns::ns_ethtool(ns, &["-K", dev, "tx", "off", "gro", "on"]);
        }
        netns::ns_ip(&cl, &["route", "add", "default", "via", "10.10.0.1"]);
        for z in 0..ZONES.len() {
            netns::ns_ip(
                &self.backend_ns(z),
                &[
                    "route",
                    "add",
                    "default",
                    "via",
                    &self.backend_gateway(z).to_string(),
                ],
            );
        }
        if self.mode.is_dsr() {
            let client = format!("{CLIENT_ADDR}/32");
            let via = R1_RETURN_ADDR.to_string();
            netns::ns_ip(&r2, &["route", "add", &client, "via", &via]);
        }
        // The DSR modes' return link and R2's bridge: not ECMP ports, but forwarding.
        let mut r1_ports = self.r1_ports();
        let mut r2_ports = self.r2_ports();
        if self.mode.is_dsr() {
            r1_ports.push("r2".into());
            r2_ports.push("r1".into());
        }
        if one_segment {
            r2_ports.push("br0".into());
        }
        for (r, ports) in [(&r1, r1_ports), (&r2, r2_ports)] {
            netns::ns_sysctl(r, "net.ipv4.ip_forward", "1");
            netns::ns_sysctl(r, "net.ipv4.fib_multipath_hash_policy", "1");
            let confs = ["all".to_string(), "default".to_string()];
            for c in confs.iter().chain(&ports) {
                netns::ns_sysctl(
                    r,
                    &format!("net.ipv4.conf.{c}.ignore_routes_with_linkdown"),
                    "1",
                );
                netns::ns_sysctl(r, &format!("net.ipv4.conf.{c}.rp_filter"), "0");
            }
        }
        for i in 0..self.nodes {
            let n = self.node_ns(i);
            netns::ns_sysctl(&n, "net.ipv4.ip_forward", "1");
            for c in ["all", "default", "up0", "dn0"] {
                netns::ns_sysctl(&n, &format!("net.ipv4.conf.{c}.rp_filter"), "0");
                netns::ns_sysctl(&n, &format!("net.ipv4.conf.{c}.send_redirects"), "0");
            }
            if self.mode.is_dsr() {
                // A probe through the tunnel is answered from the VIP, which the node
                // holds on `lo` while it announces it: without this the kernel drops
                // the answer as a martian (a local source).
                netns::ns_sysctl(&n, "net.ipv4.conf.dn0.accept_local", "1");
            }
            self.add_node_routes(i);
        }
    }

    /// The node's static routes: clients via R1, backends via R2 unless on the node's
    /// segment (the kernel drops them while the node's links are down).
    fn add_node_routes(&self, i: usize) {
        let n = self.node_ns(i);
        let k = i + 1;
        netns::ns_ip(
            &n,
            &[
                "route",
                "replace",
                CLIENT_NET,
                "via",
                &format!("10.20.{k}.1"),
            ],
        );
        if self.mode.one_segment() {
            return;
        }
        netns::ns_ip(
            &n,
            &[
                "route",
                "replace",
                BACKEND_NETS,
                "via",
                &format!("10.30.{k}.1"),
            ],
        );
    }

    /// Takes both links of node `i` down (as when the machine dies: the routers see
    /// their ports lose carrier), or brings them up again with the node's routes.
    pub fn set_node_links(&self, i: usize, up: bool) {
        let n = self.node_ns(i);
        for dev in ["up0", "dn0"] {
            netns::ns_ip(&n, &["link", "set", dev, if up { "up" } else { "down" }]);
        }
        if up {
            self.add_node_routes(i);
        }
    }

    /// Makes node `i` silent without touching a link: nftables on both routers drop
    /// everything to and from it (BGP, BFD, traffic), as a hung machine would.
    pub fn hang_node(&self, i: usize) {
        let port = format!("n{}", i + 1);
        let table = format!("hang{}", i + 1);
        for r in [self.r1(), self.r2()] {
            let rules = format!(
                "table inet {table} {{\n chain pre {{ type filter hook prerouting priority -300; iifname \"{port}\" drop; }}\n chain post {{ type filter hook postrouting priority 300; oifname \"{port}\" drop; }}\n}}\n"
            );
            nft_apply(&r, &rules);
        }
    }

    /// Undoes [`TierLab::hang_node`].
    pub fn unhang_node(&self, i: usize) {
        for r in [self.r1(), self.r2()] {
            netns::ns_exec(
                &r,
                "nft",
                &["delete", "table", "inet", &format!("hang{}", i + 1)],
            );
        }
    }

    /// Makes node `i` see the backend of zone `z` fail while every other node sees it
    /// healthy: nftables in the node drop what the node itself sends to the backend's
    /// port (its health probes; the clients' packets it forwards never pass `output`).
    pub fn cut_probes(&self, i: usize, z: usize) {
        let rules = format!(
            "table inet probecut {{\n chain out {{ type filter hook output priority 0; ip daddr {} tcp dport {BACKEND_PORT} drop; }}\n}}\n",
            self.backend_addr(z)
        );
        nft_apply(&self.node_ns(i), &rules);
    }

    /// Undoes [`TierLab::cut_probes`].
    pub fn restore_probes(&self, i: usize) {
        netns::ns_exec(
            &self.node_ns(i),
            "nft",
            &["delete", "table", "inet", "probecut"],
        );
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn nodes(&self) -> usize {
        self.nodes
    }

    pub fn mode(&self) -> TierMode {
        self.mode
    }

    pub fn client(&self) -> String {
        format!("{}cl", self.prefix)
    }

    pub fn r1(&self) -> String {
        format!("{}r1", self.prefix)
    }

    pub fn r2(&self) -> String {
        format!("{}r2", self.prefix)
    }

    /// Namespace of node `i` (0-based): `{p}n{i+1}`.
    pub fn node_ns(&self, i: usize) -> String {
        format!("{}n{}", self.prefix, i + 1)
    }

    /// Node `i`'s address towards R1 (10.20.{i+1}.2), its router id.
    pub fn node_up_addr(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 20, i as u8 + 1, 2)
    }

    /// Node `i`'s address towards R2 (10.30.{i+1}.2).
    pub fn node_down_addr(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 30, i as u8 + 1, 2)
    }

    /// Namespace of the backend of zone `z` (0-based): `{p}b{z+1}`.
    pub fn backend_ns(&self, z: usize) -> String {
        format!("{}b{}", self.prefix, z + 1)
    }

    /// Address of the backend of zone `z`: 10.1.{z+1}.10, or 10.30.{101+z}.10 on the
    /// one segment.
    pub fn backend_addr(&self, z: usize) -> Ipv4Addr {
        if self.mode.one_segment() {
            Ipv4Addr::new(10, 30, z as u8 + 101, 10)
        } else {
            Ipv4Addr::new(10, 1, z as u8 + 1, 10)
        }
    }

    /// The backend of zone `z`'s default gateway, R2: 10.1.{z+1}.1, or R2's address on
    /// the one segment.
    pub fn backend_gateway(&self, z: usize) -> Ipv4Addr {
        if self.mode.one_segment() {
            R2_SEGMENT_ADDR
        } else {
            Ipv4Addr::new(10, 1, z as u8 + 1, 1)
        }
    }

    /// R2's address as node `i`'s BGP neighbour.
    pub fn r2_addr_for_node(&self, i: usize) -> Ipv4Addr {
        if self.mode.one_segment() {
            R2_SEGMENT_ADDR
        } else {
            Ipv4Addr::new(10, 30, i as u8 + 1, 1)
        }
    }

    /// Name of the backend of zone `z` (`b1`..), as its server answers.
    pub fn backend_name(&self, z: usize) -> String {
        format!("b{}", z + 1)
    }

    /// Which node R1 sends the client's TCP connection from `sport` to `vip:port`
    /// through (0-based), as its FIB predicts it; `None` when it has no route.
    pub fn node_of_flow(&self, vip: Ipv4Addr, port: u16, sport: u16) -> Option<usize> {
        let out = netns::try_ns_ip(
            &self.r1(),
            &[
                "-j",
                "route",
                "get",
                &vip.to_string(),
                "from",
                &CLIENT_ADDR.to_string(),
                "iif",
                "c0",
                "ipproto",
                "tcp",
                "sport",
                &sport.to_string(),
                "dport",
                &port.to_string(),
            ],
        )
        .ok()?;
        let v: serde_json::Value = serde_json::from_str(&out).ok()?;
        let dev = v.as_array()?.first()?["dev"].as_str()?.to_string();
        dev.strip_prefix('n')?.parse::<usize>().ok().map(|k| k - 1)
    }
}

fn nft_apply(ns: &str, rules: &str) {
    let file = std::env::temp_dir().join(format!("{ns}-nft-{}.rules", std::process::id()));
    std::fs::write(&file, rules).unwrap_or_else(|e| panic!("writing {}: {e}", file.display()));
    let result = netns::try_ns_exec(ns, "nft", &["-f", file.to_str().expect("UTF-8")]);
    let _ = std::fs::remove_file(&file);
    result.unwrap_or_else(|e| panic!("nft in {ns}: {e}"));
}
