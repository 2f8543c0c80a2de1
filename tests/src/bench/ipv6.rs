//! Per-packet cost of IPv6 (NAT66, `lb_v6`, see docs/ipv6.md) beside IPv4 in the same run,
//! measured like [`super::udp`]: BPF_PROG_TEST_RUN single-run calls interleaved with the
//! pass-everything floor, round by round. Five pairs of rows: an established TCP data
//! segment, a new connection (SYN and first ACK, the backend's SYN-ACK between them
//! untimed), the SYN alone (a Maglev service's, which records no flow but a SYN-cache
//! slot), the first ACK alone (which records the flow), a UDP datagram of an existing
//! flow. An IPv6 packet takes one more program
//! than an IPv4 TCP one (`lb_xdp`'s look at its addresses, then the tail call to `lb_v6`
//! and its own parse). Every call's action and whole output frame are checked.
use std::net::{Ipv4Addr, Ipv6Addr};

use lb_common::{hash::flow_hash6, ipv6::FlowKey6};
use lb_userspace::{control::tables::Controller, kernel::KernelDataplane};
use serde_json::{json, Value};

use super::{
    stats::{calls, interleaved, pin_to_cpu, Round},
    table::{net_row, Table},
};
use crate::{
    frame::{dst_ip, Frame, ACK, PSH_ACK, SYN, SYN_ACK},
    frame6::{Frame6, PROTO_UDP},
    packet_rig::*,
    peer_xdp,
    udp_frame::Datagram,
};

pub struct Options {
    pub rounds: usize,
    pub calls: usize,
}

type Mac = [u8; 6];

/// The rig's `web` and `dns`, and their IPv6 twins `web6` and `dns6` on the rig's IPv6
/// backends.
const CONFIG: &str = crate::rig_config_with!(
    crate::rig_dns_service!(),
    crate::rig_web6_service!(),
    crate::rig_dns6_service!()
);

const DNS_VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 120);
const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x100);

/// The backend service `name`'s Maglev table gives `key` (IPv6 flow hash, rig's seed).
struct Table6 {
    ring: Vec<u32>,
    backends: std::collections::HashMap<u32, Ipv6Addr>,
}

impl Table6 {
    fn new(c: &Controller<KernelDataplane>, name: &str) -> Table6 {
        let plan = c.plan().expect("a plan was applied");
        Table6 {
            ring: planned_service(c, name).ring.clone(),
            backends: plan
                .backends
                .iter()
                .filter(|b| b.at.service == name)
                .map(|b| (b.id, b.at.address.to_string().parse().expect("IPv6")))
                .collect(),
        }
    }

    fn pick(&self, key: &FlowKey6) -> Ipv6Addr {
        let id = self.ring[(flow_hash6(key, HASH_SEED) % self.ring.len() as u32) as usize];
        self.backends[&id]
    }
}

/// `f` as backend `addr`:`port` gets it from the NIC with MAC `b0_mac`.
fn to_backend6(f: &Frame6, addr: Ipv6Addr, port: u16, b0_mac: Mac) -> Vec<u8> {
    Frame6 {
        dst_mac: backend_mac(addr.octets()[15]),
        src_mac: b0_mac,
        dst: addr,
        dport: port,
        hop_limit: f.hop_limit - 1,
        ..f.clone()
    }
    .bytes()
}

fn syn_ack6(syn: &Frame6, addr: Ipv6Addr) -> Frame6 {
    Frame6 {
        src_mac: backend_mac(addr.octets()[15]),
        src: addr,
        dst: syn.src,
        sport: 8080,
        dport: syn.sport,
        flags: SYN_ACK,
        seq: BACKEND_ISN,
        ack: syn.seq + 1,
        ..Frame6::default()
    }
}

fn ack6(syn: &Frame6) -> Frame6 {
    Frame6 {
        flags: ACK,
        seq: syn.seq + 1,
        ack: BACKEND_ISN + 1,
        ..syn.clone()
    }
}

/// Which packets of a new connection's handshake a row times.
#[derive(Clone, Copy)]
enum Timed {
    Both,
    Syn,
    Ack,
}

impl Timed {
    fn of(self, syn: u64, ack: u64) -> u64 {
        match self {
            Timed::Both => syn + ack,
            Timed::Syn => syn,
            Timed::Ack => ack,
        }
    }
}

