//! The lab topology: client, load balancer, switch and backends, each in its
//! own network namespace, torn down on drop.
//!
//! Two-NIC mode (default):
//!
//! ```text
//!  {p}cl                 {p}lb                          {p}sw                {p}bI
//!  cl0 10.10.0.2/24 ---- lbc 10.10.0.1/24
//!                        lbb 10.1.0.1/24  ---- swlb ─┐
//!                                                    br0 ─ swbI ---- eth0 10.1.0.(10+I)/24
//! ```
//!
//! One-NIC mode (`LabSpec::one_nic`): the client hangs off the bridge too
//! (`cl0` 10.1.0.200/24 <-> `swcl`), the LB only has `lbb` and replies from the
//! backends reach the client through the LB (`10.1.0.200/32 via 10.1.0.1` on
//! every backend), so an XDP program answers out of the interface it received
//! on (XDP_TX).
//!
//! Client and backends have default routes via the LB; the LB forwards
//! (`ip_forward=1`, `rp_filter=0`, `send_redirects=0`). VIPs are not assigned
//! anywhere: the client reaches them through its default route, and the XDP
//! program on the LB rewrites the packets. Every veth end has transmit
//! checksum offload off and GRO on (see /work/shared/PLATFORM.md). IPv6 is
//! disabled in every lab namespace so that no IPv6 chatter shows up in
//! packet counters, unless the lab is dual stack (`LabSpec::ipv6`): then every
//! link also has the IPv6 twin of its IPv4 address (`2001:db8:10::/64` on the
//! client link, `2001:db8:1::/64` on the bridge, the same host numbers, written
//! in hex: backend `i` at `2001:db8:1::{11+i}`), added without duplicate address
//! detection so that it is usable at once, with the same routes and forwarding.
//!
//! Backend indices in this API are 0-based positions in `LabSpec::backends`:
//! backend `i` lives in namespace `{p}b{i+1}` at `10.1.0.{11+i}` and is
//! plugged into switch port `swb{i+1}`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::backend_server::BackendServer;
use crate::netns::{self, NetNs};
use crate::peer_xdp::{attach_pass, PassProgram};
use crate::process::Daemon;

/// Client address in two-NIC mode.
pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 10, 0, 2);
/// LB address on the client link in two-NIC mode.
pub const LB_CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 10, 0, 1);
/// LB address on the backend (bridge) link.
pub const LB_BACKEND_ADDR: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
/// Client address in one-NIC mode.
pub const ONE_NIC_CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 200);
/// Most backends a lab can have (10.1.0.11 ..= 10.1.0.110).
pub const MAX_BACKENDS: usize = 100;
/// The IPv6 twins of the addresses above (dual-stack labs).
pub const CLIENT_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x10, 0, 0, 0, 0, 2);
pub const LB_CLIENT_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x10, 0, 0, 0, 0, 1);
pub const LB_BACKEND_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
pub const ONE_NIC_CLIENT_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x200);

/// An address family of a dual-stack lab: which addresses a service, a client or a
/// backend server uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// Both, IPv4 first.
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    /// The address of `family` in a pair of twins.
    pub fn pick(self, v4: Ipv4Addr, v6: Ipv6Addr) -> IpAddr {
        match self {
            Family::V4 => IpAddr::V4(v4),
            Family::V6 => IpAddr::V6(v6),
        }
    }

    /// The unspecified address (to bind a client socket to).
    pub fn any(self) -> IpAddr {
        self.pick(Ipv4Addr::UNSPECIFIED, Ipv6Addr::UNSPECIFIED)
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// One backend of a lab.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendSpec {
    pub name: String,
    pub zone: String,
}

impl BackendSpec {
    pub fn new(name: impl Into<String>, zone: impl Into<String>) -> Self {
        BackendSpec {
            name: name.into(),
            zone: zone.into(),
        }
    }
}

/// What to build.
#[derive(Clone, Debug, Default)]
pub struct LabSpec {
    pub backends: Vec<BackendSpec>,
    /// The LB has one interface; the client sits on the backend bridge.
    pub one_nic: bool,
    /// Dual stack: IPv6 addresses and routes beside the IPv4 ones (module docs).
    pub ipv6: bool,
    /// The LB's NICs run `lbd`'s tc program (`tc_interfaces`) instead of XDP: no XDP
    /// programs on their peers, and every veth keeps the offloads it is created with
    /// (transmit checksum and segmentation), as a container's veth does.
    pub tc: bool,
}

