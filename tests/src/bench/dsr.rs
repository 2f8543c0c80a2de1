//! Per-packet cost of direct server return (docs/dsr.md) beside NAT, measured like
//! [`super::packet`] (BPF_PROG_TEST_RUN single-run calls beside the pass-everything
//! floor): per mode, an established flow's pure ACK, and a new connection (a SYN of a
//! never-seen tuple plus the client's first ACK, which records the flow). Every call's
//! output frame is checked against the exact frame of `crate::dsr_frames` (NAT: its
//! rewritten destination and valid checksums).
use std::net::Ipv4Addr;

use aya::programs::Xdp;
use lb_userspace::{control::tables::Controller, kernel::KernelDataplane};
use serde_json::{json, Value};

use super::{
    stats::{per_call, pin_to_cpu, Stat},
    table::{net_row, Table},
};
use crate::{
    dsr_frames::{self, Mode},
    frame::{checksums_valid, dst_ip, Frame},
    packet_rig::*,
    peer_xdp,
};

pub struct Options {
    pub rounds: usize,
    pub calls: usize,
}

/// The rig's `web` (NAT, Maglev) and one Maglev service per DSR mode on the same
/// backends, on the VIP's port.
const CONFIG: &str = crate::rig_config_with!(crate::rig_dsr_services!());

/// (service, its mode; `None` for NAT).
const SERVICES: [(&str, Option<Mode>); 4] = [
    ("web", None),
    ("l2", Some(Mode::L2)),
    ("ipip", Some(Mode::Ipip)),
    ("gue", Some(Mode::Gue(6080))),
];

/// Checks one output frame: exact for a DSR mode, for NAT the backend it names and valid
/// checksums.
fn check(mode: Option<Mode>, b0_mac: [u8; 6], backend: Ipv4Addr, sent: &Frame, out: &[u8]) {
    match mode {
        None => {
            assert_eq!(dst_ip(out), backend, "NAT: {sent:?}");
            assert!(checksums_valid(out), "NAT checksums: {sent:?}");
        }
        Some(mode) => {
            let want = dsr_frames::to_backend(
                mode,
                b0_mac,
                backend,
                &sent.bytes(),
                &sent.flow_key(),
                HASH_SEED,
            );
            assert_eq!(out, want, "{mode:?}: {sent:?}");
        }
    }
}

