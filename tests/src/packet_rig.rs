//! A namespace in which the real XDP program runs under BPF_PROG_TEST_RUN with routes and
//! permanent neighbours that make `bpf_fib_lookup` answer like on a real gateway. Used by
//! the packet tests and the per-packet benchmark.
//!
//! - `c0` (10.10.0.1/24), client side: client 10.10.0.2, and a backend 10.10.0.77 that
//!   sits behind the same NIC (for XDP_TX);
//! - `b0` (10.1.0.1/24), backend side: backends 10.1.0.11-13, and 10.1.0.99 with no
//!   neighbour entry.
//!
//! And the same over IPv6 (addresses without duplicate address detection, so they are
//! usable at once): `c0` 2001:db8:10::1/64 with the client 2001:db8:10::2, `b0`
//! 2001:db8:1::1/64 with backends 2001:db8:1::11-13.
use std::net::{Ipv4Addr, Ipv6Addr};

use aya::programs::{SchedClassifier, TestRun, TestRunOptions, TestRunResult, Xdp};
use lb_common::{
    flow::FlowKey,
    flow_slots::{buddies, forward_index},
    hash::{flow_hash, source_hash},
    service::POLICY_SOURCE_HASH,
};
use lb_userspace::{
    control::tables::Controller,
    kernel::KernelDataplane,
    model::{config, edge::EdgeRuleKey},
};

use crate::{
    frame::{parse_mac, Frame, Mac},
    netns::{self, NetNs},
};

pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 10, 0, 2);
pub const CLIENT_MAC: Mac = [0x02, 0, 0, 0, 0x0a, 0x02];
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
/// The IPv6 client, behind `c0`, with [`CLIENT_MAC`].
pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x10, 0, 0, 0, 0, 2);
/// The VIP of `web6` and `dns6` (`rig_web6_service!`, `rig_dns6_service!`).
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x100);

/// IPv6 backend `2001:db8:1::<last>` behind `b0`, its last group written as `last` reads
/// (`backend6(11)` is `2001:db8:1::11`), with MAC [`backend_mac`] of its last byte.
pub fn backend6(last: u8) -> Ipv6Addr {
    format!("2001:db8:1::{last}")
        .parse()
        .expect("an IPv6 address")
}

/// [`CONFIG`]'s `cluster.hash_seed` and `cluster.ring_size`.
pub const HASH_SEED: u32 = 42;
pub const RING_SIZE: u32 = 1009;

/// XDP return codes.
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;
/// tc's actions (`TC_ACT_*`), which `lb_tc` returns; `TC_ACT_UNSPEC` is -1, as the
/// test run's u32 return value shows it.
pub const TC_ACT_UNSPEC: u32 = u32::MAX;
pub const TC_ACT_OK: u32 = 0;
pub const TC_ACT_SHOT: u32 = 2;
pub const TC_ACT_REDIRECT: u32 = 7;

pub fn backend_mac(last_octet: u8) -> Mac {
    [0x02, 0, 0, 0, 0x01, last_octet]
}

/// The rig's config: `web` on the VIP with three backends behind `b0`, `same-nic` with
/// one behind `c0`, `unresolved` whose backend has no neighbour, `empty` with none, and
/// one service per other policy: `rr` (weights 3:1:1), `lc`, `sh`.
pub const CONFIG: &str = crate::rig_config_with!(
    r#"  - { name: same-nic, vip: 10.0.0.101, port: 80, backends: [{ address: 10.10.0.77, port: 8080, zone: az-a }] }
  - { name: unresolved, vip: 10.0.0.102, port: 80, backends: [{ address: 10.1.0.99, port: 8080, zone: az-a }] }
  - { name: empty, vip: 10.0.0.103, port: 80, backends: [] }
  - name: rr
    vip: 10.0.0.110
    port: 80
    policy: round_robin
    backends:
      - { address: 10.1.0.11, port: 8080, zone: az-a, weight: 3 }
      - { address: 10.1.0.12, port: 8080, zone: az-b, weight: 1 }
      - { address: 10.1.0.13, port: 8080, zone: az-c, weight: 1 }
  - name: lc
    vip: 10.0.0.111
    port: 80
    policy: least_conn
    backends:
      - { address: 10.1.0.11, port: 8080, zone: az-a }
      - { address: 10.1.0.12, port: 8080, zone: az-b }
  - name: sh
    vip: 10.0.0.112
    port: 80
    policy: source_hash
    backends:
      - { address: 10.1.0.11, port: 8080, zone: az-a }
      - { address: 10.1.0.12, port: 8080, zone: az-b }
      - { address: 10.1.0.13, port: 8080, zone: az-c }
"#
);