impl LabSpec {
    /// `n` backends named `b1`..`bn`, all in zone `z1`, two-NIC mode.
    pub fn with_backends(n: usize) -> Self {
        LabSpec {
            backends: (1..=n)
                .map(|i| BackendSpec::new(format!("b{i}"), "z1"))
                .collect(),
            one_nic: false,
            ipv6: false,
            tc: false,
        }
    }

    /// Three backends `b1`..`b3` in zones az-a, az-b, az-c, two-NIC mode.
    pub fn three_zones() -> Self {
        LabSpec {
            backends: vec![
                BackendSpec::new("b1", "az-a"),
                BackendSpec::new("b2", "az-b"),
                BackendSpec::new("b3", "az-c"),
            ],
            one_nic: false,
            ipv6: false,
            tc: false,
        }
    }

    /// Sets one-NIC mode.
    pub fn one_nic(mut self, one_nic: bool) -> Self {
        self.one_nic = one_nic;
        self
    }

    /// The LB's NICs at tc rather than XDP (see [`LabSpec::tc`]).
    pub fn tc(mut self, tc: bool) -> Self {
        self.tc = tc;
        self
    }

    /// Dual stack when `family` is IPv6 (an IPv4 lab has only IPv4).
    pub fn family(mut self, family: Family) -> Self {
        self.ipv6 = self.ipv6 || family == Family::V6;
        self
    }
}

/// A built lab; every namespace (and so every interface) is deleted on drop.
pub struct Lab {
    prefix: String,
    spec: LabSpec,
    client: String,
    lb: String,
    sw: String,
    backends: Vec<String>,
    // Detached on drop, before the namespaces go.
    peer_programs: Vec<PassProgram>,
    // Deleted on drop (after killing any process left inside).
    namespaces: Vec<NetNs>,
}

impl Lab {
    /// Builds the topology described in the module docs. Panics (after
    /// deleting whatever was already created) when a step fails, and with
    /// [`crate::needs::lab`]'s one message when the machine cannot run a lab.
    pub fn build(spec: &LabSpec) -> Lab {
        crate::needs::lab();
        assert!(
            spec.backends.len() <= MAX_BACKENDS,
            "a lab has at most {MAX_BACKENDS} backends"
        );
        let p = netns::unique_prefix();
        let mut lab = Lab {
            client: format!("{p}cl"),
            lb: format!("{p}lb"),
            sw: format!("{p}sw"),
            backends: (1..=spec.backends.len())
                .map(|i| format!("{p}b{i}"))
                .collect(),
            prefix: p,
            spec: spec.clone(),
            peer_programs: Vec::new(),
            namespaces: Vec::new(),
        };
        // From here on a panic drops `lab`, which deletes what exists so far.
        for name in lab.all_namespaces() {
            lab.namespaces.push(NetNs::create(&name));
            quiet_defaults(&name, spec.ipv6);
        }
        lab.wire();
        // Every veth peer of an LB interface runs XDP so that it takes the LB's XDP_TX
        // and XDP_REDIRECT frames promptly (see `peer_xdp`); tc's redirects are skbs.
        if !lab.spec.tc {
            lab.peer_programs.push(attach_pass(&lab.sw, "swlb"));
            if !lab.spec.one_nic {
                lab.peer_programs.push(attach_pass(&lab.client, "cl0"));
            }
        }
        lab
    }

