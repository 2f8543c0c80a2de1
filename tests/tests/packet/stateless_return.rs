//! `stateless_return`: a backend's reply that finds no return entry and no SYN-cache slot
//! (a connection whose client packets another node of an ECMP tier saw) is translated by
//! the reverse map, backend address:port -> VIP:port, recording nothing; a reply
//! addressed to the node itself (a health probe's) is the kernel's, untouched; without
//! the key the data path behaves as before. Real object, BPF_PROG_TEST_RUN (see
//! `lb_tests::packet_rig`).
use std::{collections::BTreeMap, net::Ipv4Addr};

use lb_common::{
    counters::{Reason, TrafficCounters},
    flow::FLOW_F_ESTABLISHED,
    reverse::{ReverseKey, ReverseTarget},
};
use lb_tests::{
    frame::{checksums_valid, Frame, PSH_ACK, SYN_ACK},
    packet_exchange::{reply, run_counted},
    packet_rig::*,
};
use lb_userspace::{
    control::tables::Controller, dataplane::Dataplane, kernel::KernelDataplane,
    model::config::XdpAttachMode,
};

/// The rig's `web` with `stateless_return` on; `other` keeps its backend to itself.
const STATELESS: &str = r#"
node: { zone: az-a }
interfaces: [c0, b0]
cluster: { ring_size: 1009, hash_seed: 42 }
limits: { flow_table_size: 4096, max_services: 8, max_backends: 64 }
services:
  - name: web
    vip: 10.0.0.100
    port: 80
    stateless_return: true
    backends:
      - { address: 10.1.0.11, port: 8080, zone: az-a }
      - { address: 10.1.0.12, port: 8080, zone: az-b }
      - { address: 10.1.0.13, port: 8080, zone: az-c }
  - name: other
    vip: 10.0.0.101
    port: 80
    backends:
      - { address: 10.1.0.13, port: 9090, zone: az-c }
"#;

const BACKEND: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 11);

fn web(c: &Controller<KernelDataplane>) -> TrafficCounters {
    c.dataplane()
        .service_counters(service_id(c, "web"))
        .unwrap()
}

fn reverse_map(dp: &KernelDataplane) -> BTreeMap<ReverseKey, ReverseTarget> {
    dp.reverse.iter().map(Result::unwrap).collect()
}

/// The backend's SYN-ACK and a data segment of a connection from `sport` whose SYN this
/// node never saw.
fn replies(sport: u16) -> [Frame; 2] {
    let syn = client_syn(sport);
    let data = Frame {
        seq: BACKEND_ISN + 1,
        payload: b"world".to_vec(),
        ..reply(&syn, BACKEND, PSH_ACK)
    };
    [reply(&syn, BACKEND, SYN_ACK), data]
}

#[test]
fn the_reverse_map_holds_each_stateless_return_backend_and_nothing_else() {
    let rig = Rig::build();
    rig.with_dataplane(STATELESS, |c| {
        let id = service_id(c, "web");
        let want: BTreeMap<ReverseKey, ReverseTarget> = [11u8, 12, 13]
            .into_iter()
            .map(|last| {
                let addr = Ipv4Addr::new(10, 1, 0, last);
                let key = ReverseKey {
                    addr: u32::from_ne_bytes(addr.octets()),
                    port: 8080u16.to_be(),
                    proto: 6,
                    family: 4,
                };
                let target = ReverseTarget {
                    vip: u32::from_ne_bytes(VIP.octets()),
                    vport: 80u16.to_be(),
                    _pad: 0,
                    service: id,
                    backend: backend_id(c, "web", addr),
                };
                (key, target)
            })
            .collect();
        assert_eq!(reverse_map(c.dataplane()), want);
        // Turned off again: the entries go.
        let off = config_of(&STATELESS.replace("stateless_return: true", ""));
        c.apply(&off).unwrap();
        assert_eq!(reverse_map(c.dataplane()), BTreeMap::new());
    });
}