/// The rig's config up to and including `web` (see [`CONFIG`]), followed by
/// `$services`, more entries of the `services` list: for packet tests that want services
/// of their own beside `web` on the same seed, ring and limits.
#[macro_export]
macro_rules! rig_config_with {
    ($($services:tt)+) => {
        concat!(
            r#"
node: { zone: az-a }
interfaces: [c0, b0]
cluster: { ring_size: 1009, hash_seed: 42 }
limits: { flow_table_size: 4096, max_services: 8, max_backends: 64 }
services:
  - name: web
    vip: 10.0.0.100
    port: 80
    backends:
      - { address: 10.1.0.11, port: 8080, zone: az-a }
      - { address: 10.1.0.12, port: 8080, zone: az-b }
      - { address: 10.1.0.13, port: 8080, zone: az-c }
"#,
            $($services)+
        )
    };
}

/// One Maglev service per DSR mode (entries of the `services` list, for
/// [`rig_config_with`]): `l2` (`dsr_l2`) on 10.0.0.120, `ipip` on .121 and `gue` on .122,
/// port 80, on the rig's three backends at the VIP's port.
#[macro_export]
macro_rules! rig_dsr_services {
    () => {
        r#"  - name: l2
    vip: 10.0.0.120
    port: 80
    mode: dsr_l2
    backends:
      - { address: 10.1.0.11, port: 80, zone: az-a }
      - { address: 10.1.0.12, port: 80, zone: az-b }
      - { address: 10.1.0.13, port: 80, zone: az-c }
  - name: ipip
    vip: 10.0.0.121
    port: 80
    mode: ipip
    backends:
      - { address: 10.1.0.11, port: 80, zone: az-a }
      - { address: 10.1.0.12, port: 80, zone: az-b }
      - { address: 10.1.0.13, port: 80, zone: az-c }
  - name: gue
    vip: 10.0.0.122
    port: 80
    mode: gue
    backends:
      - { address: 10.1.0.11, port: 80, zone: az-a }
      - { address: 10.1.0.12, port: 80, zone: az-b }
      - { address: 10.1.0.13, port: 80, zone: az-c }
"#
    };
}

/// `web6`, the IPv6 TCP service of the IPv6 packet tests and bench (an entry of the
/// `services` list, for [`rig_config_with`]): 2001:db8:100::100 port 80 on the rig's
/// three IPv6 backends, port 8080.
#[macro_export]
macro_rules! rig_web6_service {
    () => {
        r#"  - name: web6
    vip: "2001:db8:100::100"
    port: 80
    backends:
      - { address: "2001:db8:1::11", port: 8080, zone: az-a }
      - { address: "2001:db8:1::12", port: 8080, zone: az-b }
      - { address: "2001:db8:1::13", port: 8080, zone: az-c }
"#
    };
}