    fn wire(&self) {
        let (cl, lb, sw) = (self.client.as_str(), self.lb.as_str(), self.sw.as_str());
        netns::ns_ip(
            sw,
            &[
                "link",
                "add",
                "br0",
                "type",
                "bridge",
                "stp_state",
                "0",
                "mcast_snooping",
                "0",
            ],
        );
        netns::ns_ip(sw, &["link", "set", "br0", "up"]);

        // (namespace, device) of every veth end, for ethtool below.
        let mut ends: Vec<(&str, String)> = Vec::new();

        // LB <-> switch.
        veth(lb, "lbb", sw, "swlb");
        ends.push((lb, "lbb".into()));
        ends.push((sw, "swlb".into()));
        netns::ns_ip(sw, &["link", "set", "swlb", "master", "br0", "up"]);
        netns::ns_ip(
            lb,
            &[
                "addr",
                "add",
                &format!("{LB_BACKEND_ADDR}/24"),
                "dev",
                "lbb",
            ],
        );
        netns::ns_ip(lb, &["link", "set", "lbb", "up"]);

        // Client.
        if self.spec.one_nic {
            veth(cl, "cl0", sw, "swcl");
            ends.push((sw, "swcl".into()));
            ends.push((cl, "cl0".into()));
            netns::ns_ip(sw, &["link", "set", "swcl", "master", "br0", "up"]);
            self.configure_client();
        } else {
            self.wire_client_nic();
        }

        // Backends.
        for (i, b) in self.backends.iter().enumerate() {
            let port = format!("swb{}", i + 1);
            veth(b, "eth0", sw, &port);
            ends.push((b, "eth0".into()));
            ends.push((sw, port.clone()));
            netns::ns_ip(sw, &["link", "set", &port, "master", "br0", "up"]);
            let addr = self.backend_addr(i);
            netns::ns_ip(b, &["addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
            netns::ns_ip(b, &["link", "set", "eth0", "up"]);
            netns::ns_ip(
                b,
                &[
                    "route",
                    "add",
                    "default",
                    "via",
                    &LB_BACKEND_ADDR.to_string(),
                ],
            );
            if self.spec.one_nic {
                netns::ns_ip(
                    b,
                    &[
                        "route",
                        "add",
                        &format!("{ONE_NIC_CLIENT_ADDR}/32"),
                        "via",
                        &LB_BACKEND_ADDR.to_string(),
                    ],
                );
            }
            if self.spec.ipv6 {
                add_addr6(b, "eth0", self.backend_addr6(i));
                let via = LB_BACKEND_ADDR6.to_string();
                netns::ns_ip(b, &["-6", "route", "add", "default", "via", &via]);
                if self.spec.one_nic {
                    let client = format!("{ONE_NIC_CLIENT_ADDR6}/128");
                    netns::ns_ip(b, &["-6", "route", "add", &client, "via", &via]);
                }
            }
        }
        if self.spec.ipv6 {
            add_addr6(lb, "lbb", LB_BACKEND_ADDR6);
            netns::ns_sysctl(lb, "net.ipv6.conf.all.forwarding", "1");
        }

        // The LB routes between its links.
        netns::ns_sysctl(lb, "net.ipv4.ip_forward", "1");
        let mut confs = vec!["all".to_string(), "default".to_string()];
        confs.extend(self.lb_interfaces());
        for c in &confs {
            netns::ns_sysctl(lb, &format!("net.ipv4.conf.{c}.rp_filter"), "0");
            // One-NIC mode forwards out of the receiving interface; no ICMP
            // redirects that would teach hosts to bypass the LB.
            netns::ns_sysctl(lb, &format!("net.ipv4.conf.{c}.send_redirects"), "0");
        }

        // Checksums complete in the frame; veth peers accept XDP frames.
        if !self.spec.tc {
            for (ns, dev) in &ends {
                netns::ns_ethtool(ns, &["-K", dev, "tx", "off", "gro", "on"]);
            }
        }
    }

    /// The client's address, up link and default route on `cl0`.
    fn configure_client(&self) {
        let cl = self.client.as_str();
        let client_addr = self.client_addr();
        netns::ns_ip(
            cl,
            &["addr", "add", &format!("{client_addr}/24"), "dev", "cl0"],
        );
        netns::ns_ip(cl, &["link", "set", "cl0", "up"]);
        netns::ns_ip(
            cl,
            &[
                "route",
                "add",
                "default",
                "via",
                &self.client_gateway().to_string(),
            ],
        );
        if self.spec.ipv6 {
            add_addr6(cl, "cl0", self.client_addr6());
            let via = self.client_gateway6().to_string();
            netns::ns_ip(cl, &["-6", "route", "add", "default", "via", &via]);
        }
    }

    /// The veth pair client `cl0` <-> LB `lbc` (two-NIC labs), configured.
    fn wire_client_nic(&self) {
        let (cl, lb) = (self.client.as_str(), self.lb.as_str());
        veth(cl, "cl0", lb, "lbc");
        netns::ns_ip(
            lb,
            &["addr", "add", &format!("{LB_CLIENT_ADDR}/24"), "dev", "lbc"],
        );
        netns::ns_ip(lb, &["link", "set", "lbc", "up"]);
        if self.spec.ipv6 {
            add_addr6(lb, "lbc", LB_CLIENT_ADDR6);
        }
        self.configure_client();
        netns::ns_sysctl(lb, "net.ipv4.conf.lbc.rp_filter", "0");
        netns::ns_sysctl(lb, "net.ipv4.conf.lbc.send_redirects", "0");
        if !self.spec.tc {
            netns::ns_ethtool(lb, &["-K", "lbc", "tx", "off", "gro", "on"]);
            netns::ns_ethtool(cl, &["-K", "cl0", "tx", "off", "gro", "on"]);
        }
    }

    /// Deletes the LB's client-facing NIC `lbc` (and with it the client's `cl0`), as an
    /// operator or a network manager replacing a device would (two-NIC labs).
    pub fn delete_client_nic(&self) {
        assert!(!self.spec.one_nic, "a one-NIC lab has no client NIC");
        netns::ns_ip(&self.lb, &["link", "del", "lbc"]);
    }

    /// Creates `lbc`/`cl0` again, configured as [`Lab::build`] made them (a new
    /// ifindex, no XDP from lbd).
    pub fn create_client_nic(&mut self) {
        self.wire_client_nic();
        let program = attach_pass(&self.client, "cl0");
        self.peer_programs.push(program);
    }

    fn all_namespaces(&self) -> Vec<String> {
        let mut v = vec![self.client.clone(), self.lb.clone(), self.sw.clone()];
        v.extend(self.backends.iter().cloned());
        v
    }

    /// The unique prefix of this lab's namespace names (e.g. `lb0p3k1`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn spec(&self) -> &LabSpec {
        &self.spec
    }

    /// Names of all namespaces of this lab.
    pub fn namespaces(&self) -> Vec<String> {
        self.all_namespaces()
    }

    pub fn client_ns(&self) -> &str {
        &self.client
    }

    pub fn lb_ns(&self) -> &str {
        &self.lb
    }

    /// The switch namespace (bridge `br0`, ports `swlb`, `swbI`, `swcl`).
    pub fn switch_ns(&self) -> &str {
        &self.sw
    }

    pub fn backend_count(&self) -> usize {
        self.backends.len()
    }

    /// Namespace of backend `i` (0-based): `{p}b{i+1}`.
    pub fn backend_ns(&self, i: usize) -> &str {
        &self.backends[i]
    }

    /// Address of backend `i` (0-based): `10.1.0.{11+i}`.
    pub fn backend_addr(&self, i: usize) -> Ipv4Addr {
        assert!(i < self.backends.len(), "backend index {i} out of range");
        Ipv4Addr::new(10, 1, 0, 11 + i as u8)
    }

    /// IPv6 address of backend `i` (0-based) in a dual-stack lab: `2001:db8:1::{11+i}`
    /// (the IPv4 host number written in hex).
    pub fn backend_addr6(&self, i: usize) -> Ipv6Addr {
        assert!(i < self.backends.len(), "backend index {i} out of range");
        Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x11 + i as u16)
    }

