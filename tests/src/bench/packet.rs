//! Per-packet cost of each data-path case, measured with BPF_PROG_TEST_RUN beside the
//! pass-everything program timed the same way in the same run.
//!
//! Each figure is the kernel's own timing of one single-run call: a rewriting path cannot
//! use `repeat`, whose later iterations would see the already rewritten frame. So each
//! call carries the same fixed overhead as the floor, which the net columns remove; the
//! floor is measured in every round beside the rows ([`interleaved`]). Every call's
//! return code and whole output frame are checked against the frame it must be. The
//! measuring thread is pinned to one CPU (per-CPU maps, stable caches).
use aya::programs::Xdp;
use lb_common::{
    limits::{syn_cache_sets, syn_cache_slots},
    syn_cache::SynSet,
};
use lb_userspace::{control::tables::Controller, kernel::KernelDataplane};
use serde_json::{json, Value};

use super::{
    memory,
    stats::{calls, interleaved, pin_to_cpu, Net, Round, Stat},
    table::Table,
};
use crate::{
    caps,
    frame::{dst_ip, dst_port, Frame},
    packet_rig::*,
    peer_xdp,
};

pub struct Options {
    pub rounds: usize,
    pub calls: usize,
}

/// One measured path: its name, its figures net of the floor measured in the same
/// rounds.
struct Row {
    name: &'static str,
    key: &'static str,
    stat: Net,
}

/// The `i`-th client packet of a never-seen tuple to `vip`: a new client port every call
/// and a new client address every 50,000, so every SYN misses the flow table and takes
/// the service's policy. The addresses start at 10.(10 + the VIP's last octet).1.2,
/// never the client of the established rows (10.10.0.2): a recording SYN of theirs would
/// take over the return entry those rows' replies use.
fn new_tuple(i: usize, vip: [u8; 4], flags: u8) -> Frame {
    new_tuple_of_clients(i, vip[3], vip, flags)
}

/// [`new_tuple`] with the client address:port of tuple `i` to the VIP ending in
/// `clients_of`: each VIP's rows have clients of their own (`10.(10 + last octet).x.2`),
/// as new connections of fresh clients do, unless a row asks for another VIP's.
fn new_tuple_of_clients(i: usize, clients_of: u8, vip: [u8; 4], flags: u8) -> Frame {
    let base = u32::from(CLIENT) + (u32::from(clients_of) << 16);
    let src = std::net::Ipv4Addr::from(base + (1 + i / 50_000) as u32 * 256);
    Frame {
        src,
        dst: vip.into(),
        flags,
        ..client_syn(1024 + (i % 50_000) as u16)
    }
}

/// A region half the size of this VM's L3: its random reads are L3 hits unless other
/// tenants crowd the L3.
const L3_PROBE_BYTES: usize = 16 << 20;

/// Flow-table entries of the rig, as a large deployment would size it.
const FLOW_TABLE_SIZE: u32 = 1 << 20;

/// The floor: the pass-everything program on a SYN, its frame handed back unchanged.
fn floor_round<'a>(floor: &'a Xdp, c0: u32, calls_per_round: usize) -> Round<'a> {
    let syn = client_syn(40000).bytes();
    calls(calls_per_round, move |i| {
        let r = run_once(floor, c0, &syn);
        expect_run(&r, XDP_PASS, &syn, &format_args!("floor #{i}"));
        r.nanos
    })
}

