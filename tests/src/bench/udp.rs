//! Per-packet cost of UDP services (docs/udp.md) beside TCP's established packets,
//! measured like [`super::packet`]: BPF_PROG_TEST_RUN single-run calls interleaved with
//! the pass-everything floor, round by round. A UDP datagram takes one more program than
//! TCP (`lb_xdp`'s parse, then the tail call to `lb_udp` and its own parse). Every call's
//! action and whole output frame are checked against the frame it must be.
use std::net::Ipv4Addr;

use lb_userspace::{control::tables::Controller, kernel::KernelDataplane};
use serde_json::{json, Value};

use super::{
    stats::{calls, interleaved, pin_to_cpu, Round},
    table::{net_row, Table},
};
use crate::{
    frame::{dst_ip, Frame},
    packet_rig::*,
    peer_xdp,
    udp_frame::Datagram,
};

pub struct Options {
    pub rounds: usize,
    pub calls: usize,
}

/// The rig's `web` (TCP) and `dns` (UDP) on the same backends.
const CONFIG: &str = crate::rig_config_with!(crate::rig_dns_service!());

const DNS_VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 120);

/// A 100-byte query from the client's `sport` to `dns`.
fn query(src: Ipv4Addr, sport: u16) -> Datagram {
    Datagram {
        src_mac: CLIENT_MAC,
        src,
        dst: DNS_VIP,
        sport,
        payload: vec![0x61; 100],
        ..Datagram::default()
    }
}

/// `dg` as backend `addr`:5353 gets it from the NIC with MAC `b0_mac`.
fn to_backend(dg: &Datagram, addr: Ipv4Addr, b0_mac: Mac) -> Vec<u8> {
    Datagram {
        dst_mac: backend_mac(addr.octets()[3]),
        src_mac: b0_mac,
        dst: addr,
        dport: 5353,
        ttl: dg.ttl - 1,
        ..dg.clone()
    }
    .bytes()
}

type Mac = [u8; 6];

