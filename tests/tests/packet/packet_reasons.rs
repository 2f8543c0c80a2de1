//! Packet tests of documented behaviours at the edges of forwarding: a rewritten packet
//! with no route (`pass_fib_failed`) or whose next hop is behind a NIC the data path does
//! not redirect to (`pass_egress_not_attached`); a reply with TTL <= 1 on a return flow;
//! a lost reply-direction entry put back by the client's next answered packet; a removed
//! service's flows purged in the same step. The real XDP object, maps filled by the real
//! controller, frames through BPF_PROG_TEST_RUN in a [`Rig`] namespace; every check is on
//! the action, every output byte, the reason counters and exact flow-map counts.
use std::net::Ipv4Addr;

use lb_common::{counters::Reason, flow::NatReturn};
use lb_tests::{
    frame::{checksums_valid, dst_ip, parse_mac, Frame, ACK, FIN_ACK, PSH_ACK, SYN_ACK},
    netns,
    packet_exchange::{self, reply, run_counted},
    packet_rig::*,
};
use lb_userspace::{control::tables::Controller, kernel::KernelDataplane, model::config};

/// A backend no route leads to (the rig has no default route).
const NO_ROUTE: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 5);
/// A backend behind `e0`, a NIC the test adds and never makes a redirect target.
const OFF_NIC: Ipv4Addr = Ipv4Addr::new(10, 3, 0, 5);

/// `web` and `api` (hash-placed, their SYNs record no flow), and one service for each
/// backend the data path cannot send to itself.
const CONFIG: &str = lb_tests::rig_config_with!(
    r#"  - name: api
    vip: 10.0.0.106
    port: 80
    backends:
      - { address: 10.1.0.11, port: 8080, zone: az-a }
      - { address: 10.1.0.12, port: 8080, zone: az-b }
  - { name: noroute, vip: 10.0.0.104, port: 80, backends: [{ address: 10.2.0.5, port: 8080, zone: az-a }] }
  - { name: offnic, vip: 10.0.0.105, port: 80, backends: [{ address: 10.3.0.5, port: 8080, zone: az-a }] }
"#
);

const API_VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 106);

/// `syn` with its destination rewritten to `backend`:8080, nothing else changed (the
/// packet the kernel gets when the data path rewrote it but could not send it).
fn rewritten_only(syn: &Frame, backend: Ipv4Addr) -> Frame {
    Frame {
        dst: backend,
        dport: 8080,
        ..syn.clone()
    }
}

/// `backend`:8080's packet to the client's `dport`, as it arrives on `b0`.
fn from_backend(backend: Ipv4Addr, dport: u16, flags: u8, ttl: u8, payload: &[u8]) -> Frame {
    Frame {
        ttl,
        payload: payload.to_vec(),
        ..reply(&client_syn(dport), backend, flags)
    }
}

/// A full handshake from the client's `sport` to `vip`:80 (see
/// [`packet_exchange::handshake`]); returns the backend, both directions recorded.
fn handshake(
    c: &Controller<KernelDataplane>,
    rig: (u32, u32),
    vip: Ipv4Addr,
    sport: u16,
) -> Ipv4Addr {
    let dp = c.dataplane();
    let syn = Frame {
        dst: vip,
        ..client_syn(sport)
    };
    let backend = packet_exchange::handshake(dp, rig, &syn);
    let ack = ack_of(&syn);
    assert!(dp.flows.get(&ack.flow_key(), 0).is_ok(), "flow of {sport}");
    assert!(dp.return_flows.get(&ack.reply_key(backend), 0).is_ok());
    backend
}

/// Forward and reply-direction entries of service `id`.
fn entries_of(dp: &KernelDataplane, id: u32) -> (usize, usize) {
    let forward = dp
        .flows
        .iter()
        .map(|e| e.expect("reading the flow map"))
        .filter(|(_, t)| t.service == id)
        .count();
    let reverse = dp
        .return_flows
        .iter()
        .map(|e| e.expect("reading the return map"))
        .filter(|(_, n)| n.service == id)
        .count();
    (forward, reverse)
}

fn total_entries(dp: &KernelDataplane) -> (usize, usize) {
    (dp.flows.keys().count(), dp.return_flows.keys().count())
}

