//! Per-packet cost of each data-path case, measured with BPF_PROG_TEST_RUN beside the
//! pass-everything program timed the same way in the same run.
//!
//! Each figure is the kernel's own timing of one single-run call: a rewriting path cannot
//! use `repeat`, whose later iterations would see the already rewritten frame. So each
//! call carries the same fixed overhead as the floor, which the net columns remove. Every
//! call's return code (and, where it matters, its rewrite) is checked. The measuring
//! thread is pinned to one CPU (per-CPU maps, stable caches).
use aya::programs::Xdp;
use lb_common::{
    limits::{syn_cache_sets, syn_cache_slots},
    syn_cache::SynSet,
};
use lb_userspace::{controller::Controller, loader::KernelDataplane};
use serde_json::{json, Value};

use super::{
    memory,
    stats::{per_call, pin_to_cpu, Stat},
    table::Table,
};
use crate::{
    caps,
    frame::{dst_ip, Frame},
    packet_rig::*,
    peer_xdp,
};

pub struct Options {
    pub rounds: usize,
    pub calls: usize,
}

/// One measured path: its name, its figures, and the floor they are net of.
struct Row {
    name: &'static str,
    key: &'static str,
    stat: Stat,
}

/// The `i`-th client packet of a never-seen tuple to `vip`: a new client port every call
/// and a new client address every 50,000, so every SYN misses the flow table and takes
/// the service's policy.
fn new_tuple(i: usize, vip: [u8; 4], flags: u8) -> Frame {
    let src = std::net::Ipv4Addr::from(u32::from(CLIENT) + (i / 50_000) as u32 * 256);
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

/// Every row of the table, on the data path `c` of a rig whose NICs are `c0` (clients)
/// and `b0` (backends).
fn measure(
    c: &Controller<KernelDataplane>,
    c0: u32,
    b0: u32,
    rounds: usize,
    calls: usize,
) -> [Row; 12] {
    pin_to_cpu(0);
    let mut floor_obj = peer_xdp::load_pass_program();
    let floor = peer_xdp::pass_program(&mut floor_obj);
    let lb = c.dataplane().program();

    // The same frame run again and again, each call's action checked.
    let repeated = |program: &Xdp, ifindex: u32, frame: &[u8], action: u32| {
        per_call(rounds, calls, |_| {
            let r = run_once(program, ifindex, frame);
            assert_eq!(r.action, action);
            r.nanos
        })
    };

    let syn = client_syn(40000).bytes();
    let floor_stat = repeated(floor, c0, &syn, XDP_PASS);

    let other = Frame {
        dst: "10.10.0.50".parse().unwrap(),
        ..client_syn(40000)
    }
    .bytes();
    let pass = repeated(lb, c0, &other, XDP_PASS);

    let new_flow = |vip: [u8; 4]| {
        per_call(rounds, calls, |i| {
            let r = run_once(lb, c0, &new_tuple(i, vip, 0x02).bytes());
            assert_eq!(r.action, XDP_REDIRECT, "new flow #{i} to {vip:?}");
            r.nanos
        })
    };
    // The rig's services per policy (see `packet_rig::CONFIG`). Maglev and source
    // hash take SYNs without recording them; round robin and least connections
    // record both directions on the SYN.
    let maglev = new_flow([10, 0, 0, 100]);
    // The same tuples' next client packet: a miss placed by its SYN's slot, which
    // records both directions of the flow (the inserts a recording SYN pays). Its SYN
    // and the backend's SYN-ACK are sent again right before, untimed: only the ACK of a
    // handshake whose slot is still there, acknowledging the SYN-ACK that passed, records
    // a flow, and the SYNs of later tuples above may have taken this one's slot.
    let first_ack = per_call(rounds, calls, |i| {
        let syn_frame = new_tuple(i, [10, 0, 0, 100], 0x02);
        let syn = run_once(lb, c0, &syn_frame.bytes());
        assert_eq!(syn.action, XDP_REDIRECT, "SYN before first ACK #{i}");
        // Whether the SYN-ACK reaches the client does not matter (the rig routes only
        // the first 50,000 tuples' clients); passing the data path leaves its proof.
        let syn_ack = syn_ack_of(&syn_frame, dst_ip(&syn.output));
        run_once(lb, b0, &syn_ack.bytes());
        let f = ack_of(&syn_frame);
        let r = run_once(lb, c0, &f.bytes());
        assert_eq!(r.action, XDP_REDIRECT, "first ACK #{i}");
        assert!(
            c.dataplane().flows.get(&f.flow_key(), 0).is_ok(),
            "first ACK #{i} records its flow"
        );
        r.nanos
    });
    let round_robin = new_flow([10, 0, 0, 110]);
    let least_conn = new_flow([10, 0, 0, 111]);
    let source_hash = new_flow([10, 0, 0, 112]);

    let first = run_once(lb, c0, &client_syn(33333).bytes());
    let backend = dst_ip(&first.output);
    // Its SYN-ACK, untimed, leaves the proof the ACK needs to record the flow (the
    // round-robin and least-connections rows above recorded flows of this client and
    // port to other VIPs, so it may come back from theirs: not checked here).
    run_once(lb, b0, &syn_ack_of(&client_syn(33333), backend).bytes());
    let ack = ack_of(&client_syn(33333)).bytes();
    assert_eq!(run_once(lb, c0, &ack).action, XDP_REDIRECT);
    assert!(
        c.dataplane()
            .flows
            .get(&client_syn(33333).flow_key(), 0)
            .is_ok(),
        "the established rows' flow is recorded"
    );
    let to_backend = |frame: &[u8]| {
        per_call(rounds, calls, |_| {
            let r = run_once(lb, c0, frame);
            assert_eq!((r.action, dst_ip(&r.output)), (XDP_REDIRECT, backend));
            r.nanos
        })
    };
    // A pure ACK: the flow table, nothing else.
    let established = to_backend(&ack);
    // A data segment of the same flow: the flow table, and the check that the return
    // entry is there before the backend answers.
    let data = Frame {
        flags: 0x18,
        payload: vec![0x61; 100],
        ..client_syn(33333)
    }
    .bytes();
    let established_data = to_backend(&data);

    // The same flow state with the backend behind the ingress NIC (a one-arm
    // deployment): XDP_TX instead of a redirect to another NIC.
    let one_arm = Frame {
        dst: "10.0.0.101".parse().unwrap(),
        ..client_syn(33335)
    };
    assert_eq!(run_once(lb, c0, &one_arm.bytes()).action, XDP_TX);
    syn_ack_passes(c.dataplane(), c0, &one_arm, "10.10.0.77".parse().unwrap());
    let one_arm_ack = ack_of(&one_arm).bytes();
    assert_eq!(run_once(lb, c0, &one_arm_ack).action, XDP_TX);
    assert!(c.dataplane().flows.get(&one_arm.flow_key(), 0).is_ok());
    let established_tx = repeated(lb, c0, &one_arm_ack, XDP_TX);

    let reply_frame = Frame {
        src: backend,
        dst: CLIENT,
        sport: 8080,
        dport: 33333,
        flags: 0x10,
        ..Frame::default()
    };
    let reply = reply_frame.bytes();
    let ret = repeated(lb, b0, &reply, XDP_REDIRECT);
    // A SYN-ACK of a handshake whose SYN recorded no flow: no return entry, the SYN's
    // slot in the SYN cache translates it and the route to the client comes from the
    // FIB (no entry to cache it in).
    let open = run_once(lb, c0, &client_syn(33334).bytes());
    assert_eq!(open.action, XDP_REDIRECT);
    let syn_ack = Frame {
        src: dst_ip(&open.output),
        flags: 0x12,
        dport: 33334,
        ..reply_frame
    }
    .bytes();
    let routed = repeated(lb, b0, &syn_ack, XDP_REDIRECT);
    [
        ("empty XDP_PASS program (floor)", "floor", floor_stat),
        ("non-VIP pass-through", "pass_through", pass),
        (
            "SYN to VIP, new flow (Maglev, no flow recorded)",
            "new_flow_maglev",
            maglev,
        ),
        (
            "first ACK, records the flow (Maglev)",
            "first_ack_maglev",
            first_ack,
        ),
        (
            "SYN, new flow (round robin)",
            "new_flow_round_robin",
            round_robin,
        ),
        (
            "SYN, new flow (least conn)",
            "new_flow_least_conn",
            least_conn,
        ),
        (
            "SYN, new flow (source hash, no flow recorded)",
            "new_flow_source_hash",
            source_hash,
        ),
        (
            "established flow, pure ACK, to backend",
            "established",
            established,
        ),
        (
            "established flow, pure ACK, backend behind the ingress NIC (XDP_TX)",
            "established_same_nic",
            established_tx,
        ),
        (
            "established flow, data segment, to backend",
            "established_data",
            established_data,
        ),
        ("return path, to client", "return_path", ret),
        (
            "SYN-ACK via the SYN cache (FIB lookup)",
            "syn_ack_routed",
            routed,
        ),
    ]
    .map(|(name, key, stat)| Row { name, key, stat })
}

pub fn run(opts: &Options) -> Value {
    let rig = Rig::build();
    let config = CONFIG.replace(
        "flow_table_size: 4096",
        &format!("flow_table_size: {FLOW_TABLE_SIZE}"),
    );
    let (c0, b0) = (rig.c0, rig.b0);
    let (rounds, calls) = (opts.rounds, opts.calls);
    // How crowded the shared L3 is just before and after, to read beside the Maglev
    // SYN row, whose cost flips between runs for a reason not yet found (docs/performance.md,
    // Per packet: it did not follow this figure).
    let l3_read = || memory::random_read_ns(L3_PROBE_BYTES, 3, 300_000);
    let l3_before = l3_read();
    let rows = rig.with_dataplane(&config, |c| measure(c, c0, b0, rounds, calls));
    // The same, the object loaded without CAP_PERFMON: the verifier hardens it against
    // Spectre (see `lb_userspace::privileges`).
    let hardened = rig.with_dataplane_loaded_with(&config, Some(&caps::SERVING), |c| {
        measure(c, c0, b0, rounds, calls)
    });

    // The same SYN with the smallest tables: a 4,096-flow table and as many SYN-cache
    // slots (32 KiB), which stay in the CPU caches; the gap to the row above is what
    // the production-sized SYN cache costs in cache and TLB misses.
    let small_syn = rig.with_dataplane(CONFIG, |c| {
        pin_to_cpu(0);
        let lb = c.dataplane().program();
        per_call(rounds, calls, |i| {
            let r = run_once(lb, c0, &new_tuple(i, VIP.octets(), 0x02).bytes());
            assert_eq!(r.action, XDP_REDIRECT, "new flow #{i}, small tables");
            r.nanos
        })
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
    let floor = rows[0].stat;
    let hardened_floor = hardened[0].stat;
    let mut table = Table::new(
        format!(
            "per-packet cost, BPF_PROG_TEST_RUN, {rounds} rounds x {calls} single-run calls, \
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
        let net_min = row.stat.min.saturating_sub(floor.min);
        let net_median = row.stat.median.saturating_sub(floor.median);
        let hardened_net_median = hardened
            .iter()
            .find(|h| h.key == row.key)
            .map(|h| h.stat.median.saturating_sub(hardened_floor.median));
        table.row(vec![
            row.name.into(),
            row.stat.min.to_string(),
            row.stat.median.to_string(),
            net_min.to_string(),
            net_median.to_string(),
            hardened_net_median.map_or("-".into(), |n| n.to_string()),
        ]);
        paths.insert(
            row.key.into(),
            json!({
                "name": row.name,
                "min_ns": row.stat.min,
                "median_ns": row.stat.median,
                "net_min_ns": net_min,
                "net_median_ns": net_median,
                "hardened_net_median_ns": hardened_net_median,
            }),
        );
    }
    table.note("min/med: over rounds, of each round's median call; net: minus the floor");
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
        "calls_per_round": calls,
        "paths": paths,
        "l3_probe": {
            "region_bytes": L3_PROBE_BYTES,
            "random_read_ns_before": l3_before,
            "random_read_ns_after": l3_after,
        },
    })
}
