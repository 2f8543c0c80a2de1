//! SYNs to hash-placed services record no flow, only a SYN-cache slot (see
//! `lb_common::syn_cache`): the handshake's answer is translated through that slot,
//! the client's next packet records the flow on the SYN's backend, and replies that answer
//! no SYN of ours pass untouched. Real object, BPF_PROG_TEST_RUN (see
//! `lb_tests::packet_rig`).
use std::net::Ipv4Addr;

use aya::maps::{Array, Map, MapData};
use lb_common::{
    flow::{FlowTarget, FLOW_F_CLOSED, FLOW_F_ESTABLISHED},
    limits::syn_cache_sets,
    syn_cache::{syn_handshake_hash_of_flow, syn_set, syn_tag_for, SynEntry, SynSet},
};
use lb_tests::{
    frame::{checksums_valid, dst_ip, source, Frame, ACK, RST, SYN, SYN_ACK},
    packet_exchange::answer,
    packet_rig::*,
};
use lb_userspace::{
    dataplane::Dataplane,
    kernel::KernelDataplane,
    model::plan::{BackendRef, Overlay},
};

/// Sends the client's ACK of the handshake `syn`, whose SYN-ACK passed, which must reach
/// `backend`, and returns the flow entry it recorded.
fn ack_records(dp: &KernelDataplane, c0: u32, syn: &Frame, backend: Ipv4Addr) -> FlowTarget {
    let r = run_once(dp.program(), c0, &ack_of(syn).bytes());
    assert_eq!((r.action, dst_ip(&r.output)), (XDP_REDIRECT, backend));
    dp.flows
        .get(&syn.flow_key(), 0)
        .expect("the ACK records the flow")
}

/// The rig's hash seed and SYN-cache set mask.
fn seed_and_set_mask() -> (u32, u32) {
    let config = lb_userspace::model::config::parse(CONFIG).unwrap();
    (
        config.cluster.hash_seed,
        syn_cache_sets(config.limits.flow_table_size) - 1,
    )
}

/// The SYN-cache set of the handshake `syn` opens.
fn set_of(syn: &Frame) -> u32 {
    let (seed, mask) = seed_and_set_mask();
    let key = syn.flow_key();
    syn_set(seed, key.src_addr, key.src_port, mask)
}

/// `n` other client ports whose handshakes share the SYN-cache set of `syn`'s.
fn ports_sharing_the_set_of(syn: &Frame, n: usize) -> Vec<u16> {
    let (seed, mask) = seed_and_set_mask();
    let key = syn.flow_key();
    let home = set_of(syn);
    let ports: Vec<u16> = (1024..=u16::MAX)
        .filter(|p| *p != syn.sport)
        .filter(|p| syn_set(seed, key.src_addr, p.to_be(), mask) == home)
        .take(n)
        .collect();
    assert_eq!(ports.len(), n, "ports of the client sharing the set");
    ports
}

#[test]
fn a_handshake_is_recorded_by_the_clients_ack_not_by_its_syn() {
    let rig = Rig::build();
    let (c0, b0, c0_mac) = (rig.c0, rig.b0, rig.c0_mac);
    rig.with_dataplane(CONFIG, |c| {
        let syn = client_syn(51000);
        let first = run_once(c.dataplane().program(), c0, &syn.bytes());
        assert_eq!(first.action, XDP_REDIRECT);
        let backend = dst_ip(&first.output);
        let id = backend_id(c, "web", backend);
        let dp = c.dataplane();
        assert!(
            dp.flows.get(&syn.flow_key(), 0).is_err(),
            "the SYN records nothing"
        );
        assert!(dp.return_flows.get(&syn.reply_key(backend), 0).is_err());

        // The SYN-ACK finds no return entry; its SYN-cache slot puts the VIP back, byte for
        // byte.
        let syn_ack = answer(&syn, backend, 8080, SYN_ACK);
        let r = run_once(dp.program(), b0, &syn_ack.bytes());
        assert_eq!(r.action, XDP_REDIRECT);
        let expected = as_from_vip(&syn_ack, c0_mac);
        assert_eq!(r.output, expected.bytes(), "every byte of the SYN-ACK");
        assert!(checksums_valid(&r.output));
        assert!(
            dp.return_flows.get(&syn.reply_key(backend), 0).is_err(),
            "a SYN-ACK records nothing either"
        );
        let signals = dp.backend_signals(id).unwrap();
        assert_eq!((signals.syns, signals.syn_acks), (1, 1));

        // The client's ACK lands on the SYN's backend and records both directions.
        let flow = ack_records(dp, c0, &syn, backend);
        assert_eq!(flow.backend, id);
        assert_ne!(flow.state & FLOW_F_ESTABLISHED, 0);
        assert_eq!(dp.active_flows(id).unwrap(), 1);
        let nat = dp.return_flows.get(&syn.reply_key(backend), 0).unwrap();
        assert_eq!(
            (nat.vip, nat.backend),
            (u32::from_ne_bytes(VIP.octets()), id)
        );
        let counters = dp.service_counters(0).unwrap();
        assert_eq!((counters.new_flows, counters.packets_to_backend), (1, 2));
        assert_eq!(counters.packets_to_client, 1);
    });
}

