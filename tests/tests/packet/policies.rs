//! Packet tests of the selection policies and of active-flow counting, through
//! BPF_PROG_TEST_RUN on the real object (see `lb_tests::packet_rig`).
use std::{collections::BTreeMap, net::Ipv4Addr};

use lb_common::hash::flow_hash;
use lb_tests::{
    frame::{Frame, ACK, FIN_ACK, RST},
    packet_exchange::{handshake, reply, send},
    packet_rig::*,
};

const RR_VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 110);
const LC_VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 111);
const SH_VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 112);
const B11: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 11);
const B12: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 12);
const B13: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 13);

fn syn(vip: Ipv4Addr, sport: u16) -> Frame {
    Frame {
        dst: vip,
        ..client_syn(sport)
    }
}

#[test]
fn round_robin_cycles_through_backends_in_weight_proportion() {
    let rig = Rig::build();
    let c0 = rig.c0;
    rig.with_dataplane(CONFIG, |c| {
        pin_to_cpu(0);
        let picks: Vec<Ipv4Addr> = (0..10)
            .map(|i| send(c.dataplane(), c0, &syn(RR_VIP, 41000 + i)))
            .collect();
        // Weights 3:1:1 give the smooth schedule a, b, a, c, a, repeated.
        let cycle = [B11, B12, B11, B13, B11];
        assert_eq!(picks, [cycle, cycle].concat());
    });
}

#[test]
fn round_robin_places_a_non_syn_without_a_flow_by_maglev() {
    let rig = Rig::build();
    let c0 = rig.c0;
    rig.with_dataplane(CONFIG, |c| {
        let plan = c.plan().unwrap();
        let rr = plan.services.iter().find(|s| s.name == "rr").unwrap();
        for sport in 42000..42020u16 {
            let ack = Frame {
                flags: ACK,
                ..syn(RR_VIP, sport)
            };
            let key = ack.flow_key();
            let id = rr.ring[(flow_hash(&key, 42) % 1009) as usize];
            let want = plan
                .backends
                .iter()
                .find(|b| b.id == id)
                .unwrap()
                .at
                .address;
            assert_eq!(send(c.dataplane(), c0, &ack), want, "port {sport}");
        }
    });
}

#[test]
fn least_conn_sends_new_flows_to_the_backend_with_fewer_active_flows() {
    let rig = Rig::build();
    let c0 = rig.c0;
    rig.with_dataplane(CONFIG, |c| {
        let first = send(c.dataplane(), c0, &syn(LC_VIP, 43000));
        let other = if first == B11 { B12 } else { B11 };
        // One flow on `first`, none on `other`: the next new flows go to `other` until
        // both have one each.
        assert_eq!(send(c.dataplane(), c0, &syn(LC_VIP, 43001)), other);
        // Load `first` with three more flows' worth by sending SYNs until it has them...
        let mut on_first = vec![43000u16];
        let mut port = 43002;
        while on_first.len() < 4 {
            if send(c.dataplane(), c0, &syn(LC_VIP, port)) == first {
                on_first.push(port);
            }
            port += 1;
        }
        // ...then close every flow on `first` with a reset: `first` now has none, and
        // gets every new flow until it catches up.
        let dp = c.dataplane();
        for p in &on_first {
            send(
                dp,
                c0,
                &Frame {
                    flags: RST,
                    ..syn(LC_VIP, *p)
                },
            );
        }
        let lc_first = backend_id(c, "lc", first);
        let lc_other = backend_id(c, "lc", other);
        let (a, b) = (
            dp.active_flows(lc_first).unwrap(),
            dp.active_flows(lc_other).unwrap(),
        );
        assert_eq!(a, 0, "all of {first}'s flows were reset");
        assert!(b >= 1);
        for i in 0..b {
            assert_eq!(
                send(dp, c0, &syn(LC_VIP, 44000 + i as u16)),
                first,
                "new flow #{i}"
            );
        }
    });
}

/// The controller's adjustment (flows that ended unseen) can briefly exceed a backend's
/// count: a scan that missed an entry evicted mid-walk over-adjusts until the next scan,
/// while the flow's close counts down. Such a backend has no active flow, for `lbd` (whose
/// sums of them once overflowed) and for least-connections (which took it for the
/// fullest, 2^64 less a few).
#[test]
fn an_adjustment_past_a_backends_count_reads_as_no_active_flow() {
    let rig = Rig::build();
    let c0 = rig.c0;
    rig.with_dataplane(CONFIG, |c| {
        let (over, loaded) = (backend_id(c, "lc", B11), backend_id(c, "lc", B12));
        let dp = c.dataplane();
        let program = dp.program();
        let mut opened: aya::maps::Array<_, u64> =
            aya::maps::Array::try_from(aya::maps::Map::Array(map_of(program, "ACTIVE_FLOWS")))
                .unwrap();
        let mut adjust: aya::maps::Array<_, u64> =
            aya::maps::Array::try_from(aya::maps::Map::Array(map_of(program, "ACTIVE_ADJUST")))
                .unwrap();
        opened.set(over, 1, 0).unwrap();
        adjust.set(over, 3, 0).unwrap();
        opened.set(loaded, 5, 0).unwrap();
        assert_eq!(dp.active_flows(over).unwrap(), 0);
        assert_eq!(dp.active_flows(loaded).unwrap(), 5);
        // Each new flow counts: B11 has fewer until it has 5 of its own.
        for port in 45000..45005 {
            assert_eq!(send(dp, c0, &syn(LC_VIP, port)), B11, "port {port}");
        }
    });
}