#[test]
fn a_rewritten_packet_without_a_route_is_passed_rewritten_as_pass_fib_failed() {
    let rig = Rig::build();
    let c0 = rig.c0;
    rig.with_dataplane(CONFIG, |c| {
        let syn = Frame {
            dst: Ipv4Addr::new(10, 0, 0, 104),
            ..client_syn(45000)
        };
        // Twice: no route is cached, so the second SYN asks the FIB again.
        for _ in 0..2 {
            let r = run_counted(c.dataplane(), c0, &syn.bytes(), Reason::PassFibFailed);
            assert_eq!(r.action, XDP_PASS);
            // The kernel routes (and answers ICMP for) the rewritten packet: addresses
            // and checksums rewritten, TTL and MACs left to the kernel's own hop.
            assert_eq!(r.output, rewritten_only(&syn, NO_ROUTE).bytes());
            assert!(checksums_valid(&r.output));
        }
    });
}

#[test]
fn a_next_hop_behind_a_nic_without_redirect_is_passed_as_pass_egress_not_attached() {
    let rig = Rig::build();
    let ns = rig.ns.clone();
    let ip = |args: &[&str]| netns::ns_ip(&ns, args);
    ip(&["link", "add", "e0", "type", "veth", "peer", "name", "e0p"]);
    ip(&["link", "set", "e0", "up"]);
    ip(&["link", "set", "e0p", "up"]);
    ip(&["addr", "add", "10.3.0.1/24", "dev", "e0"]);
    let mac = backend_mac(5).map(|b| format!("{b:02x}")).join(":");
    ip(&[
        "neigh",
        "replace",
        "10.3.0.5",
        "lladdr",
        &mac,
        "dev",
        "e0",
        "nud",
        "permanent",
    ]);
    let e0_mac = parse_mac(&netns::link_mac(&ns, "e0"));
    let c0 = rig.c0;
    rig.with_dataplane(CONFIG, |c| {
        let syn = Frame {
            dst: Ipv4Addr::new(10, 0, 0, 105),
            ..client_syn(45100)
        };
        // The route is found (then cached for the backend): the packet is routed in XDP,
        // one hop taken, but `e0` is not in the redirect map, so the kernel sends it.
        let expected = Frame {
            dst_mac: backend_mac(5),
            src_mac: e0_mac,
            ttl: 63,
            ..rewritten_only(&syn, OFF_NIC)
        };
        for _ in 0..2 {
            let r = run_counted(
                c.dataplane(),
                c0,
                &syn.bytes(),
                Reason::PassEgressNotAttached,
            );
            assert_eq!(r.action, XDP_PASS);
            assert_eq!(r.output, expected.bytes());
            assert!(checksums_valid(&r.output));
        }
    });
}

#[test]
fn a_reply_with_ttl_one_is_passed_untouched_on_a_return_flow_and_on_a_handshake() {
    let rig = Rig::build();
    let (c0, b0, c0_mac) = (rig.c0, rig.b0, rig.c0_mac);
    rig.with_dataplane(CONFIG, |c| {
        // The SYN-ACK of a handshake in the SYN cache.
        let syn = client_syn(45200);
        let r = run_once(c.dataplane().program(), c0, &syn.bytes());
        assert_eq!(r.action, XDP_REDIRECT);
        let backend = dst_ip(&r.output);
        for ttl in [1, 0] {
            let syn_ack = from_backend(backend, 45200, SYN_ACK, ttl, b"");
            let r = run_counted(c.dataplane(), b0, &syn_ack.bytes(), Reason::PassTtlExpired);
            assert_eq!(
                (r.action, r.output),
                (XDP_PASS, syn_ack.bytes()),
                "SYN-ACK ttl {ttl}"
            );
        }

        // A reply of an established flow.
        let backend = handshake(c, (c0, b0), VIP, 45201);
        for ttl in [1, 0] {
            let reply = from_backend(backend, 45201, PSH_ACK, ttl, b"HTTP/1.0 200 OK\r\n");
            let r = run_counted(c.dataplane(), b0, &reply.bytes(), Reason::PassTtlExpired);
            assert_eq!(
                (r.action, r.output),
                (XDP_PASS, reply.bytes()),
                "reply ttl {ttl}"
            );
        }
        // The bound is exact: TTL 2 is forwarded, leaving with 1.
        let reply = from_backend(backend, 45201, PSH_ACK, 2, b"HTTP/1.0 200 OK\r\n");
        let r = run_counted(c.dataplane(), b0, &reply.bytes(), Reason::RedirectInterface);
        assert_eq!(r.action, XDP_REDIRECT);
        assert_eq!(r.output, as_from_vip(&reply, c0_mac).bytes());
    });
}