#[test]
fn a_reply_on_a_node_that_never_saw_the_connection_is_translated_by_the_reverse_map() {
    let rig = Rig::build();
    let (b0, c0_mac) = (rig.b0, rig.c0_mac);
    rig.with_dataplane(STATELESS, |c| {
        let dp = c.dataplane();
        let id = backend_id(c, "web", BACKEND);
        for (n, frame) in replies(41_000).iter().enumerate() {
            let r = run_counted(dp, b0, &frame.bytes(), Reason::RedirectInterface);
            assert_eq!(r.action, XDP_REDIRECT, "reply {n}");
            assert_eq!(r.output, as_from_vip(frame, c0_mac).bytes(), "reply {n}");
            assert!(checksums_valid(&r.output), "reply {n}");
            let web = web(c);
            assert_eq!(
                (web.replies_reverse_mapped, web.packets_to_client),
                (n as u64 + 1, n as u64 + 1),
                "reply {n} counted once"
            );
        }
        let backend = dp.backend_counters(id).unwrap();
        assert_eq!(backend.replies_reverse_mapped, 2);
        assert_eq!(dp.backend_signals(id).unwrap().syn_acks, 1);
        // Stateless: nothing recorded, in either direction.
        assert_eq!(dp.flows.keys().count(), 0);
        assert_eq!(dp.return_flows.keys().count(), 0);
        let web = web(c);
        assert_eq!((web.new_flows, web.flows_from_replies), (0, 0));
    });
}

#[test]
fn a_reply_to_the_nodes_own_address_is_passed_untouched() {
    let rig = Rig::build();
    let (b0, c0) = (rig.b0, rig.c0);
    rig.with_dataplane(STATELESS, |c| {
        let dp = c.dataplane();
        // What lbd's probe of the backend gets back: to b0's address, and to c0's.
        for node in [Ipv4Addr::new(10, 1, 0, 1), Ipv4Addr::new(10, 10, 0, 1)] {
            for mut frame in replies(42_000) {
                frame.dst = node;
                let bytes = frame.bytes();
                let r = run_counted(dp, b0, &bytes, Reason::PassReplyToNode);
                assert_eq!((r.action, &r.output), (XDP_PASS, &bytes), "to {node}");
            }
        }
        // The backend's address as source on the client side: a client's own "reply",
        // to leave from the VIP. Not translated.
        for frame in replies(42_001) {
            let bytes = frame.bytes();
            let r = run_counted(dp, c0, &bytes, Reason::PassReplyWrongInterface);
            assert_eq!((r.action, &r.output), (XDP_PASS, &bytes));
        }
        // A backend port of another service is not in the map.
        let other = Frame {
            src: Ipv4Addr::new(10, 1, 0, 13),
            sport: 9090,
            ..replies(42_002)[1].clone()
        };
        let bytes = other.bytes();
        let r = run_counted(dp, b0, &bytes, Reason::PassNoService);
        assert_eq!((r.action, &r.output), (XDP_PASS, &bytes));
        assert_eq!(web(c).replies_reverse_mapped, 0);
    });
}

#[test]
fn without_stateless_return_such_a_reply_is_passed_as_before() {
    let rig = Rig::build();
    let b0 = rig.b0;
    let off = STATELESS.replace("stateless_return: true", "");
    rig.with_dataplane(&off, |c| {
        let dp = c.dataplane();
        assert_eq!(reverse_map(dp), BTreeMap::new());
        for frame in replies(43_000) {
            let bytes = frame.bytes();
            let r = run_counted(dp, b0, &bytes, Reason::PassNoService);
            assert_eq!((r.action, &r.output), (XDP_PASS, &bytes));
        }
        let web = web(c);
        assert_eq!((web.replies_reverse_mapped, web.packets_to_client), (0, 0));
    });
}