#[test]
fn source_hash_keeps_every_port_of_a_client_on_one_backend() {
    let rig = Rig::build();
    let c0 = rig.c0;
    rig.with_dataplane(CONFIG, |c| {
        let mut per_client = BTreeMap::new();
        for client in 0..24u8 {
            let src = Ipv4Addr::new(10, 10, 1, client + 1);
            let picks: Vec<Ipv4Addr> = (0..8)
                .map(|p| {
                    send(
                        c.dataplane(),
                        c0,
                        &Frame {
                            src,
                            ..syn(SH_VIP, 45000 + p)
                        },
                    )
                })
                .collect();
            assert!(
                picks.iter().all(|b| *b == picks[0]),
                "client {src}: {picks:?}"
            );
            per_client.insert(src, picks[0]);
        }
        let distinct: std::collections::BTreeSet<_> = per_client.values().collect();
        assert_eq!(
            distinct.len(),
            3,
            "24 clients spread over all backends: {per_client:?}"
        );
    });
}

#[test]
fn active_flows_count_down_exactly_once_per_closed_flow() {
    let rig = Rig::build();
    let (c0, b0) = (rig.c0, rig.b0);
    rig.with_dataplane(CONFIG, |c| {
        let dp = c.dataplane();
        let active = |addr| dp.active_flows(backend_id(c, "web", addr)).unwrap();
        let total = || active(B11) + active(B12) + active(B13);

        // FIN from both sides, then the last ACK and duplicates: one count down.
        let f = client_syn(46000);
        let backend = handshake(dp, (c0, b0), &f);
        assert_eq!(active(backend), 1);
        send(
            dp,
            c0,
            &Frame {
                flags: FIN_ACK,
                ..f.clone()
            },
        );
        assert_eq!(active(backend), 1, "half closed is still active");
        let r = run_once(dp.program(), b0, &reply(&f, backend, FIN_ACK).bytes());
        assert_eq!(r.action, XDP_REDIRECT);
        assert_eq!(active(backend), 0, "closed by the second FIN");
        send(
            dp,
            c0,
            &Frame {
                flags: ACK,
                ..f.clone()
            },
        );
        send(
            dp,
            c0,
            &Frame {
                flags: FIN_ACK,
                ..f.clone()
            },
        );
        run_once(dp.program(), b0, &reply(&f, backend, RST).bytes());
        assert_eq!(active(backend), 0, "no second count down");

        // A reset from the backend closes at once.
        let g = client_syn(46001);
        let backend = handshake(dp, (c0, b0), &g);
        assert_eq!(active(backend), 1);
        run_once(dp.program(), b0, &reply(&g, backend, RST).bytes());
        assert_eq!(active(backend), 0);

        // A new SYN on a closed tuple is a new flow, counted again.
        let before = dp.service_counters(0).unwrap().new_flows;
        let again = handshake(dp, (c0, b0), &g);
        assert_eq!(active(again), 1);
        assert_eq!(dp.service_counters(0).unwrap().new_flows, before + 1);
        send(
            dp,
            c0,
            &Frame {
                flags: RST,
                ..g.clone()
            },
        );

        // Many flows, all closed: nothing left over anywhere.
        for p in 0..200u16 {
            let f = client_syn(47000 + p);
            let backend = handshake(dp, (c0, b0), &f);
            if p % 2 == 0 {
                send(
                    dp,
                    c0,
                    &Frame {
                        flags: FIN_ACK,
                        ..f.clone()
                    },
                );
                run_once(dp.program(), b0, &reply(&f, backend, FIN_ACK).bytes());
            } else {
                send(dp, c0, &Frame { flags: RST, ..f });
            }
        }
        assert_eq!(total(), 0);
    });
}

#[test]
fn the_reconciler_subtracts_flows_that_vanished_without_closing() {
    let rig = Rig::build();
    let (c0, b0) = (rig.c0, rig.b0);
    rig.with_dataplane(CONFIG, |c| {
        let mut opened = Vec::new();
        for p in 0..30u16 {
            let f = client_syn(48000 + p);
            handshake(c.dataplane(), (c0, b0), &f);
            opened.push(f);
        }
        let ids: Vec<u32> = [B11, B12, B13]
            .iter()
            .map(|a| backend_id(c, "web", *a))
            .collect();
        let dp = c.dataplane_mut();
        let before: u64 = ids.iter().map(|id| dp.active_flows(*id).unwrap()).sum();
        assert_eq!(before, 30);
        // Ten flows vanish as if evicted: no FIN or RST was ever seen for them.
        for f in &opened[..10] {
            dp.flows.remove(&f.flow_key()).unwrap();
        }
        let fixes = dp.reconcile_active_flows(&ids).unwrap();
        assert!(!fixes.is_empty());
        let after: u64 = ids.iter().map(|id| dp.active_flows(*id).unwrap()).sum();
        assert_eq!(after, 20);
        assert!(
            dp.reconcile_active_flows(&ids).unwrap().is_empty(),
            "a second pass finds nothing"
        );
    });
}