/// One Maglev IPv6 service per DSR mode (entries of the `services` list, for
/// [`rig_config_with`]): `l2v6` (`dsr_l2`) on 2001:db8:100::120, `ipip6` on ::121 and
/// `gue6` on ::122, port 80, on the rig's three IPv6 backends at the VIP's port.
#[macro_export]
macro_rules! rig_dsr6_services {
    () => {
        r#"  - name: l2v6
    vip: "2001:db8:100::120"
    port: 80
    mode: dsr_l2
    backends:
      - { address: "2001:db8:1::11", port: 80, zone: az-a }
      - { address: "2001:db8:1::12", port: 80, zone: az-b }
      - { address: "2001:db8:1::13", port: 80, zone: az-c }
  - name: ipip6
    vip: "2001:db8:100::121"
    port: 80
    mode: ipip
    backends:
      - { address: "2001:db8:1::11", port: 80, zone: az-a }
      - { address: "2001:db8:1::12", port: 80, zone: az-b }
      - { address: "2001:db8:1::13", port: 80, zone: az-c }
  - name: gue6
    vip: "2001:db8:100::122"
    port: 80
    mode: gue
    backends:
      - { address: "2001:db8:1::11", port: 80, zone: az-a }
      - { address: "2001:db8:1::12", port: 80, zone: az-b }
      - { address: "2001:db8:1::13", port: 80, zone: az-c }
"#
    };
}

/// `dns6`, the IPv6 UDP service of the IPv6 packet tests and bench: `web6`'s VIP, port
/// 53, on the rig's three IPv6 backends, port 5353.
#[macro_export]
macro_rules! rig_dns6_service {
    () => {
        r#"  - name: dns6
    vip: "2001:db8:100::100"
    port: 53
    protocol: udp
    backends:
      - { address: "2001:db8:1::11", port: 5353, zone: az-a }
      - { address: "2001:db8:1::12", port: 5353, zone: az-b }
      - { address: "2001:db8:1::13", port: 5353, zone: az-c }
"#
    };
}

/// `dns`, the UDP service of the UDP packet tests and bench (an entry of the `services`
/// list, for [`rig_config_with`]): 10.0.0.120:53 on the rig's three backends, port 5353.
#[macro_export]
macro_rules! rig_dns_service {
    () => {
        r#"  - name: dns
    vip: 10.0.0.120
    port: 53
    protocol: udp
    backends:
      - { address: 10.1.0.11, port: 5353, zone: az-a }
      - { address: 10.1.0.12, port: 5353, zone: az-b }
      - { address: 10.1.0.13, port: 5353, zone: az-c }
"#
    };
}