fn config_of(yaml: &str) -> lb_userspace::model::config::Config {
    lb_userspace::model::config::parse(yaml).expect("valid config")
}

/// Removes a test's pin directory (links and maps) even when the test fails.
struct PinsGuard(lb_userspace::kernel::pins::PinDir);

impl Drop for PinsGuard {
    fn drop(&mut self) {
        let _ = self.0.remove_all();
        let _ = std::fs::remove_dir_all(self.0.root());
    }
}

/// A restarting lbd loads its programs on the running one's pins before it attaches.
/// The program array is shared, so the running lb_xdp tail-calls whichever lb_reply is
/// in it: the new one must not be put there before its egress map names the NICs, or
/// every reply through it in that window fails to redirect
/// (`pass_egress_not_attached`).
#[test]
fn a_restarting_lbd_takes_over_the_reply_path_only_once_its_egress_map_is_filled() {
    let rig = Rig::build();
    let (b0, c0, c0_mac) = (rig.b0, rig.c0, rig.c0_mac);
    let root = std::path::Path::new("/sys/fs/bpf").join(lb_tests::netns::unique_prefix());
    lb_tests::netns::run_in(&rig.ns, move || {
        let config = config_of(STATELESS);
        let pins = PinsGuard(lb_userspace::kernel::pins::PinDir::new(&root));
        pins.0.prepare().unwrap();
        let mut running = KernelDataplane::load(&config, Some(&pins.0)).unwrap();
        running.add_egress(c0).unwrap();
        running.add_egress(b0).unwrap();
        let mut c = Controller::new(running, config.cluster.ring_size);
        c.apply(&config).unwrap();

        let mut next = KernelDataplane::load(&config, Some(&pins.0)).unwrap();
        assert!(next.adopted());
        let [syn_ack, data] = replies(41_100);
        let r = run_counted(
            c.dataplane(),
            b0,
            &syn_ack.bytes(),
            Reason::RedirectInterface,
        );
        assert_eq!(
            r.action, XDP_REDIRECT,
            "the running lbd's reply path serves"
        );
        assert_eq!(r.output, as_from_vip(&syn_ack, c0_mac).bytes());

        // Attached, the next lbd's reply path takes over, its egress map filled first.
        let nics = ["c0".to_string(), "b0".to_string()];
        next.attach(&nics, &[], XdpAttachMode::Native, Some(&pins.0))
            .unwrap();
        let r = run_counted(c.dataplane(), b0, &data.bytes(), Reason::RedirectInterface);
        assert_eq!(r.action, XDP_REDIRECT, "the next lbd's reply path serves");
        assert_eq!(r.output, as_from_vip(&data, c0_mac).bytes());
        next.detach_all();
    });
}

/// A service run by several nodes (`stateless_return`) records the flow on the client's
/// ACK even though this node saw no SYN-ACK (ECMP sent it back through another node),
/// counting the ACK as unproven all the same: otherwise most of a tier's connections
/// would hold no entry, and the next table change would move them.
#[test]
fn in_a_tier_the_ack_records_the_flow_without_the_syn_ack() {
    let rig = Rig::build();
    let c0 = rig.c0;
    rig.with_dataplane(STATELESS, |c| {
        let web = service_id(c, "web");
        let dp = c.dataplane();
        let syn = client_syn(47_500);
        let backend = to_backend(dp, c0, &syn);
        let id = backend_id(c, "web", backend);
        assert_eq!(to_backend(dp, c0, &ack_of(&syn)), backend);
        assert_eq!(
            (dp.flows.keys().count(), dp.return_flows.keys().count()),
            (1, 1)
        );
        let entry = dp.flows.get(&syn.flow_key(), 0).unwrap();
        assert_eq!(entry.backend, id);
        assert_ne!(entry.state & FLOW_F_ESTABLISHED, 0);
        let s = dp.service_counters(web).unwrap();
        assert_eq!(
            (s.unproven_acks, s.new_flows, s.stateless_forwards),
            (1, 1, 0)
        );
        assert_eq!(dp.active_flows(id).unwrap(), 1);
    });
}

