//! Client packets without a flow entry that complete no handshake of ours are forwarded by
//! the service's table and record nothing; a backend's reply to one proves the connection
//! real and records it, translated by the stateless reverse map (see
//! `lb_common::reverse`). Sources no router forwards from are dropped. Real object,
//! BPF_PROG_TEST_RUN (see `lb_tests::packet_rig`).
use std::{collections::HashMap, net::Ipv4Addr};

use lb_common::{
    counters::{Reason, TrafficCounters, REASONS},
    flow::{FlowKey, FlowTarget, NatReturn, FLOW_F_COUNTED, FLOW_F_ESTABLISHED},
};
use lb_tests::{
    frame::{checksums_valid, dst_ip, Frame, ACK, FIN_ACK, PSH_ACK, RST, RST_ACK},
    packet_exchange::{self, reply},
    packet_rig::*,
};
use lb_userspace::{control::tables::Controller, dataplane::Dataplane, kernel::KernelDataplane};

/// The rig's flow-table size.
const FLOW_TABLE: usize = 4096;

fn flows(dp: &KernelDataplane) -> HashMap<FlowKey, FlowTarget> {
    dp.flows.iter().map(Result::unwrap).collect()
}

fn return_flows(dp: &KernelDataplane) -> HashMap<FlowKey, NatReturn> {
    dp.return_flows.iter().map(Result::unwrap).collect()
}

fn counters(c: &Controller<KernelDataplane>, name: &str) -> TrafficCounters {
    c.dataplane()
        .service_counters(planned_service(c, name).id)
        .unwrap()
}

/// A full handshake (SYN, SYN-ACK, ACK) of the client from `sport` to service `name`;
/// returns the backend.
fn handshake(c: &Controller<KernelDataplane>, rig: &Rig, name: &str, sport: u16) -> Ipv4Addr {
    let syn = Frame {
        dst: vip_of(c, name),
        ..client_syn(sport)
    };
    packet_exchange::handshake(c.dataplane(), (rig.c0, rig.b0), &syn)
}

/// `frame` (client -> VIP) as `backend` must get it.
fn as_to_backend(frame: &Frame, backend: Ipv4Addr, b0_mac: [u8; 6]) -> Frame {
    Frame {
        dst_mac: backend_mac(backend.octets()[3]),
        src_mac: b0_mac,
        dst: backend,
        dport: 8080,
        ttl: frame.ttl - 1,
        ..frame.clone()
    }
}

#[test]
fn a_spoofed_ack_rst_and_data_flood_records_nothing_and_evicts_no_flow() {
    let rig = Rig::build();
    rig.with_dataplane(CONFIG, |c| {
        // Live flows: handshakes to every hash-placed service, SYN-recorded ones to the
        // others.
        for (i, name) in ["web", "sh", "rr", "lc"].into_iter().enumerate() {
            for n in 0..8 {
                handshake(c, &rig, name, 30_000 + (i as u16) * 100 + n);
            }
        }
        let dp = c.dataplane();
        let (flows_before, returns_before) = (flows(dp), return_flows(dp));
        assert_eq!((flows_before.len(), returns_before.len()), (32, 32));
        let names = ["web", "rr", "lc", "sh"];
        let before: Vec<TrafficCounters> = names.iter().map(|n| counters(c, n)).collect();
        let backends: Vec<u32> = c.plan().unwrap().backends.iter().map(|b| b.id).collect();
        let active_before: Vec<u64> = backends
            .iter()
            .map(|id| dp.active_flows(*id).unwrap())
            .collect();
        let vips: Vec<Ipv4Addr> = names.iter().map(|n| vip_of(c, n)).collect();

        // Five times the table, from sources all over 11.0.0.0/8, to all four services,
        // each tuple twice in a row (the second finds the slot the first left).
        let flood = 5 * FLOW_TABLE;
        for n in 0..flood {
            let i = n / 2;
            let flags = [ACK, RST, RST_ACK, PSH_ACK, FIN_ACK][i % 5];
            let spoofed = Frame {
                src: Ipv4Addr::from(0x0b00_0000 + (i as u32).wrapping_mul(7919) % (1 << 24)),
                dst: vips[i % vips.len()],
                sport: 1024 + (i % 60_000) as u16,
                seq: i as u32,
                flags,
                payload: if flags == PSH_ACK {
                    b"GET / HTTP/1.1\r\n\r\n".to_vec()
                } else {
                    Vec::new()
                },
                ..client_syn(0)
            };
            let r = run_once(dp.program(), rig.c0, &spoofed.bytes());
            assert_eq!(
                r.action, XDP_REDIRECT,
                "spoofed packet {i} is forwarded by the table"
            );
        }

        let (flows_after, returns_after) = (flows(dp), return_flows(dp));
        assert_eq!(
            (flows_after.len(), returns_after.len()),
            (flows_before.len(), returns_before.len()),
            "entries in the flow and reply tables"
        );
        let changed = flows_before
            .iter()
            .filter(|(k, v)| flows_after.get(k) != Some(v))
            .count();
        assert_eq!(changed, 0, "flow entries lost or changed");
        assert!(
            returns_after == returns_before,
            "the reply table, entry for entry"
        );
        for (n, (name, was)) in names.iter().zip(&before).enumerate() {
            let now = counters(c, name);
            assert_eq!(now.new_flows, was.new_flows, "{name}: no new flow");
            assert_eq!(now.flows_from_replies, 0, "{name}");
            assert_eq!(
                now.stateless_forwards - was.stateless_forwards,
                (flood / names.len()) as u64,
                "{name}: every spoofed packet counted as a stateless forward (service {n})"
            );
        }
        let active_after: Vec<u64> = backends
            .iter()
            .map(|id| dp.active_flows(*id).unwrap())
            .collect();
        assert_eq!(active_after, active_before, "active flows per backend");
    });
}