/// Pins the calling thread to one CPU: per-CPU state (round-robin cursors, counters)
/// then evolves as one sequence.
pub fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET and sched_setaffinity only touch it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        let rc = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        assert_eq!(
            rc,
            0,
            "sched_setaffinity: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// The namespace and what tests need to know about its interfaces.
pub struct Rig {
    _ns: NetNs,
    pub ns: String,
    pub c0: u32,
    pub b0: u32,
    pub c0_mac: Mac,
    pub b0_mac: Mac,
}

/// The rig's NICs: index and MAC of `c0` (clients) and `b0` (backends).
#[derive(Clone, Copy)]
pub struct Nics {
    pub c0: u32,
    pub b0: u32,
    pub c0_mac: Mac,
    pub b0_mac: Mac,
}

impl Rig {
    pub fn nics(&self) -> Nics {
        Nics {
            c0: self.c0,
            b0: self.b0,
            c0_mac: self.c0_mac,
            b0_mac: self.b0_mac,
        }
    }

    /// Builds the rig; panics with [`crate::needs::packet`]'s one message when the
    /// machine cannot run it (no root).
    pub fn build() -> Rig {
        crate::needs::packet();
        let ns = NetNs::create(&format!("{}pk", netns::unique_prefix()));
        let name = ns.name().to_string();
        let ip = |args: &[&str]| netns::ns_ip(&name, args);
        ip(&["link", "add", "c0", "type", "veth", "peer", "name", "c0p"]);
        ip(&["link", "add", "b0", "type", "veth", "peer", "name", "b0p"]);
        for dev in ["c0", "c0p", "b0", "b0p", "lo"] {
            ip(&["link", "set", dev, "up"]);
        }
        ip(&["addr", "add", "10.10.0.1/24", "dev", "c0"]);
        ip(&["addr", "add", "10.1.0.1/24", "dev", "b0"]);
        ip(&[
            "-6",
            "addr",
            "add",
            "2001:db8:10::1/64",
            "dev",
            "c0",
            "nodad",
        ]);
        ip(&[
            "-6",
            "addr",
            "add",
            "2001:db8:1::1/64",
            "dev",
            "b0",
            "nodad",
        ]);
        let neigh = |addr: &str, mac: Mac, dev: &str| {
            let mac = mac.map(|b| format!("{b:02x}")).join(":");
            ip(&[
                "neigh",
                "replace",
                addr,
                "lladdr",
                &mac,
                "dev",
                dev,
                "nud",
                "permanent",
            ]);
        };
        neigh("10.10.0.2", CLIENT_MAC, "c0");
        neigh("10.10.0.77", backend_mac(77), "c0");
        for last in [11u8, 12, 13] {
            neigh(&format!("10.1.0.{last}"), backend_mac(last), "b0");
            let v6 = backend6(last);
            neigh(&v6.to_string(), backend_mac(v6.octets()[15]), "b0");
        }
        neigh(&CLIENT6.to_string(), CLIENT_MAC, "c0");
        // bpf_fib_lookup refuses to route for a device that does not forward.
        netns::ns_sysctl(&name, "net.ipv4.ip_forward", "1");
        netns::ns_sysctl(&name, "net.ipv6.conf.all.forwarding", "1");
        Rig {
            c0: netns::ifindex(&name, "c0"),
            b0: netns::ifindex(&name, "b0"),
            c0_mac: parse_mac(&netns::link_mac(&name, "c0")),
            b0_mac: parse_mac(&netns::link_mac(&name, "b0")),
            ns: name,
            _ns: ns,
        }
    }

    /// Loads the data path in the rig's namespace, fills it from `config` (YAML) with
    /// both interfaces as redirect targets, and runs `f` there.
    pub fn with_dataplane<T: Send>(
        &self,
        config: &str,
        f: impl FnOnce(&mut Controller<KernelDataplane>) -> T + Send,
    ) -> T {
        self.with_dataplane_loaded_with(config, None, f)
    }

    /// [`Rig::with_dataplane`] with `lb_tc` loaded too, as for both NICs in
    /// `tc_interfaces`: set after validation, so that a test can give `lb_tc` the
    /// services a tc node refuses, and see what it does with their packets.
    pub fn with_dataplane_at_tc<T: Send>(
        &self,
        config: &str,
        f: impl FnOnce(&mut Controller<KernelDataplane>) -> T + Send,
    ) -> T {
        self.with_dataplane_loaded(config, None, true, f)
    }

    /// [`Rig::with_dataplane`], the object loaded with only the capabilities in `caps`
    /// effective (see [`crate::caps`]) if given, all of the test's otherwise.
    pub fn with_dataplane_loaded_with<T: Send>(
        &self,
        config: &str,
        caps: Option<&'static [caps::Capability]>,
        f: impl FnOnce(&mut Controller<KernelDataplane>) -> T + Send,
    ) -> T {
        self.with_dataplane_loaded(config, caps, false, f)
    }

    fn with_dataplane_loaded<T: Send>(
        &self,
        config: &str,
        caps: Option<&'static [caps::Capability]>,
        tc: bool,
        f: impl FnOnce(&mut Controller<KernelDataplane>) -> T + Send,
    ) -> T {
        let (c0, b0) = (self.c0, self.b0);
        netns::run_in(&self.ns, move || {
            let mut config = config::parse(config).expect("rig config is valid");
            if tc {
                config.tc_interfaces = vec!["c0".into(), "b0".into()];
            }
            let load = || KernelDataplane::load(&config, None);
            let mut dp = match caps {
                Some(caps) => crate::caps::with_effective(caps, load),
                None => load(),
            }
            .expect("loading the XDP object");
            dp.add_egress(c0).expect("devmap insert");
            dp.add_egress(b0).expect("devmap insert");
            let mut controller = Controller::new(dp, config.cluster.ring_size);
            controller.apply(&config).expect("filling the maps");
            f(&mut controller)
        })
    }
}

/// What one BPF_PROG_TEST_RUN call gave.
pub struct RunResult {
    pub action: u32,
    pub output: Vec<u8>,
    /// The kernel's own measurement of the program run.
    pub nanos: u64,
}

/// Runs one frame through `program` once, as if received on `ifindex`. Must be called
/// from a thread inside the rig's namespace (the FIB lookup uses it).
pub fn run_once(program: &Xdp, ifindex: u32, frame: &[u8]) -> RunResult {
    // struct xdp_md { data, data_end, data_meta, ingress_ifindex, rx_queue_index,
    // egress_ifindex }: the kernel wants data = 0 and data_end = the frame length.
    let ctx: Vec<u8> = [0u32, frame.len() as u32, 0, ifindex, 0, 0]
        .iter()
        .flat_map(|v| v.to_ne_bytes())
        .collect();
    test_run(program, frame, &ctx)
}

/// [`run_once`] for the tc program (`lb_tc`): the frame as an skb received on `ifindex`
/// (whose checksum nothing vouches for, as from a NIC without offloads).
pub fn run_tc_once(program: &SchedClassifier, ifindex: u32, frame: &[u8]) -> RunResult {
    // struct __sk_buff is 192 bytes; the kernel takes a few fields from it and wants the
    // rest zero. `ifindex` (at byte 40) is the device the skb arrives on.
    let mut ctx = vec![0u8; 192];
    ctx[40..44].copy_from_slice(&ifindex.to_ne_bytes());
    test_run(program, frame, &ctx)
}

/// One BPF_PROG_TEST_RUN of `program` on `frame` with context `ctx`.
fn test_run<P>(program: &P, frame: &[u8], ctx: &[u8]) -> RunResult
where
    P: for<'a> TestRun<Opts<'a> = TestRunOptions<'a>, Result = TestRunResult>,
{
    let mut out = vec![0u8; frame.len() + 256];
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(frame);
    opts.data_out = Some(&mut out);
    opts.ctx_in = Some(ctx);
    let result = program.test_run(opts).expect("BPF_PROG_TEST_RUN");
    out.truncate(result.data_size_out as usize);
    RunResult {
        action: result.return_value,
        output: out,
        nanos: result.duration.as_nanos() as u64,
    }
}

/// The map `name` of the loaded `program`, opened by id: for tests that look into a map
/// the controller keeps no handle for.
pub fn map_of(program: &Xdp, name: &str) -> aya::maps::MapData {
    let ids = program
        .info()
        .expect("program info")
        .map_ids()
        .expect("the program's map ids")
        .expect("the kernel reports map ids");
    ids.into_iter()
        .map(|id| aya::maps::MapData::from_id(id).expect("opening a map by id"))
        .find(|m| m.info().is_ok_and(|i| i.name_as_str() == Some(name)))
        .unwrap_or_else(|| panic!("the program has no map {name}"))
}

/// Fills the home slot of forward `key` and its three buddies with connections of other
/// clients (recorded as the data path would, on no backend), so that `key`'s connection
/// goes to the LRU maps, where its two directions have an entry each. Returns their keys.
pub fn crowd_home_of(dp: &mut KernelDataplane, key: &FlowKey) -> Vec<FlowKey> {
    let mask = dp.flows.slots() - 1;
    let home = forward_index(key, mask);
    let block: Vec<u32> = std::iter::once(home).chain(buddies(home)).collect();
    let mut crowd: Vec<FlowKey> = Vec::new();
    for port in 1..=u16::MAX {
        let other = FlowKey {
            src_addr: u32::from_ne_bytes([10, 99, 0, 1]),
            src_port: port.to_be(),
            ..*key
        };
        let at = forward_index(&other, mask);
        if block.contains(&at) && !crowd.iter().any(|k| forward_index(k, mask) == at) {
            crowd.push(other);
        }
        if crowd.len() == block.len() {
            break;
        }
    }
    assert_eq!(crowd.len(), 4, "clients for the whole block of slot {home}");
    for other in &crowd {
        // On ids no backend or service has: no reply matches them.
        let target = lb_common::flow::FlowTarget {
            backend: u32::MAX,
            service: u32::MAX,
            state: lb_common::flow::FLOW_F_ESTABLISHED,
            ..Default::default()
        };
        dp.flows
            .insert(other, target, 0)
            .expect("a slot of the block");
    }
    for other in &crowd {
        assert!(dp.flows.slot_of(other).is_some(), "{other:?} in the block");
    }
    crowd
}

/// Backend id of `addr` in service `service` of the controller's applied plan.
pub fn backend_id(c: &Controller<KernelDataplane>, service: &str, addr: Ipv4Addr) -> u32 {
    c.plan()
        .expect("a plan was applied")
        .backends
        .iter()
        .find(|b| b.at.service == service && b.at.address == addr)
        .unwrap_or_else(|| panic!("no backend {addr} in service {service}"))
        .id
}

/// Service `name` in the controller's applied plan.
pub fn planned_service<'a>(
    c: &'a Controller<KernelDataplane>,
    name: &str,
) -> &'a lb_userspace::model::plan::PlannedService {
    c.plan()
        .expect("a plan was applied")
        .services
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no service {name}"))
}