#[test]
fn a_lost_reply_entry_is_restored_by_the_clients_next_answered_packet() {
    let rig = Rig::build();
    let (c0, b0, c0_mac) = (rig.c0, rig.b0, rig.c0_mac);
    rig.with_dataplane(CONFIG, |c| {
        // Only a connection left to the LRU maps has a reply entry of its own, which the
        // LRU can evict apart from its forward entry: its home block is full.
        let client = client_syn(45300);
        crowd_home_of(c.dataplane_mut(), &client.flow_key());
        let backend = handshake(c, (c0, b0), VIP, 45300);
        assert_eq!(c.dataplane().flows.slot_of(&client.flow_key()), None);
        let reply_key = client.reply_key(backend);
        assert!(c
            .dataplane()
            .return_flows
            .overflow()
            .get(&reply_key, 0)
            .is_ok());
        let original: NatReturn = c.dataplane().return_flows.get(&reply_key, 0).unwrap();
        // Each kind of client packet that will be answered: data, FIN, RST.
        for (flags, payload) in [
            (PSH_ACK, b"GET / HTTP/1.0\r\n\r\n".as_slice()),
            (FIN_ACK, b"".as_slice()),
            (0x04, b"".as_slice()),
        ] {
            c.dataplane_mut()
                .return_flows
                .remove(&reply_key)
                .expect("the reply entry was there");
            let dp = c.dataplane();
            let packet = Frame {
                flags,
                seq: 1001,
                payload: payload.to_vec(),
                ..client.clone()
            };
            let r = run_counted(dp, c0, &packet.bytes(), Reason::RedirectInterface);
            assert_eq!(
                (r.action, dst_ip(&r.output)),
                (XDP_REDIRECT, backend),
                "flags {flags:#x}"
            );
            let restored = dp
                .return_flows
                .get(&reply_key, 0)
                .unwrap_or_else(|_| panic!("flags {flags:#x}: the reply entry is back"));
            assert_eq!(
                (
                    restored.vip,
                    restored.vport,
                    restored.service,
                    restored.backend
                ),
                (
                    original.vip,
                    original.vport,
                    original.service,
                    original.backend
                ),
                "flags {flags:#x}"
            );
            // And the backend's answer leaves from the VIP, byte for byte.
            let answer = from_backend(backend, 45300, ACK, 64, b"");
            let r = run_counted(dp, b0, &answer.bytes(), Reason::RedirectInterface);
            assert_eq!(r.output, as_from_vip(&answer, c0_mac).bytes());
        }
    });
}

#[test]
fn a_removed_services_flows_are_purged_in_the_same_step_and_nothing_else() {
    let rig = Rig::build();
    let (c0, b0) = (rig.c0, rig.b0);
    rig.with_dataplane(CONFIG, |c| {
        const WEB: u16 = 40;
        const API: u16 = 30;
        for p in 0..WEB {
            handshake(c, (c0, b0), VIP, 46000 + p);
        }
        let api_backends: Vec<Ipv4Addr> = (0..API)
            .map(|p| handshake(c, (c0, b0), API_VIP, 47000 + p))
            .collect();
        let (web, api) = (service_id(c, "web"), service_id(c, "api"));
        let (w, a) = (usize::from(WEB), usize::from(API));
        assert_eq!(entries_of(c.dataplane(), web), (w, w));
        assert_eq!(entries_of(c.dataplane(), api), (a, a));
        assert_eq!(total_entries(c.dataplane()), (w + a, w + a));

        let mut without_api = config::parse(CONFIG).unwrap();
        without_api.services.retain(|s| s.name != "api");
        let summary = c.apply(&without_api).unwrap();
        assert_eq!(
            (summary.services_removed, summary.flows_purged),
            (1, a),
            "{summary:?}"
        );
        assert_eq!(entries_of(c.dataplane(), api), (0, 0));
        assert_eq!(entries_of(c.dataplane(), web), (w, w));
        assert_eq!(total_entries(c.dataplane()), (w, w));

        // The VIP has stopped: the purged flows' packets and their backends' replies are
        // no longer ours, and record nothing.
        let dp = c.dataplane();
        for (p, backend) in (47000..).zip(&api_backends).take(5) {
            let data = Frame {
                dst: API_VIP,
                flags: PSH_ACK,
                payload: b"GET / HTTP/1.0\r\n\r\n".to_vec(),
                ..client_syn(p)
            };
            let r = run_counted(dp, c0, &data.bytes(), Reason::PassNoService);
            assert_eq!((r.action, r.output), (XDP_PASS, data.bytes()));
            let reply = from_backend(*backend, p, PSH_ACK, 64, b"late");
            let r = run_counted(dp, b0, &reply.bytes(), Reason::PassNoService);
            assert_eq!((r.action, r.output), (XDP_PASS, reply.bytes()));
        }
        assert_eq!(total_entries(dp), (w, w));
    });
}