fn measure(
    c: &mut Controller<KernelDataplane>,
    (c0, b0, b0_mac): (u32, u32, [u8; 6]),
    o: &Options,
) -> Vec<(String, String, Stat)> {
    pin_to_cpu(0);
    c.dataplane_mut().set_clock(1).expect("clock");
    let mut floor_obj = peer_xdp::load_pass_program();
    let floor = peer_xdp::pass_program(&mut floor_obj);
    let (rounds, calls) = (o.rounds, o.calls);
    let lb: &Xdp = c.dataplane().program();
    let floor_stat = per_call(rounds, calls, |_| {
        let r = run_once(floor, c0, &client_syn(40000).bytes());
        assert_eq!(r.action, XDP_PASS);
        r.nanos
    });
    let mut rows = vec![(
        "empty XDP_PASS program (floor)".to_string(),
        "floor".to_string(),
        floor_stat,
    )];
    for (n, (name, mode)) in SERVICES.iter().enumerate() {
        let vip = vip_of(c, name);
        // Established: one flow, its handshake done untimed (NAT sees the SYN-ACK too).
        let sport = 30_000 + n as u16;
        let open = Frame {
            dst: vip,
            ..client_syn(sport)
        };
        let backend = table_backend(c, name, sport);
        let first = run_once(lb, c0, &open.bytes());
        assert_eq!(first.action, XDP_REDIRECT);
        if mode.is_none() {
            run_once(lb, b0, &syn_ack_of(&open, backend).bytes());
        }
        let ack = ack_of(&open);
        let r = run_once(lb, c0, &ack.bytes());
        check(*mode, b0_mac, backend, &ack, &r.output);
        assert!(
            c.dataplane().flows.get(&open.flow_key(), 0).is_ok(),
            "{name}"
        );
        let want = r.output;
        let ack_bytes = ack.bytes();
        let established = per_call(rounds, calls, |_| {
            let r = run_once(lb, c0, &ack_bytes);
            assert_eq!(r.action, XDP_REDIRECT);
            assert_eq!(r.output, want, "{name}: established ACK");
            r.nanos
        });
        // A new connection: a SYN of a never-seen tuple and the client's ACK. NAT's
        // Maglev service needs the backend's SYN-ACK between them (untimed) for the ACK
        // to record the flow; a DSR node never sees one.
        let base = Ipv4Addr::new(10, 10, 100 + n as u8, 0);
        let new_conn = per_call(rounds, calls, |i| {
            let syn = Frame {
                src: Ipv4Addr::from(u32::from(base) + (i / 50_000) as u32),
                dst: vip,
                ..client_syn(1024 + (i % 50_000) as u16)
            };
            let hash_backend = |f: &Frame| {
                let key = f.flow_key();
                let s = planned_service(c, name);
                let id = s.ring[(lb_common::hash::flow_hash(&key, HASH_SEED) % RING_SIZE) as usize];
                ipv4(
                    c.plan()
                        .unwrap()
                        .backends
                        .iter()
                        .find(|b| b.id == id)
                        .unwrap()
                        .at
                        .address,
                )
            };
            let backend = hash_backend(&syn);
            let r1 = run_once(lb, c0, &syn.bytes());
            assert_eq!(r1.action, XDP_REDIRECT, "{name}: SYN #{i}");
            check(*mode, b0_mac, backend, &syn, &r1.output);
            if mode.is_none() {
                run_once(lb, b0, &syn_ack_of(&syn, backend).bytes());
            }
            let ack = ack_of(&syn);
            let r2 = run_once(lb, c0, &ack.bytes());
            assert_eq!(r2.action, XDP_REDIRECT, "{name}: ACK #{i}");
            check(*mode, b0_mac, backend, &ack, &r2.output);
            r1.nanos + r2.nanos
        });
        let label = match mode {
            None => "nat".to_string(),
            Some(Mode::L2) => "dsr_l2".to_string(),
            Some(Mode::Ipip) => "ipip".to_string(),
            Some(Mode::Gue(_)) => "gue".to_string(),
        };
        rows.push((
            format!("{label}: established pure ACK"),
            format!("{label}_established"),
            established,
        ));
        rows.push((
            format!("{label}: new connection, SYN + first ACK"),
            format!("{label}_new_connection"),
            new_conn,
        ));
    }
    rows
}

pub fn run(opts: &Options) -> Value {
    let rig = Rig::build();
    let ends = (rig.c0, rig.b0, rig.b0_mac);
    let rows = rig.with_dataplane(CONFIG, |c| measure(c, ends, opts));
    let floor = rows[0].2;
    let mut table = Table::new(
        format!(
            "direct server return per packet, BPF_PROG_TEST_RUN, {} rounds x {} single-run \
             calls, pinned to CPU 0",
            opts.rounds, opts.calls
        ),
        &["path", "min ns", "med ns", "net min", "net med"],
    );
    let mut paths = serde_json::Map::new();
    for (name, key, stat) in &rows {
        // A new connection is two calls: two floors.
        let floors = if key.ends_with("_new_connection") {
            2
        } else {
            1
        };
        let net = Stat {
            min: stat.min.saturating_sub(floors * floor.min),
            median: stat.median.saturating_sub(floors * floor.median),
        };
        net_row(&mut table, &mut paths, (name, key), *stat, net);
    }
    table.note("min/med: over rounds, of each round's median call; net: minus the floor (twice for the two calls of a new connection)");
    table.note(
        "a DSR packet: lb_xdp's parse and flow (or SYN-cache) lookup, the tail call to lb_dsr, \
         its parse, the cached route and the header writes; NAT's new connection also passes \
         the backend's SYN-ACK (untimed), a DSR node never sees one",
    );
    table.note("targets: IPIP/GUE established <= 38 ns net, new connection <= 275 ns net, dsr_l2 below both");
    table.print();
    json!({ "rounds": opts.rounds, "calls_per_round": opts.calls, "paths": paths })
}