fn measure(
    c: &mut Controller<KernelDataplane>,
    rig: (u32, u32, Mac, Mac),
    o: &Options,
) -> Vec<(&'static str, &'static str, super::stats::Net)> {
    let (c0, b0, c0_mac, b0_mac) = rig;
    pin_to_cpu(0);
    c.dataplane_mut().set_clock(1).expect("clock");
    let mut floor_obj = peer_xdp::load_pass_program();
    let floor = peer_xdp::pass_program(&mut floor_obj);
    let lb = c.dataplane().program();
    let n = o.calls;
    let repeated = |row: &'static str, frame: Vec<u8>, ifindex: u32, expected: Vec<u8>| -> Round {
        calls(n, move |i| {
            let r = run_once(lb, ifindex, &frame);
            expect_run(
                &r,
                XDP_REDIRECT,
                &expected,
                &format_args!("{row}, call #{i}"),
            );
            r.nanos
        })
    };

    // TCP: one established flow of `web`, its handshake untimed.
    let open = client_syn(33333);
    let backend = dst_ip(&run_once(lb, c0, &open.bytes()).output);
    run_once(lb, b0, &syn_ack_of(&open, backend).bytes());
    let ack = ack_of(&open);
    assert_eq!(run_once(lb, c0, &ack.bytes()).action, XDP_REDIRECT);
    assert!(c.dataplane().flows.get(&open.flow_key(), 0).is_ok());
    let data = Frame {
        flags: 0x18,
        payload: vec![0x61; 100],
        ..open.clone()
    };

    // UDP: one flow of `dns`, recorded by its first datagram (untimed).
    let flow = query(CLIENT, 33334);
    let (udp_backend, _) = table_pick(c, "dns", &flow.flow_key());
    let r = run_once(lb, c0, &flow.bytes());
    expect_run(
        &r,
        XDP_REDIRECT,
        &to_backend(&flow, udp_backend, b0_mac),
        &"first datagram",
    );
    assert!(c.dataplane().flows.get(&flow.flow_key(), 0).is_ok());
    let answer = Datagram {
        src_mac: backend_mac(udp_backend.octets()[3]),
        src: udp_backend,
        dst: CLIENT,
        sport: 5353,
        dport: 33334,
        payload: vec![0x62; 100],
        ..Datagram::default()
    };
    let answered = Datagram {
        dst_mac: CLIENT_MAC,
        src_mac: c0_mac,
        src: DNS_VIP,
        sport: 53,
        ttl: answer.ttl - 1,
        ..answer.clone()
    };

    // A never-seen tuple per call: a new port every call, a new address every 50,000
    // (from 10.10.1.2 on, never the established rows' client).
    let dns = TablePick::new(c, "dns");
    let new_flow = calls(n, move |i| {
        let src = Ipv4Addr::from(u32::from(CLIENT) + (1 + i / 50_000) as u32 * 256);
        let q = query(src, 1024 + (i % 50_000) as u16);
        let r = run_once(lb, c0, &q.bytes());
        let (to, _) = dns.pick(&q.flow_key());
        expect_run(
            &r,
            XDP_REDIRECT,
            &to_backend(&q, to, b0_mac),
            &format_args!("new UDP flow #{i}"),
        );
        r.nanos
    });

    let rows: Vec<(&'static str, &'static str, Round)> = vec![
        (
            "TCP established flow, pure ACK, to backend",
            "tcp_established",
            repeated(
                "TCP established",
                ack.bytes(),
                c0,
                as_to_backend(&ack, (backend, 8080), b0_mac).bytes(),
            ),
        ),
        (
            "TCP established flow, 100-byte data segment, to backend",
            "tcp_established_data",
            repeated(
                "TCP data",
                data.bytes(),
                c0,
                as_to_backend(&data, (backend, 8080), b0_mac).bytes(),
            ),
        ),
        (
            "UDP datagram of an existing flow (100 bytes), to backend",
            "udp_existing_flow",
            repeated(
                "UDP existing flow",
                flow.bytes(),
                c0,
                to_backend(&flow, udp_backend, b0_mac),
            ),
        ),
        (
            "UDP datagram of a new flow, records it (Maglev)",
            "udp_new_flow",
            new_flow,
        ),
        (
            "UDP reply, to client",
            "udp_reply",
            repeated("UDP reply", answer.bytes(), b0, answered.bytes()),
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
    names
        .into_iter()
        .zip(nets)
        .map(|((name, key), net)| (name, key, net))
        .collect()
}

pub fn run(opts: &Options) -> Value {
    let rig = Rig::build();
    let ends = (rig.c0, rig.b0, rig.c0_mac, rig.b0_mac);
    let rows = rig.with_dataplane(CONFIG, |c| measure(c, ends, opts));
    let mut table = Table::new(
        format!(
            "UDP per packet, BPF_PROG_TEST_RUN, {} rounds x {} single-run calls, pinned to CPU 0",
            opts.rounds, opts.calls
        ),
        &["path", "min ns", "med ns", "net min", "net med"],
    );
    let mut paths = serde_json::Map::new();
    for (name, key, stat) in &rows {
        net_row(&mut table, &mut paths, (name, key), stat.gross, stat.net);
    }
    let net = |key: &str| rows.iter().find(|r| r.1 == key).map(|r| r.2.net.median);
    let (udp, tcp) = (net("udp_existing_flow"), net("tcp_established_data"));
    let met = matches!((udp, tcp), (Some(u), Some(t)) if u <= t);
    table.note("min/med: over rounds, of each round's median call; net: minus the floor's median in the same round");
    table.note(format!(
        "target: a UDP datagram of an existing flow no dearer than an established TCP packet \
         (the data segment, which like it checks the return entry): {} ({udp:?} vs {tcp:?} ns net)",
        if met { "met" } else { "not met" }
    ));
    table.print();
    json!({
        "rounds": opts.rounds,
        "calls_per_round": opts.calls,
        "paths": paths,
        "target_udp_existing_flow_met": met,
    })
}