/// An address of the rig's IPv4 services.
pub fn ipv4(address: std::net::IpAddr) -> Ipv4Addr {
    match address {
        std::net::IpAddr::V4(v4) => v4,
        std::net::IpAddr::V6(v6) => panic!("{v6} is not an address of the IPv4 rig"),
    }
}

/// The id of service `name` in the applied plan.
/// The hit counter of service `service`'s edge rule for `net`/`len` (`"10.10.0.0"`,
/// `"2001:db8::"`), checking its verdict.
pub fn edge_rule_counter(
    c: &Controller<KernelDataplane>,
    service: &str,
    (net, len): (&str, u8),
    verdict: u32,
) -> u32 {
    let key = EdgeRuleKey {
        service: service_id(c, service),
        net: net.parse().expect("an address"),
        len,
    };
    let rule = c.edge_tables().rules[&key];
    assert_eq!(rule.verdict, verdict, "verdict of {key}");
    rule.counter
}

pub fn service_id(c: &Controller<KernelDataplane>, name: &str) -> u32 {
    planned_service(c, name).id
}

/// The VIP of service `name` in the applied plan.
pub fn vip_of(c: &Controller<KernelDataplane>, name: &str) -> Ipv4Addr {
    match planned_service(c, name).key.vip() {
        std::net::IpAddr::V4(vip) => vip,
        std::net::IpAddr::V6(vip) => panic!("service {name} has the IPv6 VIP {vip}"),
    }
}