    /// Backend `i`'s address in `family` (IPv6 only in a dual-stack lab).
    pub fn backend_ip(&self, i: usize, family: Family) -> IpAddr {
        family.pick(self.backend_addr(i), self.backend_addr6(i))
    }

    /// The families this lab has addresses in.
    pub fn families(&self) -> Vec<Family> {
        if self.spec.ipv6 {
            Family::ALL.to_vec()
        } else {
            vec![Family::V4]
        }
    }

    /// Spec (name, zone) of backend `i` (0-based).
    pub fn backend_spec(&self, i: usize) -> &BackendSpec {
        &self.spec.backends[i]
    }

    /// The index of the backend named `name` (as its server answers, e.g. `b2`).
    pub fn backend_index(&self, name: &str) -> usize {
        self.spec
            .backends
            .iter()
            .position(|b| b.name == name)
            .unwrap_or_else(|| panic!("no backend named {name}"))
    }

    /// Interface of backend `i` (always `eth0`).
    pub fn backend_iface(&self, _i: usize) -> &'static str {
        "eth0"
    }

    /// Switch port (in [`Lab::switch_ns`]) that backend `i` is plugged into.
    pub fn backend_switch_port(&self, i: usize) -> String {
        assert!(i < self.backends.len(), "backend index {i} out of range");
        format!("swb{}", i + 1)
    }

    /// Unplugs (`up = false`) or replugs backend `i` at the switch.
    pub fn set_backend_link(&self, i: usize, up: bool) {
        let port = self.backend_switch_port(i);
        netns::ns_ip(
            &self.sw,
            &["link", "set", &port, if up { "up" } else { "down" }],
        );
    }

    /// 10.10.0.2, or 10.1.0.200 in one-NIC mode.
    pub fn client_addr(&self) -> Ipv4Addr {
        if self.spec.one_nic {
            ONE_NIC_CLIENT_ADDR
        } else {
            CLIENT_ADDR
        }
    }

    /// 2001:db8:10::2, or 2001:db8:1::200 in one-NIC mode (dual-stack labs).
    pub fn client_addr6(&self) -> Ipv6Addr {
        if self.spec.one_nic {
            ONE_NIC_CLIENT_ADDR6
        } else {
            CLIENT_ADDR6
        }
    }

    /// The client's address in `family`.
    pub fn client_ip(&self, family: Family) -> IpAddr {
        family.pick(self.client_addr(), self.client_addr6())
    }

    /// The client's interface (always `cl0`).
    pub fn client_iface(&self) -> &'static str {
        "cl0"
    }

    /// The LB address the client routes through: 10.10.0.1, or 10.1.0.1 in
    /// one-NIC mode.
    pub fn client_gateway(&self) -> Ipv4Addr {
        if self.spec.one_nic {
            LB_BACKEND_ADDR
        } else {
            LB_CLIENT_ADDR
        }
    }

    /// The IPv6 twin of [`Lab::client_gateway`].
    pub fn client_gateway6(&self) -> Ipv6Addr {
        if self.spec.one_nic {
            LB_BACKEND_ADDR6
        } else {
            LB_CLIENT_ADDR6
        }
    }

    /// The LB address the backends route through (10.1.0.1).
    pub fn backend_gateway(&self) -> Ipv4Addr {
        LB_BACKEND_ADDR
    }

    /// The LB address the backends route through in `family` (where lbd's probes come
    /// from).
    pub fn backend_gateway_ip(&self, family: Family) -> IpAddr {
        family.pick(LB_BACKEND_ADDR, LB_BACKEND_ADDR6)
    }

    /// LB interfaces to attach XDP to: `["lbc", "lbb"]`, or `["lbb"]` in
    /// one-NIC mode.
    pub fn lb_interfaces(&self) -> Vec<String> {
        if self.spec.one_nic {
            vec!["lbb".into()]
        } else {
            vec!["lbc".into(), "lbb".into()]
        }
    }

    /// LB interface facing the client (`lbc`, or `lbb` in one-NIC mode).
    pub fn lb_client_iface(&self) -> &'static str {
        if self.spec.one_nic {
            "lbb"
        } else {
            "lbc"
        }
    }

    /// LB interface facing the backends (`lbb`).
    pub fn lb_backend_iface(&self) -> &'static str {
        "lbb"
    }

    /// Runs `program args...` in namespace `ns` (via `nsenter --net`, so the
    /// host bpffs stays visible); returns stdout, panics naming the command
    /// and its stderr on failure.
    #[track_caller]
    pub fn exec(&self, ns: &str, program: &str, args: &[&str]) -> String {
        netns::ns_exec(ns, program, args)
    }

    /// [`Lab::exec`] returning the error instead of panicking.
    pub fn try_exec(&self, ns: &str, program: &str, args: &[&str]) -> Result<String, String> {
        netns::try_ns_exec(ns, program, args)
    }

    /// `ip -n NS ARGS...`.
    #[track_caller]
    pub fn ip(&self, ns: &str, args: &[&str]) -> String {
        netns::ns_ip(ns, args)
    }

    /// Runs `f` on a thread inside namespace `ns`.
    pub fn run_in<T: Send>(&self, ns: &str, f: impl FnOnce() -> T + Send) -> T {
        netns::run_in(ns, f)
    }

    /// Starts a long-running process inside namespace `ns` (see [`Daemon`]).
    pub fn spawn_daemon(&self, ns: &str, program: &std::path::Path, args: &[&str]) -> Daemon {
        Daemon::spawn_in_ns(ns, program, args)
    }

    /// Starts one [`BackendServer`] per backend and family of the lab on
    /// `backend_ip(i, family):port`, named after `spec.backends[i].name`.
    pub fn start_backends(&self, port: u16) -> Vec<BackendServer> {
        (0..self.backends.len())
            .flat_map(|i| self.start_backend(i, port))
            .collect()
    }

    /// Backend `i`'s servers on `port`, one per family of the lab.
    pub fn start_backend(&self, i: usize, port: u16) -> Vec<BackendServer> {
        self.families()
            .into_iter()
            .map(|family| {
                BackendServer::start(
                    &self.backends[i],
                    self.backend_ip(i, family),
                    port,
                    &self.spec.backends[i].name,
                )
            })
            .collect()
    }

    /// Installs permanent neighbour (ARP) entries everywhere along the paths
    /// client <-> LB <-> backends, so that the first packet of a test never
    /// waits for ARP (and `bpf_fib_lookup` in the LB finds the neighbours).
    pub fn add_static_neighbors(&self) {
        let lbb_mac = netns::link_mac(&self.lb, "lbb");
        for (i, b) in self.backends.iter().enumerate() {
            let mac = netns::link_mac(b, "eth0");
            let addr = self.backend_addr(i).to_string();
            neigh(&self.lb, &addr, &mac, "lbb");
            neigh(b, &LB_BACKEND_ADDR.to_string(), &lbb_mac, "eth0");
        }
        let cl_mac = netns::link_mac(&self.client, "cl0");
        let lb_if = self.lb_client_iface();
        let lb_mac = netns::link_mac(&self.lb, lb_if);
        neigh(&self.lb, &self.client_addr().to_string(), &cl_mac, lb_if);
        neigh(
            &self.client,
            &self.client_gateway().to_string(),
            &lb_mac,
            "cl0",
        );
    }
}