/// Sends `frame` from the client; it must be redirected. Returns the backend it went to.
fn to_backend(dp: &KernelDataplane, c0: u32, frame: &Frame) -> Ipv4Addr {
    let r = run_once(dp.program(), c0, &frame.bytes());
    assert_eq!(r.action, XDP_REDIRECT, "{frame:?}");
    lb_tests::frame::dst_ip(&r.output)
}

/// Like [`to_backend`], with the backend's port.
fn to_backend_at(dp: &KernelDataplane, c0: u32, frame: &Frame) -> (Ipv4Addr, u16) {
    let r = run_once(dp.program(), c0, &frame.bytes());
    assert_eq!(r.action, XDP_REDIRECT, "{frame:?}");
    (
        lb_tests::frame::dst_ip(&r.output),
        lb_tests::frame::dst_port(&r.output),
    )
}

/// In a tier a client reusing the tuple of a closed flow gets its new connection's entry
/// from its ACK although this node saw no SYN-ACK, as the first connection got its own:
/// with the old backend out of the table, the new SYN goes elsewhere, and so does the
/// ACK, replacing the closed entry (outside a tier it would follow the old entry, see
/// `spoofed_handshake`).
#[test]
fn in_a_tier_a_reused_tuple_replaces_its_closed_entry_without_the_syn_ack() {
    let rig = Rig::build();
    let c0 = rig.c0;
    rig.with_dataplane(STATELESS, |c| {
        let syn = client_syn(47_600);
        let first = to_backend(c.dataplane(), c0, &syn);
        to_backend(c.dataplane(), c0, &ack_of(&syn));
        to_backend(
            c.dataplane(),
            c0,
            &Frame {
                flags: 0x14, // RST|ACK
                ..ack_of(&syn)
            },
        );
        let closed = c.dataplane().flows.get(&syn.flow_key(), 0).unwrap();
        assert_ne!(closed.state & lb_common::flow::FLOW_F_CLOSED, 0);
        assert_ne!(closed.state & lb_common::flow::FLOW_F_TIER, 0);

        // The old backend takes no new flows (as when it drains).
        let overlay = lb_userspace::model::plan::Overlay {
            ring_weights: [(
                lb_userspace::model::plan::BackendRef {
                    service: "web".into(),
                    address: first.into(),
                    port: 8080,
                },
                0,
            )]
            .into(),
            ..Default::default()
        };
        c.apply_with(&config_of(STATELESS), &overlay).unwrap();
        let second = to_backend(c.dataplane(), c0, &syn);
        assert_ne!(second, first, "the table sends the new SYN elsewhere");
        assert_eq!(to_backend(c.dataplane(), c0, &ack_of(&syn)), second);
        let entry = c.dataplane().flows.get(&syn.flow_key(), 0).unwrap();
        assert_eq!(entry.backend, backend_id(c, "web", second));
        assert_eq!(entry.state & lb_common::flow::FLOW_F_CLOSED, 0);
    });
}

