//! Per-packet cost of the SYN proxy (docs/edge-protection.md), measured like
//! [`super::edge`] (BPF_PROG_TEST_RUN single-run calls beside the pass-everything floor):
//! a SYN answered with a cookie, and an established flow's pure ACK on a proxied service
//! beside the same on an unproxied one. Every call's output frame is compared whole with
//! the one it must be (`crate::proxy_frame`), so a fast wrong answer cannot pass.
use std::net::Ipv4Addr;

use aya::programs::Xdp;
use lb_userspace::{control::tables::Controller, kernel::KernelDataplane};
use serde_json::{json, Value};

use super::{
    stats::{per_call, pin_to_cpu, Stat},
    table::{net_row, Table},
};
use crate::{
    frame::{dst_ip, Frame, ACK, SYN_ACK},
    packet_rig::*,
    peer_xdp,
    proxy_frame::{seq_of, ProxySegment},
};

pub struct Options {
    pub rounds: usize,
    pub calls: usize,
}

const PROXIED_VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 122);

/// `web` (from the rig) unproxied; `proxied` with one backend.
const CONFIG: &str = crate::rig_config_with!(
    r#"  - name: proxied
    vip: 10.0.0.122
    port: 80
    syn_proxy: on
    backends:
      - { address: 10.1.0.11, port: 8080, zone: az-a }
"#
);

fn measure(
    c: &mut Controller<KernelDataplane>,
    rig: &Rig,
    o: &Options,
) -> Vec<(&'static str, &'static str, Stat)> {
    pin_to_cpu(0);
    let (c0, b0) = (rig.c0, rig.b0);
    let mut floor_obj = peer_xdp::load_pass_program();
    let floor = peer_xdp::pass_program(&mut floor_obj);
    let (rounds, calls) = (o.rounds, o.calls);
    let lb: &Xdp = c.dataplane().program();
    let floor_stat = per_call(rounds, calls, |_| {
        let r = run_once(floor, c0, &client_syn(40000).bytes());
        assert_eq!(r.action, XDP_PASS);
        r.nanos
    });
    // A new client port every call: the proxy keeps no state for a SYN either way.
    let syn_of = |i: usize| Frame {
        dst: PROXIED_VIP,
        ..client_syn(1024 + (i % 60_000) as u16)
    };
    let cookie = per_call(rounds, calls, |i| {
        let syn = syn_of(i);
        let r = run_once(lb, c0, &syn.bytes());
        assert_eq!(r.action, XDP_TX, "SYN #{i}");
        let want = ProxySegment {
            dst_mac: syn.src_mac,
            src_mac: syn.dst_mac,
            seq: seq_of(&r.output),
            ack: syn.seq.wrapping_add(1),
            ..ProxySegment::syn_ack(PROXIED_VIP, CLIENT, 80, syn.sport)
        };
        assert_eq!(r.output, want.bytes(), "SYN-ACK #{i}");
        r.nanos
    });

    // The same client tuple but for the VIP, established on each service.
    let plain = {
        let open = client_syn(33333);
        let first = run_once(lb, c0, &open.bytes());
        assert_eq!(first.action, XDP_REDIRECT);
        run_once(lb, b0, &syn_ack_of(&open, dst_ip(&first.output)).bytes());
        let ack = ack_of(&open);
        let r = run_once(lb, c0, &ack.bytes());
        assert_eq!(r.action, XDP_REDIRECT);
        (ack.bytes(), r.output)
    };
    let proxied = {
        let syn = Frame {
            dst: PROXIED_VIP,
            ..client_syn(33334)
        };
        let r = run_once(lb, c0, &syn.bytes());
        assert_eq!(r.action, XDP_TX);
        let cookie = seq_of(&r.output);
        let ack = Frame {
            flags: ACK,
            seq: syn.seq.wrapping_add(1),
            ack: cookie.wrapping_add(1),
            ..syn.clone()
        };
        assert_eq!(run_once(lb, c0, &ack.bytes()).action, XDP_REDIRECT);
        let backend = Ipv4Addr::new(10, 1, 0, 11);
        let syn_ack = Frame {
            src_mac: backend_mac(11),
            src: backend,
            dst: CLIENT,
            sport: 8080,
            dport: syn.sport,
            flags: SYN_ACK,
            seq: BACKEND_ISN,
            ack: syn.seq.wrapping_add(1),
            ..Frame::default()
        };
        assert_eq!(run_once(lb, b0, &syn_ack.bytes()).action, XDP_TX);
        let want = Frame {
            dst_mac: backend_mac(11),
            src_mac: rig.b0_mac,
            dst: backend,
            dport: 8080,
            ttl: ack.ttl - 1,
            ack: BACKEND_ISN.wrapping_add(1),
            ..ack.clone()
        };
        (ack.bytes(), want.bytes())
    };
    let established = |(frame, want): &(Vec<u8>, Vec<u8>)| {
        per_call(rounds, calls, |_| {
            let r = run_once(lb, c0, frame);
            assert_eq!(r.action, XDP_REDIRECT);
            assert_eq!(&r.output, want);
            r.nanos
        })
    };
    let est_plain = established(&plain);
    let est_proxied = established(&proxied);
    vec![
        ("empty XDP_PASS program (floor)", "floor", floor_stat),
        ("SYN answered with a cookie", "syn_cookie", cookie),
        (
            "established pure ACK, unproxied service",
            "established_plain",
            est_plain,
        ),
        (
            "established pure ACK, proxied flow (ack translated)",
            "established_proxied",
            est_proxied,
        ),
    ]
}

pub fn run(opts: &Options) -> Value {
    let rig = Rig::build();
    let rows = rig.with_dataplane(CONFIG, |c| measure(c, &rig, opts));
    let floor = rows[0].2;
    let mut table = Table::new(
        format!(
            "SYN proxy per packet, BPF_PROG_TEST_RUN, {} rounds x {} single-run calls, \
             pinned to CPU 0",
            opts.rounds, opts.calls
        ),
        &["path", "min ns", "med ns", "net min", "net med"],
    );
    let mut paths = serde_json::Map::new();
    for (name, key, stat) in &rows {
        let net = Stat {
            min: stat.min.saturating_sub(floor.min),
            median: stat.median.saturating_sub(floor.median),
        };
        net_row(&mut table, &mut paths, (name, key), *stat, net);
    }
    table.note("min/med: over rounds, of each round's median call; net: minus the floor");
    table.note(
        "a cookie: lb_xdp's parse and service lookup, the tail calls to lb_edge and \
         lb_proxy, the kernel's cookie helper and the SYN-ACK written in place; a proxied \
         ACK: the flow hit plus one lookup of its sequence offset",
    );
    table.print();
    json!({ "rounds": opts.rounds, "calls_per_round": opts.calls, "paths": paths })
}