impl std::fmt::Debug for Lab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lab")
            .field("prefix", &self.prefix)
            .field("one_nic", &self.spec.one_nic)
            .field("backends", &self.backends)
            .finish()
    }
}

/// Creates a veth pair with each end directly inside its namespace, so
/// nothing ever appears in (or collides in) the host namespace.
fn veth(ns_a: &str, dev_a: &str, ns_b: &str, dev_b: &str) {
    netns::ip(&[
        "link", "add", dev_a, "netns", ns_a, "type", "veth", "peer", "name", dev_b, "netns", ns_b,
    ]);
}

fn neigh(ns: &str, addr: &str, mac: &str, dev: &str) {
    netns::ns_ip(
        ns,
        &[
            "neigh",
            "replace",
            addr,
            "lladdr",
            mac,
            "dev",
            dev,
            "nud",
            "permanent",
        ],
    );
}

/// No IPv6 chatter (unless the lab is dual stack, `ipv6`) and no ICMP redirects being
/// honoured in lab namespaces.
fn quiet_defaults(ns: &str, ipv6: bool) {
    for c in ["all", "default"] {
        if ipv6 {
            // Interfaces made later inherit `default`: usable addresses at once, no
            // router advertisements or redirects taken.
            for (key, value) in [
                ("disable_ipv6", "0"),
                ("accept_dad", "0"),
                ("accept_ra", "0"),
                ("accept_redirects", "0"),
            ] {
                netns::ns_sysctl(ns, &format!("net.ipv6.conf.{c}.{key}"), value);
            }
        } else {
            // IPv6 may be compiled out; that is as quiet as it gets.
            let _ = netns::try_ns_sysctl(ns, &format!("net.ipv6.conf.{c}.disable_ipv6"), "1");
        }
        netns::ns_sysctl(ns, &format!("net.ipv4.conf.{c}.accept_redirects"), "0");
    }
}

/// `address`/64 on `dev`, usable at once (no duplicate address detection).
fn add_addr6(ns: &str, dev: &str, address: Ipv6Addr) {
    let address = format!("{address}/64");
    netns::ns_ip(ns, &["-6", "addr", "add", &address, "dev", dev, "nodad"]);
}