#[test]
fn a_flow_whose_entries_were_lost_keeps_its_backend_and_the_reply_records_it_again() {
    let rig = Rig::build();
    let (c0, b0, c0_mac, b0_mac) = (rig.c0, rig.b0, rig.c0_mac, rig.b0_mac);
    rig.with_dataplane(CONFIG, |c| {
        let backend = handshake(c, &rig, "web", 32_000);
        let id = backend_id(c, "web", backend);
        let syn = client_syn(32_000);
        // What a node that never saw the handshake has: nothing (an ECMP move).
        let dp = c.dataplane_mut();
        dp.flows.remove(&syn.flow_key()).unwrap();
        assert!(
            dp.return_flows.get(&syn.reply_key(backend), 0).is_err(),
            "the slot served both directions"
        );
        let dp = c.dataplane();
        let (web, active) = (counters(c, "web"), dp.active_flows(id).unwrap());
        assert_eq!((web.new_flows, web.stateless_forwards), (1, 0));

        // The client's data goes to the same backend, byte for byte, and records nothing.
        let data = Frame {
            flags: PSH_ACK,
            seq: 1,
            payload: b"hello".to_vec(),
            ..syn.clone()
        };
        let r = run_once(dp.program(), c0, &data.bytes());
        assert_eq!(r.action, XDP_REDIRECT);
        assert_eq!(r.output, as_to_backend(&data, backend, b0_mac).bytes());
        assert!(dp.flows.get(&syn.flow_key(), 0).is_err(), "no entry yet");
        assert_eq!(counters(c, "web").stateless_forwards, 1);

        // The backend's answer comes back from the VIP, byte for byte, and records the
        // flow in both directions on its backend.
        let answer = Frame {
            payload: b"world".to_vec(),
            ..reply(&syn, backend, PSH_ACK)
        };
        let r = run_once(dp.program(), b0, &answer.bytes());
        assert_eq!(r.action, XDP_REDIRECT);
        assert_eq!(r.output, as_from_vip(&answer, c0_mac).bytes());
        assert!(checksums_valid(&r.output));
        let flow = dp
            .flows
            .get(&syn.flow_key(), 0)
            .expect("recorded by the reply");
        assert_eq!(flow.backend, id);
        assert_eq!(flow.state, FLOW_F_COUNTED | FLOW_F_ESTABLISHED);
        let nat = dp.return_flows.get(&syn.reply_key(backend), 0).unwrap();
        assert_eq!(
            (nat.vip, nat.vport, nat.backend),
            (u32::from_ne_bytes(VIP.octets()), 80u16.to_be(), id)
        );
        let web = counters(c, "web");
        assert_eq!(
            (
                web.new_flows,
                web.flows_from_replies,
                web.stateless_forwards
            ),
            (1, 1, 1)
        );
        assert_eq!(dp.backend_counters(id).unwrap().flows_from_replies, 1);
        assert_eq!(dp.active_flows(id).unwrap(), active + 1);

        // From now on the flow's packets follow its entry.
        let r = run_once(dp.program(), c0, &data.bytes());
        assert_eq!(r.output, as_to_backend(&data, backend, b0_mac).bytes());
        assert_eq!(counters(c, "web").stateless_forwards, 1);
    });
}

