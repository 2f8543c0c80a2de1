//! Per-packet cost of edge protection over IPv6 (docs/edge-protection.md, IPv6), measured
//! like [`super::edge`] (BPF_PROG_TEST_RUN single-run calls beside the pass-everything
//! floor in the same rounds, every call's action and whole output frame checked): an IPv6
//! SYN dropped by a deny rule and by the rate limit (`lb_v6`'s tail call to `lb_edge6`,
//! its parse, the trie and bucket lookups), and one admitted by both (handed back to
//! `lb_v6` and placed), beside a SYN to an unprotected IPv6 service.
use std::net::Ipv6Addr;

use lb_userspace::{control::tables::Controller, kernel::KernelDataplane};
use serde_json::{json, Value};

use super::{
    stats::{calls, interleaved, pin_to_cpu, Net, Round, Stat},
    table::{net_row, Table},
};
use crate::{
    frame::{Mac, SYN},
    frame6::Frame6,
    packet_rig::*,
    peer_xdp,
};

pub struct Options {
    pub rounds: usize,
    pub calls: usize,
}

const PLAIN_VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x130);
const GUARDED_VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x120);
const BACKEND6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x11);

/// `plain6` unprotected; `guarded6` the same with a deny rule inside an allow rule and a
/// rate limit that only the flooding /64 reaches. One backend each, so every admitted
/// SYN's output is known without the table.
const CONFIG: &str = crate::rig_config_with!(
    r#"  - name: plain6
    vip: "2001:db8:100::130"
    port: 80
    backends:
      - { address: "2001:db8:1::11", port: 8080, zone: az-a }
  - name: guarded6
    vip: "2001:db8:100::120"
    port: 80
    filter: { allow: ["2001:db8:10::/48"], deny: ["2001:db8:10:6600::/56"] }
    rate_limit: { syns_per_second: 1, burst: 1000, block: 1h }
    backends:
      - { address: "2001:db8:1::11", port: 8080, zone: az-a }
"#
);

/// A SYN from `src`:`sport` to `vip`.
fn syn(src: Ipv6Addr, vip: Ipv6Addr, sport: u16) -> Frame6 {
    Frame6 {
        src_mac: CLIENT_MAC,
        src,
        dst: vip,
        sport,
        flags: SYN,
        ..Frame6::default()
    }
}

/// Source `i` of /64s in turn under `2001:db8:10:<net>::/64` (net from `first`): a new
/// /64 for each of 30,000 calls, then the same ones from a new port.
fn nth_source(first: u16, i: usize) -> (Ipv6Addr, u16) {
    let net = first + (i % 30_000) as u16;
    (
        Ipv6Addr::new(0x2001, 0xdb8, 0x10, net, 0, 0, 0, 1),
        1024 + (i / 30_000) as u16,
    )
}

fn to_backend6(f: &Frame6, b0_mac: Mac) -> Vec<u8> {
    Frame6 {
        dst_mac: backend_mac(0x11),
        src_mac: b0_mac,
        dst: BACKEND6,
        dport: 8080,
        hop_limit: f.hop_limit - 1,
        ..f.clone()
    }
    .bytes()
}