#[test]
fn replies_that_answer_no_syn_of_ours_pass_untouched() {
    let rig = Rig::build();
    let (c0, b0) = (rig.c0, rig.b0);
    rig.with_dataplane(CONFIG, |c| {
        let dp = c.dataplane();
        let syn = client_syn(51001);
        let backend = dst_ip(&run_once(dp.program(), c0, &syn.bytes()).output);
        // A health probe from this host, or a client reaching the backend directly
        // through this gateway: the backend's answers are theirs, not the VIP's.
        let other = client_syn(51999);
        for flags in [SYN_ACK, ACK, RST] {
            let reply = answer(&other, backend, 8080, flags).bytes();
            let r = run_once(dp.program(), b0, &reply);
            assert_eq!(
                (r.action, &r.output),
                (XDP_PASS, &reply),
                "flags {flags:#x}"
            );
        }
        // A reply to another port of the same client whose handshake would share the
        // set: a way names the backend, but the handshake of port 51001.
        let sharing = ports_sharing_the_set_of(&syn, 1)[0];
        let reply = answer(&client_syn(sharing), backend, 8080, SYN_ACK).bytes();
        let r = run_once(dp.program(), b0, &reply);
        assert_eq!(
            (r.action, &r.output),
            (XDP_PASS, &reply),
            "port {sharing} shares the set of port 51001's handshake"
        );
        // The backend refusing our SYN (port closed) is ours: the client gets the RST
        // from the VIP at once instead of waiting out its SYN retries.
        let refused = answer(&syn, backend, 8080, RST).bytes();
        let r = run_once(dp.program(), b0, &refused);
        assert_eq!(r.action, XDP_REDIRECT, "an RST refusing our SYN is ours");
        assert_eq!(source(&r.output), (VIP, 80));
        assert!(checksums_valid(&r.output));
        let id = backend_id(c, "web", backend);
        assert_eq!(dp.backend_signals(id).unwrap().resets, 1);
    });
}

/// Two handshakes in flight whose SYN-cache set is the same both keep their slot: each
/// SYN-ACK is translated and each ACK records its flow on its own SYN's backend. A third
/// SYN into the full set takes one of the two slots; the handshake that lost it has its
/// SYN-ACK passed, and the other is still translated.
#[test]
fn handshakes_sharing_a_set_keep_their_slots_until_a_third_comes() {
    let rig = Rig::build();
    let (c0, b0) = (rig.c0, rig.b0);
    rig.with_dataplane(CONFIG, |c| {
        let dp = c.dataplane();
        let first = client_syn(52500);
        let ports = ports_sharing_the_set_of(&first, 2);
        let (second, third) = (client_syn(ports[0]), client_syn(ports[1]));
        let backend_of = |syn: &Frame| {
            let r = run_once(dp.program(), c0, &syn.bytes());
            assert_eq!(r.action, XDP_REDIRECT);
            dst_ip(&r.output)
        };
        let translated = |syn: &Frame, backend: Ipv4Addr| {
            let r = run_once(
                dp.program(),
                b0,
                &answer(syn, backend, 8080, SYN_ACK).bytes(),
            );
            r.action == XDP_REDIRECT && source(&r.output) == (VIP, 80)
        };
        let (b1, b2) = (backend_of(&first), backend_of(&second));
        assert!(translated(&first, b1), "the first handshake keeps its slot");
        assert!(translated(&second, b2), "the second has the other way");
        assert_eq!(
            ack_records(dp, c0, &first, b1).backend,
            backend_id(c, "web", b1)
        );
        assert_eq!(
            ack_records(dp, c0, &second, b2).backend,
            backend_id(c, "web", b2)
        );

        // Both slots were spent by the ACKs: two new handshakes in the set fill it, then
        // a third SYN comes into the full set.
        let more = ports_sharing_the_set_of(&first, 4);
        let (a, b) = (client_syn(more[2]), client_syn(more[3]));
        let (ba, bb) = (backend_of(&a), backend_of(&b));
        let b3 = backend_of(&third);
        assert!(translated(&third, b3), "the third SYN took a way");
        let kept = [translated(&a, ba), translated(&b, bb)];
        assert_eq!(
            kept.iter().filter(|k| **k).count(),
            1,
            "one of the two earlier handshakes lost its slot: {kept:?}"
        );
    });
}