/// The backend address service `name`'s table gives the client's connection from
/// `sport`, computed from userspace's copy of the table (rig's seed and ring size).
pub fn table_backend(c: &Controller<KernelDataplane>, name: &str, sport: u16) -> Ipv4Addr {
    let key = Frame {
        dst: vip_of(c, name),
        ..client_syn(sport)
    }
    .flow_key();
    table_pick(c, name, &key).0
}

/// The backend (address, port) service `name`'s table gives a new connection with
/// `key`, computed from userspace's copy of the table (the rig's seed; the plan's ring).
pub fn table_pick(c: &Controller<KernelDataplane>, name: &str, key: &FlowKey) -> (Ipv4Addr, u16) {
    TablePick::new(c, name).pick(key)
}

/// [`table_pick`] for many keys: the service's ring and backends copied once.
#[derive(Clone)]
pub struct TablePick {
    source_hash: bool,
    ring: Vec<u32>,
    backends: std::collections::HashMap<u32, (Ipv4Addr, u16)>,
}

impl TablePick {
    pub fn new(c: &Controller<KernelDataplane>, name: &str) -> TablePick {
        let s = planned_service(c, name);
        let plan = c.plan().expect("a plan was applied");
        TablePick {
            source_hash: s.policy == POLICY_SOURCE_HASH,
            ring: s.ring.clone(),
            backends: plan
                .backends
                .iter()
                .filter(|b| b.at.service == name)
                .map(|b| (b.id, (ipv4(b.at.address), b.at.port)))
                .collect(),
        }
    }