#[test]
fn a_backend_serving_four_vips_answers_each_connection_from_its_own() {
    let rig = Rig::build();
    let (c0, b0, c0_mac) = (rig.c0, rig.b0, rig.c0_mac);
    rig.with_dataplane(CONFIG, |c| {
        // 10.1.0.11 and .12 serve web, rr, lc and sh, .13 all but lc. A connection to
        // each VIP whose packets find no flow entry: each reply goes back from the VIP
        // its connection's packet went to.
        for (sport, name) in (20_000..).zip(["web", "rr", "lc", "sh"]) {
            let shared = table_backend(c, name, sport);
            let vips = c
                .plan()
                .unwrap()
                .backends
                .iter()
                .filter(|b| b.at.address == shared)
                .count();
            assert!(vips >= 3, "{shared} serves {vips} VIPs");
            let data = Frame {
                dst: vip_of(c, name),
                flags: PSH_ACK,
                payload: b"ping".to_vec(),
                ..client_syn(sport)
            };
            let r = run_once(c.dataplane().program(), c0, &data.bytes());
            assert_eq!(
                (r.action, dst_ip(&r.output)),
                (XDP_REDIRECT, shared),
                "{name}"
            );
            let answer = reply(&data, shared, ACK);
            let r = run_once(c.dataplane().program(), b0, &answer.bytes());
            assert_eq!(r.action, XDP_REDIRECT, "{name}");
            let expected = Frame {
                src: vip_of(c, name),
                ..as_from_vip(&answer, c0_mac)
            };
            assert_eq!(r.output, expected.bytes(), "{name}: from its own VIP");
            let flow = c
                .dataplane()
                .flows
                .get(&data.flow_key(), 0)
                .expect("recorded");
            assert_eq!(flow.backend, backend_id(c, name, shared), "{name}");
            let counted = counters(c, name);
            assert_eq!(
                (
                    counted.stateless_forwards,
                    counted.flows_from_replies,
                    counted.new_flows
                ),
                (1, 1, 0),
                "{name}"
            );
        }
    });
}

#[test]
fn replies_that_answer_no_forwarded_packet_pass_untouched_and_record_nothing() {
    let rig = Rig::build();
    let (c0, b0) = (rig.c0, rig.b0);
    rig.with_dataplane(CONFIG, |c| {
        let dp = c.dataplane();
        let run_passed = |frame: &Frame, what: &str| {
            let before = dp.reason_counters().unwrap();
            let r = run_once(dp.program(), b0, &frame.bytes());
            assert_eq!((r.action, &r.output), (XDP_PASS, &frame.bytes()), "{what}");
            let after = dp.reason_counters().unwrap();
            for (slot, (reason, name)) in REASONS.iter().enumerate() {
                let moved = u64::from(*reason == Reason::PassNoService);
                assert_eq!(after[slot], before[slot] + moved, "{what}: counter {name}");
            }
        };
        // `lbd`'s probe, or a client reaching a backend directly, whose connection the
        // table would place on that very backend: nothing of it came through a VIP.
        let sport = 33_000;
        let backend = table_backend(c, "web", sport);
        for flags in [ACK, PSH_ACK, FIN_ACK] {
            run_passed(
                &reply(&client_syn(sport), backend, flags),
                "a probe's reply",
            );
        }
        // A spoofed ACK, forwarded, and the reset its backend answers it with.
        let spoofed = Frame {
            flags: ACK,
            ..client_syn(sport)
        };
        let r = run_once(dp.program(), c0, &spoofed.bytes());
        assert_eq!((r.action, dst_ip(&r.output)), (XDP_REDIRECT, backend));
        run_passed(&reply(&spoofed, backend, RST), "a backend's reset");
        // The same spoofed ACK again: its first left a slot only a reply may use.
        let r = run_once(dp.program(), c0, &spoofed.bytes());
        assert_eq!((r.action, dst_ip(&r.output)), (XDP_REDIRECT, backend));
        // A segment to that client from another backend than the one it was sent to.
        let other = [11u8, 12, 13]
            .map(|last| Ipv4Addr::new(10, 1, 0, last))
            .into_iter()
            .find(|b| *b != backend)
            .unwrap();
        run_passed(&reply(&spoofed, other, ACK), "a reply from another backend");
        // From the right backend but another port.
        let stray = Frame {
            sport: 9090,
            ..reply(&spoofed, backend, ACK)
        };
        run_passed(&stray, "a reply from another port");
        assert_eq!(flows(dp).len(), 0);
        assert_eq!(return_flows(dp).len(), 0);
        let web = counters(c, "web");
        assert_eq!(
            (
                web.stateless_forwards,
                web.new_flows,
                web.flows_from_replies
            ),
            (2, 0, 0)
        );
    });
}