/// A SYN-cache slot that names the packet's handshake but a backend of another service
/// (what a tag collision could leave) is not followed: a retransmitted SYN and the ACK
/// are placed by their own service's table, and the ACK, vouched for by no slot of
/// ours, records no flow (the backend's next answer does, see `stateless_miss.rs`).
#[test]
fn a_slot_naming_another_services_backend_is_not_followed() {
    let rig = Rig::build();
    let c0 = rig.c0;
    rig.with_dataplane(CONFIG, |c| {
        let dp = c.dataplane();
        let syn = client_syn(52600);
        let r = run_once(dp.program(), c0, &syn.bytes());
        assert_eq!(r.action, XDP_REDIRECT);
        let backend = dst_ip(&r.output);
        let foreign = backend_id(c, "same-nic", "10.10.0.77".parse().unwrap());
        let mut cache: Array<MapData, SynSet> =
            Array::try_from(Map::Array(map_of(dp.program(), "SYN_CACHE"))).unwrap();
        let (seed, _) = seed_and_set_mask();
        let handshake = syn_handshake_hash_of_flow(seed, &syn.flow_key());
        let forge = |cache: &mut Array<MapData, SynSet>| {
            let at = set_of(&syn);
            let mut set = cache.get(&at, 0).unwrap();
            let way = set
                .ways
                .iter()
                .position(|w| w.entry.is_of(handshake))
                .expect("the SYN's slot");
            let service_at = set.ways[way].entry.service_at();
            set.ways[way].entry =
                SynEntry::new(syn_tag_for(handshake, foreign), service_at, foreign);
            cache.set(at, set, 0).unwrap();
        };
        forge(&mut cache);
        let r = run_once(dp.program(), c0, &syn.bytes());
        assert_eq!(
            (r.action, dst_ip(&r.output)),
            (XDP_REDIRECT, backend),
            "the retransmitted SYN"
        );
        forge(&mut cache);
        let ack = Frame {
            flags: ACK,
            ..syn.clone()
        };
        let r = run_once(dp.program(), c0, &ack.bytes());
        assert_eq!((r.action, dst_ip(&r.output)), (XDP_REDIRECT, backend));
        assert!(
            dp.flows.get(&syn.flow_key(), 0).is_err(),
            "nothing recorded"
        );
        let web = dp.service_counters(0).unwrap();
        assert_eq!((web.new_flows, web.stateless_forwards), (0, 1));
    });
}