/// Every row of the table, on the data path `c` of the rig. The rows run interleaved
/// with the floor, round by round; every call's action and whole output frame is checked
/// against the frame it must be.
fn measure(c: &Controller<KernelDataplane>, nics: Nics, rounds: usize, n: usize) -> [Row; 13] {
    pin_to_cpu(0);
    let Nics {
        c0,
        b0,
        c0_mac,
        b0_mac,
    } = nics;
    let mut floor_obj = peer_xdp::load_pass_program();
    let floor = peer_xdp::pass_program(&mut floor_obj);
    let lb = c.dataplane().program();

    // The same frame run again and again, each call's action and output checked.
    let repeated =
        |row: &'static str, frame: Vec<u8>, ifindex: u32, action: u32, expected: Vec<u8>| {
            calls(n, move |i| {
                let r = run_once(lb, ifindex, &frame);
                expect_run(&r, action, &expected, &format_args!("{row}, call #{i}"));
                r.nanos
            })
        };
    // A never-seen tuple per call to the service `name`; its backend is the table's pick
    // (`pick`), or, for the policies that pick by state, any of the service's backends.
    let new_flow = |name: &'static str, vip: [u8; 4], clients_of: u8, pick: bool| {
        let backends: Vec<_> = c
            .plan()
            .expect("a plan was applied")
            .backends
            .iter()
            .filter(|b| b.at.service == name)
            .map(|b| (ipv4(b.at.address), b.at.port))
            .collect();
        let table = TablePick::new(c, name);
        calls(n, move |i| {
            let frame = new_tuple_of_clients(i, clients_of, vip, 0x02);
            let r = run_once(lb, c0, &frame.bytes());
            let to = if pick {
                table.pick(&frame.flow_key())
            } else {
                (dst_ip(&r.output), dst_port(&r.output))
            };
            assert!(backends.contains(&to), "new flow #{i} to {name}: {to:?}");
            let expected = as_to_backend(&frame, to, b0_mac).bytes();
            expect_run(
                &r,
                XDP_REDIRECT,
                &expected,
                &format_args!("new flow #{i} to {name}"),
            );
            r.nanos
        })
    };

    let other = Frame {
        dst: "10.10.0.50".parse().unwrap(),
        ..client_syn(40000)
    }
    .bytes();

    // The established rows' flow: its SYN, its SYN-ACK untimed (the proof the ACK needs
    // to record the flow), its ACK.
    let first = run_once(lb, c0, &client_syn(33333).bytes());
    let backend = dst_ip(&first.output);
    run_once(lb, b0, &syn_ack_of(&client_syn(33333), backend).bytes());
    let ack_frame = ack_of(&client_syn(33333));
    let ack = ack_frame.bytes();
    assert_eq!(run_once(lb, c0, &ack).action, XDP_REDIRECT);
    assert!(
        c.dataplane()
            .flows
            .get(&client_syn(33333).flow_key(), 0)
            .is_ok(),
        "the established rows' flow is recorded"
    );
    let to_web = (backend, 8080);
    // A data segment of the same flow: the flow table, and the check that the return
    // entry is there before the backend answers.
    let data_frame = Frame {
        flags: 0x18,
        payload: vec![0x61; 100],
        ..client_syn(33333)
    };

    // The same flow state with the backend behind the ingress NIC (a one-arm
    // deployment): XDP_TX instead of a redirect to another NIC.
    let one_arm = Frame {
        dst: "10.0.0.101".parse().unwrap(),
        ..client_syn(33335)
    };
    assert_eq!(run_once(lb, c0, &one_arm.bytes()).action, XDP_TX);
    let same_nic_backend = "10.10.0.77".parse().unwrap();
    syn_ack_passes(c.dataplane(), c0, &one_arm, same_nic_backend);
    let one_arm_ack = ack_of(&one_arm);
    assert_eq!(run_once(lb, c0, &one_arm_ack.bytes()).action, XDP_TX);
    assert!(c.dataplane().flows.get(&one_arm.flow_key(), 0).is_ok());

    let reply_frame = Frame {
        src: backend,
        dst: CLIENT,
        sport: 8080,
        dport: 33333,
        flags: 0x10,
        ..Frame::default()
    };
    // A SYN-ACK of a handshake whose SYN recorded no flow: no return entry, the SYN's
    // slot in the SYN cache translates it and the route to the client comes from the
    // FIB (no entry to cache it in).
    let open = run_once(lb, c0, &client_syn(33334).bytes());
    assert_eq!(open.action, XDP_REDIRECT);
    let syn_ack_frame = Frame {
        src: dst_ip(&open.output),
        flags: 0x12,
        dport: 33334,
        ..reply_frame.clone()
    };

    // The same tuples as the Maglev SYN row; each call's SYN and the backend's SYN-ACK are
    // sent again right before, untimed: only the ACK of a handshake whose slot is still
    // there, acknowledging the SYN-ACK that passed, records a flow, and the SYNs of later
    // tuples may have taken this one's slot.
    let web = TablePick::new(c, "web");
    let first_ack = calls(n, move |i| {
        let syn_frame = new_tuple(i, [10, 0, 0, 100], 0x02);
        let run = |ifindex, frame: &[u8]| run_once(lb, ifindex, frame);
        let what = format_args!("first ACK #{i}");
        first_ack(
            (c.dataplane(), run),
            nics,
            &syn_frame,
            (XDP_REDIRECT, &web),
            &what,
        )
        .nanos
    });

    let rows: Vec<(&str, &str, Round)> = vec![
        (
            "non-VIP pass-through",
            "pass_through",
            repeated("pass-through", other.clone(), c0, XDP_PASS, other),
        ),
        (
            "SYN to VIP, new flow (Maglev, no flow recorded)",
            "new_flow_maglev",
            new_flow("web", [10, 0, 0, 100], 100, true),
        ),
        (
            "first ACK, records the flow (Maglev)",
            "first_ack_maglev",
            first_ack,
        ),
        (
            "SYN, new flow (round robin)",
            "new_flow_round_robin",
            new_flow("rr", [10, 0, 0, 110], 110, false),
        ),
        (
            "SYN, new flow (round robin), client address:port in a flow to another VIP",
            "new_flow_round_robin_shared_client",
            // The first ACK row's clients: each tuple's slot holds that client's flow
            // to `web`, so this one goes to the LRU map.
            new_flow("rr", [10, 0, 0, 110], 100, false),
        ),
        (
            "SYN, new flow (least conn)",
            "new_flow_least_conn",
            new_flow("lc", [10, 0, 0, 111], 111, false),
        ),
        (
            "SYN, new flow (source hash, no flow recorded)",
            "new_flow_source_hash",
            new_flow("sh", [10, 0, 0, 112], 112, true),
        ),
        (
            "established flow, pure ACK, to backend",
            "established",
            repeated(
                "established",
                ack.clone(),
                c0,
                XDP_REDIRECT,
                as_to_backend(&ack_frame, to_web, b0_mac).bytes(),
            ),
        ),
        (
            "established flow, pure ACK, backend behind the ingress NIC (XDP_TX)",
            "established_same_nic",
            repeated(
                "established, XDP_TX",
                one_arm_ack.bytes(),
                c0,
                XDP_TX,
                as_to_backend(&one_arm_ack, (same_nic_backend, 8080), c0_mac).bytes(),
            ),
        ),
        (
            "established flow, data segment, to backend",
            "established_data",
            repeated(
                "established, data",
                data_frame.bytes(),
                c0,
                XDP_REDIRECT,
                as_to_backend(&data_frame, to_web, b0_mac).bytes(),
            ),
        ),
        (
            "return path, to client",
            "return_path",
            repeated(
                "return path",
                reply_frame.bytes(),
                b0,
                XDP_REDIRECT,
                as_from_vip(&reply_frame, c0_mac).bytes(),
            ),
        ),
        (
            "SYN-ACK via the SYN cache (FIB lookup)",
            "syn_ack_routed",
            {
                let mut syn_acks = repeated(
                    "SYN-ACK via the SYN cache",
                    syn_ack_frame.bytes(),
                    b0,
                    XDP_REDIRECT,
                    as_from_vip(&syn_ack_frame, c0_mac).bytes(),
                );
                let syn = client_syn(33334).bytes();
                Box::new(move |round| {
                    // Its SYN again, untimed: the new-flow rows' SYNs of the rounds before
                    // may have taken its SYN-cache slot (a set of two, written when full).
                    assert_eq!(run_once(lb, c0, &syn).action, XDP_REDIRECT);
                    syn_acks(round)
                })
            },
        ),
    ];
    let names: Vec<(&'static str, &'static str)> = rows.iter().map(|(n, k, _)| (*n, *k)).collect();
    let (floor_stat, nets) = interleaved(
        rounds,
        floor_round(floor, c0, n),
        rows.into_iter().map(|(_, _, round)| round).collect(),
    );
    let floor_row = Row {
        name: "empty XDP_PASS program (floor)",
        key: "floor",
        stat: Net {
            gross: floor_stat,
            net: Stat { min: 0, median: 0 },
        },
    };
    let mut all = vec![floor_row];
    all.extend(
        names
            .into_iter()
            .zip(nets)
            .map(|((name, key), stat)| Row { name, key, stat }),
    );
    all.try_into()
        .unwrap_or_else(|_| unreachable!("thirteen rows"))
}