    pub fn pick(&self, key: &FlowKey) -> (Ipv4Addr, u16) {
        let hash = if self.source_hash {
            source_hash(key.src_addr, HASH_SEED)
        } else {
            flow_hash(key, HASH_SEED)
        };
        let id = self.ring[(hash % self.ring.len() as u32) as usize];
        *self
            .backends
            .get(&id)
            .unwrap_or_else(|| panic!("no backend with id {id}"))
    }
}

/// `frame` (client -> VIP) as backend `addr`:`port` must get it, sent out of the NIC
/// with MAC `egress_mac` to the backend's MAC ([`backend_mac`]).
pub fn as_to_backend(frame: &Frame, (addr, port): (Ipv4Addr, u16), egress_mac: Mac) -> Frame {
    Frame {
        dst_mac: backend_mac(addr.octets()[3]),
        src_mac: egress_mac,
        dst: addr,
        dport: port,
        ttl: frame.ttl - 1,
        ..frame.clone()
    }
}

/// Checks one run's action and its whole output frame, byte for byte.
#[track_caller]
pub fn expect_run(r: &RunResult, action: u32, expected: &[u8], what: &dyn std::fmt::Display) {
    assert_eq!(r.action, action, "{what}: action");
    assert!(
        r.output == expected,
        "{what}: output frame\n got  {:02x?}\n want {:02x?}",
        r.output,
        expected
    );
}

/// Runs a client frame from `sport` to the VIP with TCP `flags`, which must be
/// redirected; returns the backend it went to.
pub fn from_client(dp: &KernelDataplane, rig_c0: u32, sport: u16, flags: u8) -> Ipv4Addr {
    let frame = Frame {
        flags,
        ..client_syn(sport)
    };
    let r = run_once(dp.program(), rig_c0, &frame.bytes());
    assert_eq!(r.action, XDP_REDIRECT, "port {sport} flags {flags:#x}");
    crate::frame::dst_ip(&r.output)
}

/// `reply` (backend -> client, as it arrives on `b0`) as the client must get it: from
/// the VIP's port 80, sent out of `c0` (MAC `c0_mac`) one hop later.
pub fn as_from_vip(reply: &Frame, c0_mac: Mac) -> Frame {
    Frame {
        dst_mac: CLIENT_MAC,
        src_mac: c0_mac,
        src: VIP,
        sport: 80,
        ttl: reply.ttl - 1,
        ..reply.clone()
    }
}

/// A SYN from the client to the VIP from `sport`.
pub fn client_syn(sport: u16) -> Frame {
    Frame {
        src_mac: CLIENT_MAC,
        sport,
        flags: 0x02,
        ..Frame::default()
    }
}

/// Initial sequence number of the backends' SYN-ACKs in packet tests.
pub const BACKEND_ISN: u32 = 0x7a11_0000;