fn measure(
    c: &mut Controller<KernelDataplane>,
    (c0, b0_mac): (u32, Mac),
    o: &Options,
) -> Vec<(&'static str, &'static str, Net)> {
    pin_to_cpu(0);
    c.dataplane_mut().set_clock(1).expect("clock");
    let mut floor_obj = peer_xdp::load_pass_program();
    let floor = peer_xdp::pass_program(&mut floor_obj);
    let (rounds, n) = (o.rounds, o.calls);
    let lb = c.dataplane().program();
    let floor_syn = syn(CLIENT6, PLAIN_VIP6, 40000).bytes();
    let floor_round = calls(n, |i| {
        let r = run_once(floor, c0, &floor_syn);
        expect_run(&r, XDP_PASS, &floor_syn, &format_args!("floor #{i}"));
        r.nanos
    });
    let placed = move |vip: Ipv6Addr, first: u16| -> Round {
        calls(n, move |i| {
            let (src, sport) = nth_source(first, i);
            let frame = syn(src, vip, sport);
            let r = run_once(lb, c0, &frame.bytes());
            let want = to_backend6(&frame, b0_mac);
            expect_run(&r, XDP_REDIRECT, &want, &format_args!("SYN #{i} to {vip}"));
            r.nanos
        })
    };
    let dropped = move |src: Ipv6Addr| -> Round {
        let frame = syn(src, GUARDED_VIP6, 1024).bytes();
        calls(n, move |i| {
            let r = run_once(lb, c0, &frame);
            expect_run(&r, XDP_DROP, &frame, &format_args!("dropped SYN #{i}"));
            r.nanos
        })
    };
    // The flooding /64 spends its burst untimed until its first drop, which blocks it
    // for an hour.
    let flooder = Ipv6Addr::new(0x2001, 0xdb8, 0x10, 0x7700, 0, 0, 0, 1);
    let spent = (0..2000)
        .map(|i| run_once(lb, c0, &syn(flooder, GUARDED_VIP6, 2000 + i).bytes()).action)
        .position(|action| action == XDP_DROP);
    assert!(spent.is_some_and(|n| n >= 1000), "burst of 1000: {spent:?}");
    let rows: Vec<(&'static str, &'static str, Round)> = vec![
        (
            "IPv6 SYN, new flow, unprotected service",
            "syn6_unprotected",
            placed(PLAIN_VIP6, 0x100),
        ),
        (
            "IPv6 SYN dropped by a deny rule (lb_edge6's trie)",
            "syn6_denied",
            dropped(Ipv6Addr::new(0x2001, 0xdb8, 0x10, 0x6600, 0, 0, 0, 1)),
        ),
        (
            "IPv6 SYN dropped by the rate limit (its /64 blocked)",
            "syn6_rate_limited",
            dropped(Ipv6Addr::new(0x2001, 0xdb8, 0x10, 0x7700, 0, 0, 0, 9)),
        ),
        (
            "IPv6 SYN admitted by rules and limit (a new /64: its bucket created)",
            "syn6_admitted",
            placed(GUARDED_VIP6, 0x8000),
        ),
    ];
    let names: Vec<(&'static str, &'static str)> = rows.iter().map(|(n, k, _)| (*n, *k)).collect();
    let (floor_stat, nets) = interleaved(
        rounds,
        floor_round,
        rows.into_iter().map(|(_, _, round)| round).collect(),
    );
    let floor_net = Net {
        gross: floor_stat,
        net: Stat { min: 0, median: 0 },
    };
    std::iter::once(("empty XDP_PASS program (floor)", "floor", floor_net))
        .chain(
            names
                .into_iter()
                .zip(nets)
                .map(|((name, key), net)| (name, key, net)),
        )
        .collect()
}

pub fn run(opts: &Options) -> Value {
    let rig = Rig::build();
    let nics = (rig.c0, rig.b0_mac);
    let rows = rig.with_dataplane(CONFIG, |c| measure(c, nics, opts));
    let mut table = Table::new(
        format!(
            "edge protection over IPv6 per packet, BPF_PROG_TEST_RUN, {} rounds x {} \
             single-run calls, pinned to CPU 0",
            opts.rounds, opts.calls
        ),
        &["path", "min ns", "med ns", "net min", "net med"],
    );
    let mut paths = serde_json::Map::new();
    for (name, key, stat) in &rows {
        net_row(&mut table, &mut paths, (name, key), stat.gross, stat.net);
    }
    table.note(
        "a dropped IPv6 SYN: lb_xdp's look at the addresses, the tail call to lb_v6, its \
         parse and service lookup, the tail call to lb_edge6, its parse, the trie lookup \
         (and the bucket's for the limit); an admitted one is handed back to lb_v6 and \
         placed",
    );
    table.print();
    json!({ "rounds": opts.rounds, "calls_per_round": opts.calls, "paths": paths })
}