fn measure(
    c: &mut Controller<KernelDataplane>,
    rig: (u32, u32, Mac),
    o: &Options,
) -> Vec<(&'static str, &'static str, super::stats::Net)> {
    let (c0, b0, b0_mac) = rig;
    pin_to_cpu(0);
    c.dataplane_mut().set_clock(1).expect("clock");
    let mut floor_obj = peer_xdp::load_pass_program();
    let floor = peer_xdp::pass_program(&mut floor_obj);
    let lb = c.dataplane().program();
    let n = o.calls;
    // Each round of an existing flow's row first sends the packets that open the flow
    // again, untimed (`opening`): the new-connection rows of the round before churn the
    // rig's 4096-entry flow tables, which may have evicted the flow meanwhile (then the
    // row would time another path), and opening an existing flow again leaves it as it is.
    let repeated = |row: &'static str,
                    opening: Vec<(u32, Vec<u8>)>,
                    frame: Vec<u8>,
                    expected: Vec<u8>|
     -> Round {
        let mut timed = calls(n, move |i| {
            let r = run_once(lb, c0, &frame);
            expect_run(
                &r,
                XDP_REDIRECT,
                &expected,
                &format_args!("{row}, call #{i}"),
            );
            r.nanos
        });
        Box::new(move |r| {
            for (ifindex, packet) in &opening {
                run_once(lb, *ifindex, packet);
            }
            timed(r)
        })
    };

    // IPv4 TCP: one established flow of `web`, its handshake untimed.
    let open = client_syn(33333);
    let backend = dst_ip(&run_once(lb, c0, &open.bytes()).output);
    run_once(lb, b0, &syn_ack_of(&open, backend).bytes());
    let ack = ack_of(&open);
    assert_eq!(run_once(lb, c0, &ack.bytes()).action, XDP_REDIRECT);
    let data = Frame {
        flags: PSH_ACK,
        payload: vec![0x61; 100],
        ..ack.clone()
    };
    // IPv6 TCP: the same of `web6`.
    let web6 = Table6::new(c, "web6");
    let open6 = Frame6 {
        src_mac: CLIENT_MAC,
        src: CLIENT6,
        dst: VIP6,
        sport: 33333,
        flags: SYN,
        ..Frame6::default()
    };
    let backend6 = web6.pick(&open6.flow_key());
    let r = run_once(lb, c0, &open6.bytes());
    expect_run(
        &r,
        XDP_REDIRECT,
        &to_backend6(&open6, backend6, 8080, b0_mac),
        &"IPv6 SYN",
    );
    run_once(lb, b0, &syn_ack6(&open6, backend6).bytes());
    let data6 = Frame6 {
        flags: PSH_ACK,
        payload: vec![0x61; 100],
        ..ack6(&open6)
    };

    // UDP: one flow of `dns` and of `dns6`, recorded by their first datagrams (untimed).
    let dg = Datagram {
        src_mac: CLIENT_MAC,
        dst: DNS_VIP,
        sport: 33334,
        payload: vec![0x61; 100],
        ..Datagram::default()
    };
    let (udp_backend, _) = table_pick(c, "dns", &dg.flow_key());
    let dg_out = Datagram {
        dst_mac: backend_mac(udp_backend.octets()[3]),
        src_mac: b0_mac,
        dst: udp_backend,
        dport: 5353,
        ttl: dg.ttl - 1,
        ..dg.clone()
    }
    .bytes();
    assert_eq!(run_once(lb, c0, &dg.bytes()).output, dg_out);
    let dg6 = Frame6 {
        proto: PROTO_UDP,
        dport: 53,
        payload: vec![0x61; 100],
        ..open6.clone()
    };
    let udp_backend6 = Table6::new(c, "dns6").pick(&dg6.flow_key());
    let dg6_out = to_backend6(&dg6, udp_backend6, 5353, b0_mac);
    assert_eq!(run_once(lb, c0, &dg6.bytes()).output, dg6_out);

    // New connections: a never-seen tuple per call (a new port every call, a new client
    // address every 50,000; each row its own addresses), the whole handshake run, the
    // SYN-ACK never timed.
    let new_v4 = |base: u16, timed: Timed| {
        let web = TablePick::new(c, "web");
        calls(n, move |i| {
            let syn = Frame {
                src: Ipv4Addr::from(
                    u32::from(CLIENT) + (u32::from(base) + 1 + (i / 50_000) as u32) * 256,
                ),
                ..client_syn(1024 + (i % 50_000) as u16)
            };
            let (to, _) = web.pick(&syn.flow_key());
            let r1 = run_once(lb, c0, &syn.bytes());
            expect_run(
                &r1,
                XDP_REDIRECT,
                &as_to_backend(&syn, (to, 8080), b0_mac).bytes(),
                &format_args!("IPv4 SYN #{i}"),
            );
            run_once(lb, b0, &syn_ack_of(&syn, to).bytes());
            let ack = ack_of(&syn);
            let r2 = run_once(lb, c0, &ack.bytes());
            expect_run(
                &r2,
                XDP_REDIRECT,
                &as_to_backend(&ack, (to, 8080), b0_mac).bytes(),
                &format_args!("IPv4 ACK #{i}"),
            );
            timed.of(r1.nanos, r2.nanos)
        })
    };
    let new_v6 = |base: u16, timed: Timed| {
        let web6 = Table6::new(c, "web6");
        let template6 = open6.clone();
        calls(n, move |i| {
            let mut src = CLIENT6.octets();
            src[12..14].copy_from_slice(&(base + 1 + (i / 50_000) as u16).to_be_bytes());
            let syn = Frame6 {
                src: Ipv6Addr::from(src),
                sport: 1024 + (i % 50_000) as u16,
                ..template6.clone()
            };
            let to = web6.pick(&syn.flow_key());
            let r1 = run_once(lb, c0, &syn.bytes());
            expect_run(
                &r1,
                XDP_REDIRECT,
                &to_backend6(&syn, to, 8080, b0_mac),
                &format_args!("IPv6 SYN #{i}"),
            );
            run_once(lb, b0, &syn_ack6(&syn, to).bytes());
            let ack = ack6(&syn);
            let r2 = run_once(lb, c0, &ack.bytes());
            expect_run(
                &r2,
                XDP_REDIRECT,
                &to_backend6(&ack, to, 8080, b0_mac),
                &format_args!("IPv6 ACK #{i}"),
            );
            timed.of(r1.nanos, r2.nanos)
        })
    };

    let rows: Vec<(&'static str, &'static str, Round)> = vec![
        (
            "IPv4 TCP established, 100-byte data segment",
            "ipv4_tcp_established_data",
            repeated(
                "IPv4 data",
                vec![
                    (c0, open.bytes()),
                    (b0, syn_ack_of(&open, backend).bytes()),
                    (c0, ack.bytes()),
                ],
                data.bytes(),
                as_to_backend(&data, (backend, 8080), b0_mac).bytes(),
            ),
        ),
        (
            "IPv6 TCP established, 100-byte data segment",
            "ipv6_tcp_established_data",
            repeated(
                "IPv6 data",
                vec![
                    (c0, open6.bytes()),
                    (b0, syn_ack6(&open6, backend6).bytes()),
                    (c0, ack6(&open6).bytes()),
                ],
                data6.bytes(),
                to_backend6(&data6, backend6, 8080, b0_mac),
            ),
        ),
        (
            "IPv4 TCP new connection, SYN + first ACK",
            "ipv4_new_connection",
            new_v4(0, Timed::Both),
        ),
        (
            "IPv6 TCP new connection, SYN + first ACK",
            "ipv6_new_connection",
            new_v6(0, Timed::Both),
        ),
        (
            "IPv4 TCP SYN, new flow (Maglev: a SYN-cache slot, no flow)",
            "ipv4_syn_new_flow",
            new_v4(16, Timed::Syn),
        ),
        (
            "IPv6 TCP SYN, new flow (Maglev: a SYN-cache slot, no flow)",
            "ipv6_syn_new_flow",
            new_v6(16, Timed::Syn),
        ),
        (
            "IPv4 TCP first ACK (records the flow)",
            "ipv4_first_ack",
            new_v4(32, Timed::Ack),
        ),
        (
            "IPv6 TCP first ACK (records the flow)",
            "ipv6_first_ack",
            new_v6(32, Timed::Ack),
        ),
        (
            "IPv4 UDP datagram of an existing flow (100 bytes)",
            "ipv4_udp_existing_flow",
            repeated("IPv4 UDP", vec![(c0, dg.bytes())], dg.bytes(), dg_out),
        ),
        (
            "IPv6 UDP datagram of an existing flow (100 bytes)",
            "ipv6_udp_existing_flow",
            repeated("IPv6 UDP", vec![(c0, dg6.bytes())], dg6.bytes(), dg6_out),
        ),
    ];
    let floor_round = {
        let syn = client_syn(40000).bytes();
        calls(n, move |i| {
            let r = run_once(floor, c0, &syn);
            expect_run(&r, XDP_PASS, &syn, &format_args!("floor #{i}"));
            r.nanos
        })
    };
    let names: Vec<(&'static str, &'static str)> = rows.iter().map(|(n, k, _)| (*n, *k)).collect();
    let (_, nets) = interleaved(
        o.rounds,
        floor_round,
        rows.into_iter().map(|(_, _, r)| r).collect(),
    );
    // Every established segment found its flow: none went by the table without one.
    for name in ["web", "web6"] {
        let id = planned_service(c, name).id;
        let s = c
            .dataplane()
            .service_counters(id)
            .expect("service counters");
        assert_eq!(
            s.stateless_forwards, 0,
            "{name}: a segment without its flow"
        );
    }
    names
        .into_iter()
        .zip(nets)
        .map(|((name, key), net)| (name, key, net))
        .collect()
}