#[test]
fn martian_sources_are_dropped_and_counted() {
    let rig = Rig::build();
    let c0 = rig.c0;
    rig.with_dataplane(CONFIG, |c| {
        let dp = c.dataplane();
        let martians = [
            Ipv4Addr::new(0, 0, 0, 0),
            Ipv4Addr::new(127, 0, 0, 1),
            Ipv4Addr::new(169, 254, 1, 1),
            Ipv4Addr::new(224, 0, 0, 5),
            Ipv4Addr::new(240, 0, 0, 1),
            Ipv4Addr::new(255, 255, 255, 255),
            VIP,
        ];
        let slot = |r: Reason| REASONS.iter().position(|(x, _)| *x == r).unwrap();
        let ids: Vec<u32> = c.plan().unwrap().backends.iter().map(|b| b.id).collect();
        for (i, src) in martians.into_iter().enumerate() {
            for flags in [0x02, ACK, RST] {
                let frame = Frame {
                    src,
                    flags,
                    ..client_syn(40_000 + i as u16)
                };
                let before = dp.reason_counters().unwrap();
                let r = run_once(dp.program(), c0, &frame.bytes());
                assert_eq!(r.action, XDP_DROP, "from {src}, flags {flags:#x}");
                let after = dp.reason_counters().unwrap();
                for (s, (_, name)) in REASONS.iter().enumerate() {
                    let moved = u64::from(s == slot(Reason::DropMartianSource));
                    assert_eq!(after[s], before[s] + moved, "from {src}: counter {name}");
                }
            }
        }
        assert_eq!(
            dp.reason_counters().unwrap()[slot(Reason::DropMartianSource)],
            21
        );
        let web = counters(c, "web");
        assert_eq!(web, TrafficCounters::default(), "nothing reached a backend");
        for id in ids {
            assert_eq!(dp.backend_signals(id).unwrap().syns, 0);
        }
        assert_eq!(flows(dp).len(), 0);
        // A martian to a port no service uses is not ours: the kernel's business.
        let other_port = Frame {
            src: Ipv4Addr::new(127, 0, 0, 1),
            dport: 81,
            ..client_syn(40_100)
        };
        let r = run_once(dp.program(), c0, &other_port.bytes());
        assert_eq!((r.action, r.output), (XDP_PASS, other_port.bytes()));
    });
}