/// `backend`:8080's SYN-ACK to the client's `syn` (sequence number [`BACKEND_ISN`]), as
/// it arrives from the backend.
pub fn syn_ack_of(syn: &Frame, backend: Ipv4Addr) -> Frame {
    Frame {
        src_mac: backend_mac(backend.octets()[3]),
        src: backend,
        dst: syn.src,
        sport: 8080,
        dport: syn.sport,
        flags: 0x12,
        seq: BACKEND_ISN,
        ack: syn.seq.wrapping_add(1),
        ..Frame::default()
    }
}

/// The client's ACK of the SYN-ACK ([`syn_ack_of`]) answering its `syn`: what completes
/// the handshake and records the flow of a hash-placed service.
pub fn ack_of(syn: &Frame) -> Frame {
    Frame {
        flags: 0x10,
        seq: syn.seq.wrapping_add(1),
        ack: BACKEND_ISN.wrapping_add(1),
        ..syn.clone()
    }
}

/// The client's ACK completing the handshake of `syn` (a SYN to a hash-placed service's
/// VIP, `pick` that service's table), run through `run` (a program and the NIC a frame arrives
/// on): first its SYN and the backend's SYN-ACK, untimed (whether the SYN-ACK reaches the
/// client does not matter, passing the data path leaves the proof), then the ACK, whose
/// action must be `action`, whose frame the one to `pick`'s backend, and which must have
/// recorded the flow in `dp`. Returns the ACK's run.
pub fn first_ack(
    (dp, run): (&KernelDataplane, impl Fn(u32, &[u8]) -> RunResult),
    nics: Nics,
    syn: &Frame,
    (action, pick): (u32, &TablePick),
    what: &dyn std::fmt::Display,
) -> RunResult {
    let placed = run(nics.c0, &syn.bytes());
    assert_eq!(placed.action, action, "SYN before {what}");
    let syn_ack = Frame {
        dst_mac: nics.b0_mac,
        ..syn_ack_of(syn, crate::frame::dst_ip(&placed.output))
    };
    run(nics.b0, &syn_ack.bytes());
    let ack = ack_of(syn);
    let r = run(nics.c0, &ack.bytes());
    let expected = as_to_backend(&ack, pick.pick(&ack.flow_key()), nics.b0_mac).bytes();
    expect_run(&r, action, &expected, what);
    assert!(
        dp.flows.get(&ack.flow_key(), 0).is_ok(),
        "{what} records its flow"
    );
    r
}

/// Runs `backend`'s SYN-ACK to `syn` as received on `ifindex` (the NIC behind which the
/// backend sits) and checks that it went back to the client from the SYN's VIP:port, as
/// the client's ACK must have seen it ([`ack_of`]).
pub fn syn_ack_passes(dp: &KernelDataplane, ifindex: u32, syn: &Frame, backend: Ipv4Addr) {
    let r = run_once(dp.program(), ifindex, &syn_ack_of(syn, backend).bytes());
    assert!(
        matches!(r.action, XDP_REDIRECT | XDP_TX),
        "SYN-ACK from {backend} to port {}: action {}",
        syn.sport,
        r.action
    );
    assert_eq!(crate::frame::source(&r.output), (syn.dst, syn.dport));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_result(action: u32, output: &[u8]) -> RunResult {
        RunResult {
            action,
            output: output.to_vec(),
            nanos: 0,
        }
    }

    #[test]
    fn a_run_passes_only_with_its_action_and_every_byte() {
        expect_run(&run_result(XDP_TX, &[1, 2, 3]), XDP_TX, &[1, 2, 3], &"same");
    }

    #[test]
    #[should_panic(expected = "one byte: output frame")]
    fn one_differing_byte_fails_the_run() {
        expect_run(
            &run_result(XDP_TX, &[1, 2, 3]),
            XDP_TX,
            &[1, 2, 4],
            &"one byte",
        );
    }

    #[test]
    #[should_panic(expected = "action")]
    fn another_action_fails_the_run() {
        expect_run(&run_result(XDP_PASS, &[1]), XDP_TX, &[1], &"action");
    }
}