/// The IPv6 rows each within 1.3 times their IPv4 row (net medians).
const TARGET_RATIO: f64 = 1.3;

pub fn run(opts: &Options) -> Value {
    let rig = Rig::build();
    let ends = (rig.c0, rig.b0, rig.b0_mac);
    // The IPv6 flow tables as large as the IPv4 ones, so that both families' new
    // connections write into tables of one size (a larger table is colder in cache).
    let config = CONFIG.replace(
        "flow_table_size: 4096,",
        "flow_table_size: 4096, flow_table_size6: 4096,",
    );
    assert_ne!(config, CONFIG, "the rig's limits line changed");
    let rows = rig.with_dataplane(&config, |c| measure(c, ends, opts));
    let mut table = Table::new(
        format!(
            "IPv6 beside IPv4 per packet, BPF_PROG_TEST_RUN, {} rounds x {} single-run calls, pinned to CPU 0",
            opts.rounds, opts.calls
        ),
        &["path", "min ns", "med ns", "net min", "net med"],
    );
    let mut paths = serde_json::Map::new();
    for (name, key, stat) in &rows {
        net_row(&mut table, &mut paths, (name, key), stat.gross, stat.net);
    }
    let net = |key: &str| rows.iter().find(|r| r.1 == key).map(|r| r.2.net.median);
    let mut ratios = serde_json::Map::new();
    let mut all_met = true;
    for pair in [
        "tcp_established_data",
        "new_connection",
        "syn_new_flow",
        "first_ack",
        "udp_existing_flow",
    ] {
        let (v4, v6) = (net(&format!("ipv4_{pair}")), net(&format!("ipv6_{pair}")));
        let ratio = match (v4, v6) {
            (Some(v4), Some(v6)) if v4 > 0 => Some(v6 as f64 / v4 as f64),
            _ => None,
        };
        let met = ratio.is_some_and(|r| r <= TARGET_RATIO);
        all_met &= met;
        table.note(format!(
            "{pair}: IPv6 / IPv4 = {} (net {v6:?} vs {v4:?} ns): {}",
            ratio.map_or("n/a".to_string(), |r| format!("{r:.2}")),
            if met { "met" } else { "not met" }
        ));
        ratios.insert(pair.into(), json!(ratio));
    }
    table.note("min/med: over rounds, of each round's median call; net: minus the floor's median in the same round");
    table.note(format!(
        "target: every IPv6 row within {TARGET_RATIO}x of its IPv4 row: {}",
        if all_met { "met" } else { "not met" }
    ));
    table.print();
    json!({
        "rounds": opts.rounds,
        "calls_per_round": opts.calls,
        "paths": paths,
        "ratios": ratios,
        "target_ipv6_within_1_3x_met": all_met,
    })
}