#[test]
fn a_reply_spoofed_through_the_client_nic_records_nothing_and_is_counted() {
    let rig = Rig::build();
    let (c0, b0, c0_mac) = (rig.c0, rig.b0, rig.c0_mac);
    rig.with_dataplane(CONFIG, |c| {
        let dp = c.dataplane();
        let slot = |r: Reason| REASONS.iter().position(|(x, _)| *x == r).unwrap();
        let ids: Vec<u32> = c.plan().unwrap().backends.iter().map(|b| b.id).collect();
        let active = |dp: &KernelDataplane| -> Vec<u64> {
            ids.iter().map(|id| dp.active_flows(*id).unwrap()).collect()
        };
        let active_before = active(dp);
        let sport = 41_000;
        let backend = table_backend(c, "web", sport);
        let id = backend_id(c, "web", backend);
        // The client's ACK, forwarded by the table: it leaves the slot a reply may use.
        let ack = Frame {
            flags: ACK,
            ..client_syn(sport)
        };
        let r = run_once(dp.program(), c0, &ack.bytes());
        assert_eq!((r.action, dst_ip(&r.output)), (XDP_REDIRECT, backend));

        // The same client's "reply" from that backend, sent through the client's NIC:
        // passed untouched, counted under its reason alone, nothing recorded.
        for flags in [ACK, PSH_ACK, FIN_ACK] {
            let spoofed = reply(&ack, backend, flags);
            let before = dp.reason_counters().unwrap();
            let r = run_once(dp.program(), c0, &spoofed.bytes());
            assert_eq!(
                (r.action, &r.output),
                (XDP_PASS, &spoofed.bytes()),
                "flags {flags:#x}"
            );
            let after = dp.reason_counters().unwrap();
            for (s, (_, name)) in REASONS.iter().enumerate() {
                let moved = u64::from(s == slot(Reason::PassReplyWrongInterface));
                assert_eq!(
                    after[s],
                    before[s] + moved,
                    "flags {flags:#x}: counter {name}"
                );
            }
        }
        assert_eq!(flows(dp).len(), 0, "flow entries");
        assert_eq!(return_flows(dp).len(), 0, "reply entries");
        let web = counters(c, "web");
        assert_eq!(
            (
                web.stateless_forwards,
                web.flows_from_replies,
                web.new_flows
            ),
            (1, 0, 0)
        );
        assert_eq!(dp.backend_counters(id).unwrap().flows_from_replies, 0);
        assert_eq!(active(dp), active_before, "active flows per backend");

        // The backend's genuine reply, on the backend NIC, still records the flow.
        let answer = reply(&ack, backend, ACK);
        let r = run_once(dp.program(), b0, &answer.bytes());
        assert_eq!(r.action, XDP_REDIRECT);
        assert_eq!(r.output, as_from_vip(&answer, c0_mac).bytes());
        let recorded = flows(dp);
        assert_eq!(
            recorded.keys().copied().collect::<Vec<_>>(),
            vec![ack.flow_key()]
        );
        let flow = recorded[&ack.flow_key()];
        assert_eq!(
            (flow.backend, flow.service, flow.state),
            (
                id,
                planned_service(c, "web").id,
                FLOW_F_COUNTED | FLOW_F_ESTABLISHED
            )
        );
        let returns = return_flows(dp);
        assert_eq!(
            returns.keys().copied().collect::<Vec<_>>(),
            vec![ack.reply_key(backend)]
        );
        let nat = returns[&ack.reply_key(backend)];
        assert_eq!(
            (nat.vip, nat.vport, nat.service, nat.backend),
            (
                u32::from_ne_bytes(VIP.octets()),
                80u16.to_be(),
                planned_service(c, "web").id,
                id
            )
        );
        assert_eq!(counters(c, "web").flows_from_replies, 1);
        assert_eq!(
            dp.reason_counters().unwrap()[slot(Reason::PassReplyWrongInterface)],
            3
        );
    });
}

#[test]
fn a_reply_from_a_backend_behind_the_client_nic_is_recorded() {
    // A backend on the client's side of the gateway answers through the client NIC, which
    // is where the kernel routes it: the check lets it through (and so cannot tell a
    // spoofed reply from it; see docs/syn-cache.md).
    let rig = Rig::build();
    let (c0, c0_mac) = (rig.c0, rig.c0_mac);
    rig.with_dataplane(CONFIG, |c| {
        let dp = c.dataplane();
        let backend = Ipv4Addr::new(10, 10, 0, 77);
        let id = backend_id(c, "same-nic", backend);
        let vip = vip_of(c, "same-nic");
        let data = Frame {
            dst: vip,
            flags: PSH_ACK,
            payload: b"ping".to_vec(),
            ..client_syn(42_000)
        };
        let r = run_once(dp.program(), c0, &data.bytes());
        assert_eq!((r.action, dst_ip(&r.output)), (XDP_TX, backend));
        let answer = reply(&data, backend, ACK);
        let r = run_once(dp.program(), c0, &answer.bytes());
        assert_eq!(r.action, XDP_TX);
        let expected = Frame {
            src: vip,
            ..as_from_vip(&answer, c0_mac)
        };
        assert_eq!(r.output, expected.bytes());
        let flow = dp.flows.get(&data.flow_key(), 0).expect("recorded");
        assert_eq!(
            (flow.backend, flow.state),
            (id, FLOW_F_COUNTED | FLOW_F_ESTABLISHED)
        );
        let nat = dp.return_flows.get(&data.reply_key(backend), 0).unwrap();
        assert_eq!(
            (nat.vip, nat.backend),
            (u32::from_ne_bytes(vip.octets()), id)
        );
        assert_eq!(counters(c, "same-nic").flows_from_replies, 1);
    });
}