/// The ACK that records a tier's flow without the proof spends its handshake's SYN-cache
/// slot, as a proven one does: otherwise, once the flow's backend drains (or the flow
/// idles), each of its packets would find its own handshake there, take itself for a new
/// connection on the tuple, and be recorded and counted again.
#[test]
fn in_a_tier_the_ack_that_records_the_flow_spends_its_slot() {
    let rig = Rig::build();
    let c0 = rig.c0;
    rig.with_dataplane(STATELESS, |c| {
        let syn = client_syn(47_700);
        let backend = to_backend(c.dataplane(), c0, &syn);
        to_backend(c.dataplane(), c0, &ack_of(&syn));
        let recorded = c.dataplane().flows.get(&syn.flow_key(), 0).unwrap();

        let overlay = lb_userspace::model::plan::Overlay {
            ring_weights: [(
                lb_userspace::model::plan::BackendRef {
                    service: "web".into(),
                    address: backend.into(),
                    port: 8080,
                },
                0,
            )]
            .into(),
            ..Default::default()
        };
        c.apply_with(&config_of(STATELESS), &overlay).unwrap();
        let data = Frame {
            payload: b"more".to_vec(),
            flags: PSH_ACK,
            ..ack_of(&syn)
        };
        for _ in 0..3 {
            assert_eq!(to_backend(c.dataplane(), c0, &data), backend, "it stays");
        }
        let entry = c.dataplane().flows.get(&syn.flow_key(), 0).unwrap();
        assert_eq!(
            (entry.backend, entry.state),
            (recorded.backend, recorded.state)
        );
        let s = web(c);
        assert_eq!((s.new_flows, s.unproven_acks), (1, 1), "recorded once");
        let id = backend_id(c, "web", backend);
        assert_eq!(c.dataplane().active_flows(id).unwrap(), 1);
    });
}

/// In a tier a node sees the client's FIN but rarely the backend's (its replies return
/// through any node), so a finished connection's entry stays half-closed, not closed. A
/// client that reuses the tuple soon after (its kernel frees the port at once when the
/// backend closed first) opens a new connection that the table, changed meanwhile, places
/// on another backend: its ACK must replace the half-closed entry and follow its SYN,
/// not the old entry to a backend that never saw that SYN.
#[test]
fn in_a_tier_a_tuple_reused_after_the_clients_fin_follows_its_new_syn() {
    let rig = Rig::build();
    let c0 = rig.c0;
    let grown = STATELESS.replace(
        "      - { address: 10.1.0.13, port: 8080, zone: az-c }\n",
        "      - { address: 10.1.0.13, port: 8080, zone: az-c }\n      - { address: 10.1.0.11, port: 8081, zone: az-a }\n",
    );
    assert_ne!(grown, STATELESS);
    rig.with_dataplane(STATELESS, |c| {
        let sports = 47_800..47_840;
        let mut first = BTreeMap::new();
        for sport in sports.clone() {
            let syn = client_syn(sport);
            first.insert(sport, to_backend_at(c.dataplane(), c0, &syn));
            to_backend(c.dataplane(), c0, &ack_of(&syn));
            to_backend(
                c.dataplane(),
                c0,
                &Frame {
                    flags: 0x11, // FIN|ACK
                    ..ack_of(&syn)
                },
            );
            let entry = c.dataplane().flows.get(&syn.flow_key(), 0).unwrap();
            assert_ne!(entry.state & lb_common::flow::FLOW_F_FIN_CLIENT, 0);
            assert_eq!(entry.state & lb_common::flow::FLOW_F_CLOSED, 0);
        }
        c.apply(&config_of(&grown)).unwrap();
        let added = (BACKEND, 8081);
        let (sport, old) = sports
            .clone()
            .map(|sport| (sport, first[&sport]))
            .find(|&(sport, old)| {
                let now = to_backend_at(c.dataplane(), c0, &client_syn(sport));
                assert!(now == old || now == added, "{sport}: {old:?} -> {now:?}");
                now == added
            })
            .expect("the added backend takes some of 40 tuples' ring slots");
        let syn = client_syn(sport);
        assert_eq!(
            to_backend_at(c.dataplane(), c0, &ack_of(&syn)),
            added,
            "the new connection's ACK follows its SYN, not the entry to {old:?}"
        );
        let entry = c.dataplane().flows.get(&syn.flow_key(), 0).unwrap();
        let added_id = c
            .backend_id(&lb_userspace::model::plan::BackendRef {
                service: "web".into(),
                address: added.0.into(),
                port: added.1,
            })
            .unwrap();
        assert_eq!(entry.backend, added_id);
        assert_eq!(entry.state & lb_common::flow::FLOW_F_FIN_CLIENT, 0);
    });
}
