//! Per-packet cost of edge protection (docs/edge-protection.md), measured like
//! [`super::packet`] (BPF_PROG_TEST_RUN single-run calls beside the pass-everything
//! floor measured in the same rounds, every call's action and whole output frame
//! checked): a SYN dropped by a deny rule, by the rate limit
//! and by the allow list; a SYN admitted by both checks (which `lb_edge` hands on to
//! `lb_place`, `lb_xdp`'s path); and the same established flow's pure ACK on a service
//! without and with rules and a limit, side by side.
use std::net::Ipv4Addr;

use aya::programs::Xdp;
use lb_userspace::{control::tables::Controller, kernel::KernelDataplane};
use serde_json::{json, Value};

use super::{
    stats::{calls, interleaved, pin_to_cpu, Net, Round, Stat},
    table::{net_row, Table},
};
use crate::{
    frame::{dst_ip, Frame, Mac},
    packet_rig::*,
    peer_xdp,
};

pub struct Options {
    pub rounds: usize,
    pub calls: usize,
}

const PLAIN_VIP: [u8; 4] = [10, 0, 0, 100];
const GUARDED_VIP: [u8; 4] = [10, 0, 0, 120];
/// A source the deny rule matches.
const DENIED: Ipv4Addr = Ipv4Addr::new(10, 10, 66, 1);
/// A source over its rate.
const FLOODER: Ipv4Addr = Ipv4Addr::new(10, 10, 77, 1);

/// `web` (from the rig) unprotected; `guarded` the same with a deny rule inside an allow
/// rule and a rate limit no test source below reaches except [`FLOODER`].
const CONFIG: &str = crate::rig_config_with!(
    r#"  - name: guarded
    vip: 10.0.0.120
    port: 80
    filter: { allow: [10.10.0.0/16], deny: [10.10.66.0/24, 10.20.0.0/16] }
    rate_limit: { syns_per_second: 1, burst: 1000, block: 1h }
    backends:
      - { address: 10.1.0.11, port: 8080, zone: az-a }
      - { address: 10.1.0.12, port: 8080, zone: az-b }
      - { address: 10.1.0.13, port: 8080, zone: az-c }
"#
);

/// The `i`-th SYN of a never-seen tuple from `src`'s network to `vip`: a new port every
/// call, a new address every 50,000 (each admitted SYN needs its own bucket's token).
fn syn(i: usize, src: Ipv4Addr, vip: [u8; 4]) -> Frame {
    Frame {
        src: Ipv4Addr::from(u32::from(src) + (i / 50_000) as u32),
        dst: vip.into(),
        ..client_syn(1024 + (i % 50_000) as u16)
    }
}