pub fn run(opts: &Options) -> Value {
    let rig = Rig::build();
    let config = CONFIG.replace(
        "flow_table_size: 4096",
        &format!("flow_table_size: {FLOW_TABLE_SIZE}"),
    );
    let nics = rig.nics();
    let (c0, b0_mac) = (rig.c0, rig.b0_mac);
    let (rounds, n) = (opts.rounds, opts.calls);
    // How crowded the shared L3 is just before and after, to read beside the Maglev
    // SYN row, whose cost flips between runs for a reason not yet found (docs/performance.md,
    // Per packet: it did not follow this figure).
    let l3_read = || memory::random_read_ns(L3_PROBE_BYTES, 3, 300_000);
    let l3_before = l3_read();
    let rows = rig.with_dataplane(&config, |c| measure(c, nics, rounds, n));
    // The same, the object loaded without CAP_PERFMON: the verifier hardens it against
    // Spectre (see `lb_userspace::kernel::privileges`).
    let hardened = rig.with_dataplane_loaded_with(&config, Some(&caps::SERVING), |c| {
        measure(c, nics, rounds, n)
    });

    // The same SYN with the smallest tables: a 4,096-flow table and as many SYN-cache
    // slots (32 KiB), which stay in the CPU caches; the gap to the row above is what
    // the production-sized SYN cache costs in cache and TLB misses.
    let small_syn = rig.with_dataplane(CONFIG, |c| {
        pin_to_cpu(0);
        let mut floor_obj = peer_xdp::load_pass_program();
        let floor = peer_xdp::pass_program(&mut floor_obj);
        let lb = c.dataplane().program();
        let web = TablePick::new(c, "web");
        let row = calls(n, |i| {
            let frame = new_tuple(i, VIP.octets(), 0x02);
            let r = run_once(lb, c0, &frame.bytes());
            let to = web.pick(&frame.flow_key());
            let expected = as_to_backend(&frame, to, b0_mac).bytes();
            expect_run(
                &r,
                XDP_REDIRECT,
                &expected,
                &format_args!("new flow #{i}, small tables"),
            );
            r.nanos
        });
        interleaved(rounds, floor_round(floor, c0, n), vec![row]).1[0]
    });
    let l3_after = l3_read();
    let mut rows: Vec<Row> = rows.into_iter().collect();
    rows.insert(
        3,
        Row {
            name: "SYN, new flow (Maglev), 4,096-flow tables (in cache)",
            key: "new_flow_maglev_small_tables",
            stat: small_syn,
        },
    );
    let mut table = Table::new(
        format!(
            "per-packet cost, BPF_PROG_TEST_RUN, {rounds} rounds x {n} single-run calls, \
             pinned to CPU 0"
        ),
        &[
            "path",
            "min ns",
            "med ns",
            "net min",
            "net med",
            "hardened net med",
        ],
    );
    let mut paths = serde_json::Map::new();
    for row in &rows {
        let (net_min, net_median) = (row.stat.net.min, row.stat.net.median);
        let hardened_net_median = hardened
            .iter()
            .find(|h| h.key == row.key)
            .map(|h| h.stat.net.median);
        table.row(vec![
            row.name.into(),
            row.stat.gross.min.to_string(),
            row.stat.gross.median.to_string(),
            net_min.to_string(),
            net_median.to_string(),
            hardened_net_median.map_or("-".into(), |n| n.to_string()),
        ]);
        paths.insert(
            row.key.into(),
            json!({
                "name": row.name,
                "min_ns": row.stat.gross.min,
                "median_ns": row.stat.gross.median,
                "net_min_ns": net_min,
                "net_median_ns": net_median,
                "hardened_net_median_ns": hardened_net_median,
            }),
        );
    }
    table.note(
        "min/med: over rounds, of each round's median call; net: minus the floor's median \
         in the same round (each round runs the floor, then every row), min/med over rounds",
    );
    table.note(
        "every call's action and whole output frame are checked against the frame it must \
         be (round robin and least connections: the backend any of the service's)",
    );
    table.note(
        "hardened: the same rows on another load of the object with only CAP_BPF and \
         CAP_NET_ADMIN effective (lbd without CAP_PERFMON), which the verifier hardens \
         against Spectre",
    );
    let syn_slots = syn_cache_slots(FLOW_TABLE_SIZE);
    table.note(format!(
        "flow table {FLOW_TABLE_SIZE} entries (SYN cache {syn_slots} slots, {} KiB) unless \
         the row says otherwise; the established flow here is one hot flow, see the fill \
         table for many",
        syn_cache_sets(FLOW_TABLE_SIZE) as usize * std::mem::size_of::<SynSet>() / 1024
    ));
    table.note(format!(
        "one dependent random read in {} MiB (half this VM's L3, shared with other \
         tenants), before and after: {l3_before:.1} / {l3_after:.1} ns",
        L3_PROBE_BYTES >> 20
    ));
    table.print();
    json!({
        "rounds": rounds,
        "calls_per_round": n,
        "paths": paths,
        "l3_probe": {
            "region_bytes": L3_PROBE_BYTES,
            "random_read_ns_before": l3_before,
            "random_read_ns_after": l3_after,
        },
    })
}