/// The table changes between a SYN and the client's ACK (the SYN's backend turns
/// unhealthy): the ACK still records the flow on the SYN's backend, which holds the
/// handshake, while a new SYN goes by the new table.
#[test]
fn a_handshake_stays_on_its_backend_across_a_table_change() {
    let rig = Rig::build();
    let (c0, b0) = (rig.c0, rig.b0);
    rig.with_dataplane(CONFIG, |c| {
        let config = lb_userspace::model::config::parse(CONFIG).unwrap();
        let syn = client_syn(51004);
        let backend = dst_ip(&run_once(c.dataplane().program(), c0, &syn.bytes()).output);
        let overlay = Overlay {
            ring_weights: [(
                BackendRef {
                    service: "web".into(),
                    address: backend.into(),
                    port: 8080,
                },
                0,
            )]
            .into(),
            ..Overlay::default()
        };
        c.apply_with(&config, &overlay).unwrap();
        let dp = c.dataplane();
        syn_ack_passes(dp, b0, &syn, backend);
        let flow = ack_records(dp, c0, &syn, backend);
        assert_eq!(flow.backend, backend_id(c, "web", backend));
        // Its backend takes no new flows now: a SYN on another tuple goes elsewhere.
        for sport in 52000..52050 {
            let r = run_once(dp.program(), c0, &client_syn(sport).bytes());
            assert_ne!(dst_ip(&r.output), backend, "port {sport}");
        }
    });
}

/// Clients reuse the tuples of recorded flows after the table moved those tuples to other
/// backends (`10.1.0.11` weighs 3 now; every backend still takes new flows). The SYN looks
/// up no flow and goes by the table; its ACK finds the slot naming its flow and replaces
/// the old entry if that one is closed or idle, but follows a live one (a duplicate SYN of
/// a running connection moves nothing), and an idle flow without a new SYN stays put.
#[test]
fn a_reused_tuple_replaces_a_closed_or_idle_entry_but_not_a_live_one() {
    let rig = Rig::build();
    let (c0, b0) = (rig.c0, rig.b0);
    rig.with_dataplane(CONFIG, |c| {
        let config = lb_userspace::model::config::parse(CONFIG).unwrap();
        let mut recorded = Vec::new();
        for sport in 53000..53400 {
            let syn = client_syn(sport);
            let r = run_once(c.dataplane().program(), c0, &syn.bytes());
            let backend = dst_ip(&r.output);
            syn_ack_passes(c.dataplane(), b0, &syn, backend);
            ack_records(c.dataplane(), c0, &syn, backend);
            recorded.push((syn, backend));
        }
        let heavier = BackendRef {
            service: "web".into(),
            address: Ipv4Addr::new(10, 1, 0, 11).into(),
            port: 8080,
        };
        let overlay = Overlay {
            ring_weights: [(heavier, 3000)].into(),
            ..Overlay::default()
        };
        c.apply_with(&config, &overlay).unwrap();
        let id_of: std::collections::HashMap<Ipv4Addr, u32> = (11..=13)
            .map(|last| Ipv4Addr::new(10, 1, 0, last))
            .map(|addr| (addr, backend_id(c, "web", addr)))
            .collect();
        let dp = c.dataplane_mut();
        let send =
            |dp: &KernelDataplane, syn: &Frame, flags: u8| from_client(dp, c0, syn.sport, flags);
        // Four groups by port: closed by the client's RST; idle; live (seen at the new
        // clock); idle without a new SYN.
        let group = |syn: &Frame| syn.sport % 4;
        for (syn, _) in recorded.iter().filter(|(syn, _)| group(syn) == 0) {
            send(dp, syn, RST);
        }
        dp.set_clock(100).unwrap();
        for (syn, _) in recorded.iter().filter(|(syn, _)| group(syn) == 2) {
            send(dp, syn, ACK);
        }
        let mut moved = [0; 4];
        for (syn, old) in &recorded {
            let g = group(syn) as usize;
            if g == 3 {
                assert_eq!(send(dp, syn, ACK), *old, "idle, no new SYN: {syn:?}");
                continue;
            }
            let now = send(dp, syn, SYN);
            if now == *old {
                continue;
            }
            moved[g] += 1;
            syn_ack_passes(dp, b0, syn, now);
            let r = run_once(dp.program(), c0, &ack_of(syn).bytes());
            assert_eq!(r.action, XDP_REDIRECT, "{syn:?}");
            let ack_to = dst_ip(&r.output);
            let entry = dp.flows.get(&syn.flow_key(), 0).unwrap();
            if g == 2 {
                assert_eq!(ack_to, *old, "a live entry stands: {syn:?}");
            } else {
                assert_eq!(ack_to, now, "the new connection's ACK: {syn:?}");
                assert_eq!(entry.backend, id_of[&now]);
                assert_eq!(entry.state & FLOW_F_CLOSED, 0, "{syn:?}");
            }
        }
        assert!(
            moved[..3].iter().all(|&n| n > 0),
            "each group has tuples the new table moves: {moved:?}"
        );
    });
}