fn measure(
    c: &mut Controller<KernelDataplane>,
    (c0, b0, b0_mac): (u32, u32, Mac),
    o: &Options,
) -> Vec<(&'static str, &'static str, Net)> {
    pin_to_cpu(0);
    c.dataplane_mut().set_clock(1).expect("clock");
    let mut floor_obj = peer_xdp::load_pass_program();
    let floor = peer_xdp::pass_program(&mut floor_obj);
    let (rounds, n) = (o.rounds, o.calls);
    let c: &Controller<KernelDataplane> = c;
    let lb: &Xdp = c.dataplane().program();
    // A dropped frame comes back unchanged; a redirected one as the service's pick must
    // get it.
    let (web, guarded) = (TablePick::new(c, "web"), TablePick::new(c, "guarded"));
    let (web, guarded) = (&web, &guarded);
    let expected = move |service: &str, frame: &Frame, action: u32| -> Vec<u8> {
        let table = if service == "web" { web } else { guarded };
        if action == XDP_DROP {
            frame.bytes()
        } else {
            as_to_backend(frame, table.pick(&frame.flow_key()), b0_mac).bytes()
        }
    };
    let timed = |service: &'static str, src: Ipv4Addr, vip: [u8; 4], action: u32, fresh: bool| {
        calls(n, move |i| {
            let frame = if fresh {
                syn(i, src, vip)
            } else {
                syn(0, src, vip)
            };
            let r = run_once(lb, c0, &frame.bytes());
            expect_run(
                &r,
                action,
                &expected(service, &frame, action),
                &format_args!("{frame:?}"),
            );
            r.nanos
        })
    };
    let floor_syn = client_syn(40000).bytes();
    let floor_round = calls(n, |i| {
        let r = run_once(floor, c0, &floor_syn);
        expect_run(&r, XDP_PASS, &floor_syn, &format_args!("floor #{i}"));
        r.nanos
    });
    // The flooder spends its burst untimed until its first drop, which blocks it for an
    // hour (the buckets' clock is the kernel's: a second's token may pass one more SYN,
    // and without the block a token each second would pass a timed one).
    let spent = (0..2000)
        .map(|_| run_once(lb, c0, &syn(0, FLOODER, GUARDED_VIP).bytes()).action)
        .position(|action| action == XDP_DROP);
    assert!(spent.is_some_and(|n| n >= 1000), "burst of 1000: {spent:?}");
    // 65,536 sources of a denied /16 in turn: each one's slot of the 4,096-slot drop
    // memo has been taken by others before it comes back, so each is checked in full.
    let denied_fresh = calls(n, |i| {
        let src = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 20, 0, 0)) + (i % 65_536) as u32);
        let frame = Frame {
            src,
            dst: GUARDED_VIP.into(),
            ..client_syn(1024)
        };
        let r = run_once(lb, c0, &frame.bytes());
        expect_run(&r, XDP_DROP, &frame.bytes(), &format_args!("{frame:?}"));
        r.nanos
    });
    // Admitted, allowed by the allow rule: 30,000 sources in turn, each with a burst of
    // 1,000 tokens, so none runs out in any run of up to 30 million calls.
    let admitted = calls(n, |i| {
        let src = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 10, 100, 0)) + i as u32 % 30_000);
        let frame = Frame {
            src,
            dst: GUARDED_VIP.into(),
            ..client_syn(1024 + (i / 30_000) as u16)
        };
        let r = run_once(lb, c0, &frame.bytes());
        let want = expected("guarded", &frame, XDP_REDIRECT);
        expect_run(&r, XDP_REDIRECT, &want, &format_args!("admitted SYN #{i}"));
        r.nanos
    });

    // One established flow on each service, the same client tuple but for the VIP.
    let established = |vip: [u8; 4], sport: u16| {
        let open = Frame {
            dst: vip.into(),
            ..client_syn(sport)
        };
        let first = run_once(lb, c0, &open.bytes());
        assert_eq!(first.action, XDP_REDIRECT);
        let backend = dst_ip(&first.output);
        run_once(lb, b0, &syn_ack_of(&open, backend).bytes());
        let ack_frame = ack_of(&open);
        let ack = ack_frame.bytes();
        assert_eq!(run_once(lb, c0, &ack).action, XDP_REDIRECT);
        assert!(c.dataplane().flows.get(&open.flow_key(), 0).is_ok());
        let want = as_to_backend(&ack_frame, (backend, 8080), b0_mac).bytes();
        calls(n, move |i| {
            let r = run_once(lb, c0, &ack);
            expect_run(
                &r,
                XDP_REDIRECT,
                &want,
                &format_args!("established ACK #{i}"),
            );
            r.nanos
        })
    };
    let rows: Vec<(&'static str, &'static str, Round)> = vec![
        (
            "SYN, new flow, unprotected service (Maglev)",
            "syn_unprotected",
            timed("web", CLIENT, PLAIN_VIP, XDP_REDIRECT, true),
        ),
        (
            "SYN dropped by a deny rule (its source remembered)",
            "syn_denied",
            timed("guarded", DENIED, GUARDED_VIP, XDP_DROP, false),
        ),
        (
            "SYN dropped by a deny rule, a new source each (lb_edge's trie)",
            "syn_denied_new_source",
            denied_fresh,
        ),
        (
            "SYN dropped by the rate limit (source blocked)",
            "syn_rate_limited",
            timed("guarded", FLOODER, GUARDED_VIP, XDP_DROP, false),
        ),
        (
            "SYN dropped, no allow rule matches (source remembered)",
            "syn_not_allowed",
            timed(
                "guarded",
                Ipv4Addr::new(192, 0, 2, 1),
                GUARDED_VIP,
                XDP_DROP,
                false,
            ),
        ),
        (
            "SYN admitted by rules and limit (new source)",
            "syn_admitted",
            admitted,
        ),
        (
            "established pure ACK, service without rules",
            "established_plain",
            established(PLAIN_VIP, 33333),
        ),
        (
            "established pure ACK, service with rules and limit",
            "established_guarded",
            established(GUARDED_VIP, 33334),
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
    let nics = (rig.c0, rig.b0, rig.b0_mac);
    let rows = rig.with_dataplane(CONFIG, |c| measure(c, nics, opts));
    let mut table = Table::new(
        format!(
            "edge protection per packet, BPF_PROG_TEST_RUN, {} rounds x {} single-run calls, \
             pinned to CPU 0",
            opts.rounds, opts.calls
        ),
        &["path", "min ns", "med ns", "net min", "net med"],
    );
    let mut paths = serde_json::Map::new();
    for (name, key, stat) in &rows {
        net_row(&mut table, &mut paths, (name, key), stat.gross, stat.net);
    }
    table.note(
        "min/med: over rounds, of each round's median call; net: minus the floor's median \
         in the same round (each round runs the floor, then every row); every call's action \
         and whole output frame checked",
    );
    table.note(
        "a SYN of a source a rule refused a moment ago: lb_xdp's parse, service lookup \
         and one drop-memo read; any other dropped SYN: that, the tail call to lb_edge, its \
         parse, one trie lookup (and a bucket lookup for the limit); an admitted one is \
         handed on to lb_place (lb_xdp's path) and placed",
    );
    table.print();
    json!({ "rounds": opts.rounds, "calls_per_round": opts.calls, "paths": paths })
}