/// A SYN flood five times the flow table's size: to `web` it records nothing, so the
/// established connections keep their entries; the same flood to the round-robin service
/// (whose SYNs are recorded) fills the LRU table, which then evicts its coldest entries,
/// established ones among them.
#[test]
fn a_syn_flood_to_a_hash_service_evicts_no_established_flow() {
    let rig = Rig::build();
    let (c0, b0) = (rig.c0, rig.b0);
    rig.with_dataplane(CONFIG, |c| {
        let dp = c.dataplane();
        let held: Vec<Frame> = (54000..54020).map(client_syn).collect();
        for syn in &held {
            let backend = dst_ip(&run_once(dp.program(), c0, &syn.bytes()).output);
            syn_ack_passes(dp, b0, syn, backend);
            run_once(dp.program(), c0, &ack_of(syn).bytes());
        }
        let entries = |dp: &KernelDataplane| dp.flows.keys().filter_map(Result::ok).count();
        assert_eq!(entries(dp), held.len());
        // The rig's table holds 4,096 flows per direction.
        let flood = |vip: Ipv4Addr| {
            for i in 0..20_000u32 {
                let syn = Frame {
                    src: Ipv4Addr::from(0xc612_0000 + i),
                    dst: vip,
                    sport: 1024 + (i % 60_000) as u16,
                    ..client_syn(0)
                };
                let r = run_once(dp.program(), c0, &syn.bytes());
                assert_eq!(r.action, XDP_REDIRECT, "flood SYN #{i}");
            }
        };
        flood(VIP);
        assert_eq!(entries(dp), held.len(), "the flood recorded nothing");
        for syn in &held {
            assert!(dp.flows.get(&syn.flow_key(), 0).is_ok(), "{syn:?} kept");
        }
        // Which entries the LRU evicts for the recorded flood depends on its lists
        // (per-CPU free lists, active and inactive ones), so the contrast checked is
        // what exposes the established flows: the flood fills the table.
        flood(Ipv4Addr::new(10, 0, 0, 110));
        let filled = entries(dp);
        assert!(
            filled > 4096 * 3 / 4,
            "a flood of recorded SYNs fills the table ({filled} of 4,096 entries)"
        );
    });
}

/// Two Maglev services share one backend address:port: each handshake's SYN-ACK comes
/// back from its own VIP.
#[test]
fn a_backend_shared_by_two_services_answers_each_from_its_own_vip() {
    const SHARED: &str = r#"
node: { zone: az-a }
interfaces: [c0, b0]
cluster: { ring_size: 1009, hash_seed: 42 }
limits: { flow_table_size: 4096, max_services: 4, max_backends: 16 }
services:
  - { name: a, vip: 10.0.0.100, port: 80, backends: [{ address: 10.1.0.11, port: 8080, zone: az-a }] }
  - { name: b, vip: 10.0.0.101, port: 443, backends: [{ address: 10.1.0.11, port: 8080, zone: az-a }] }
"#;
    let rig = Rig::build();
    let (c0, b0) = (rig.c0, rig.b0);
    rig.with_dataplane(SHARED, |c| {
        let dp = c.dataplane();
        let backend = Ipv4Addr::new(10, 1, 0, 11);
        for (sport, vip, vport) in [
            (51002, Ipv4Addr::new(10, 0, 0, 100), 80),
            (51003, Ipv4Addr::new(10, 0, 0, 101), 443),
        ] {
            let syn = Frame {
                dst: vip,
                dport: vport,
                ..client_syn(sport)
            };
            let r = run_once(dp.program(), c0, &syn.bytes());
            assert_eq!((r.action, dst_ip(&r.output)), (XDP_REDIRECT, backend));
            assert!(dp.flows.get(&syn.flow_key(), 0).is_err());
            let r = run_once(
                dp.program(),
                b0,
                &answer(&syn, backend, 8080, SYN_ACK).bytes(),
            );
            assert_eq!(r.action, XDP_REDIRECT);
            assert_eq!(source(&r.output), (vip, vport));
        }
    });
}
