//! IPv6 SYNs to hash-placed services record no flow, only a SYN-cache slot (see
//! `lb_common::syn_cache6`, `lb-ebpf/src/v6_syn.rs`), as IPv4's do: a flood of spoofed
//! SYNs leaves the IPv6 flow tables empty and the SYN cache holding exactly the slots a
//! model of its two-way sets predicts; a real handshake ends with one entry each way;
//! a retransmitted SYN keeps its backend across a table change; an ACK that proves no
//! SYN-ACK records nothing; `round_robin` still records its flows on the SYN. Real object,
//! BPF_PROG_TEST_RUN (see `lb_tests::packet_rig`).
use std::{collections::HashMap, net::Ipv6Addr};

use lb_common::{
    counters::Reason,
    flow::{FLOW_F_COUNTED, FLOW_F_ESTABLISHED},
    ipv6::{addr6_wire, FlowKey6},
    limits::syn_cache_sets,
    syn_cache::{syn_tag_for, syn_way_to_write, SynEntry, SYN_CACHE_WAYS},
    syn_cache6::{syn_handshake_hash6_of_flow, syn_set6},
};
use lb_tests::{
    frame::{ACK, SYN, SYN_ACK},
    frame6::Frame6,
    fuzz_oracle::Rng,
    packet_exchange::run_counted,
    packet_rig::*,
    rig_config_with,
};
use lb_userspace::{
    dataplane::{Dataplane, Lookups},
    kernel::KernelDataplane,
    model::plan::{BackendRef, Overlay},
};

use super::ipv6::{
    as_from_vip6, as_to_backend6, backend_id6, client_from, expect6, table_backend6, V6_CONFIG,
};

/// Backend `addr`'s SYN-ACK to `syn`, as it arrives on `b0`.
fn syn_ack(syn: &Frame6, addr: Ipv6Addr) -> Frame6 {
    Frame6 {
        src_mac: backend_mac(addr.octets()[15]),
        src: addr,
        dst: syn.src,
        sport: 8080,
        dport: syn.sport,
        flags: SYN_ACK,
        seq: BACKEND_ISN,
        ack: syn.seq.wrapping_add(1),
        ..Frame6::default()
    }
}

/// The client's ACK of that SYN-ACK.
fn ack(syn: &Frame6) -> Frame6 {
    Frame6 {
        flags: ACK,
        seq: syn.seq.wrapping_add(1),
        ack: BACKEND_ISN.wrapping_add(1),
        ..syn.clone()
    }
}

fn entries(dp: &KernelDataplane) -> (usize, usize) {
    (
        dp.flows6.keys().filter_map(Result::ok).count(),
        dp.return_flows6.keys().filter_map(Result::ok).count(),
    )
}

/// Where a redirected frame went: its destination address.
fn sent_to(r: &RunResult) -> Ipv6Addr {
    assert_eq!(r.action, XDP_REDIRECT);
    Ipv6Addr::from(<[u8; 16]>::try_from(&r.output[14 + 24..14 + 40]).unwrap())
}

#[test]
fn a_thousand_spoofed_ipv6_syns_record_no_flow_and_leave_exactly_their_slots() {
    let rig = Rig::build();
    let (c0, b0_mac) = (rig.c0, rig.b0_mac);
    rig.with_dataplane(V6_CONFIG, |c| {
        let service = service_id(c, "web6");
        let mask = syn_cache_sets(4096) - 1;
        // The model: what each SYN writes into its set, as `syn_way_to_write` picks.
        let mut model: HashMap<u32, [SynEntry; SYN_CACHE_WAYS]> = HashMap::new();
        let mut rng = Rng(0x5f6e_0001);
        for _ in 0..1_000 {
            let low = rng.below(u64::from(u32::MAX)) as u32;
            let src = Ipv6Addr::from(
                (u128::from(CLIENT6) & !0xffff_ffff_ffff_ffffu128) | u128::from(low) << 8 | 7,
            );
            let syn = client_from(src, 1024 + rng.below(60_000) as u16, SYN);
            let backend = table_backend6(c, "web6", &syn.flow_key());
            let r = run_counted(c.dataplane(), c0, &syn.bytes(), Reason::RedirectInterface);
            expect6(
                &r,
                XDP_REDIRECT,
                &as_to_backend6(&syn, backend, b0_mac),
                "SYN",
            );
            let key: FlowKey6 = syn.flow_key();
            let h = syn_handshake_hash6_of_flow(HASH_SEED, &key);
            let set = syn_set6(HASH_SEED, &key.src_addr, key.src_port, mask);
            let ways = model.entry(set).or_default();
            let id = backend_id6(c, "web6", backend);
            ways[syn_way_to_write(ways, h)] = SynEntry::new(syn_tag_for(h, id), service, id);
        }
        let dp = c.dataplane();
        assert_eq!(entries(dp), (0, 0), "FLOWS6 and RETURN_FLOWS6 stay empty");
        let s = dp.service_counters(service).unwrap();
        assert_eq!((s.packets_to_backend, s.new_flows), (1_000, 0));
        let mut slots = 0;
        for set in 0..=mask {
            let got = dp.syn_set(set).unwrap().expect("a set of the cache");
            let want = model.get(&set).copied().unwrap_or_default();
            assert_eq!(got.ways.map(|w| w.entry), want, "set {set}");
            assert!(got.ways.iter().all(|w| w.ack == 0), "set {set}: no proof");
            slots += want.iter().filter(|e| e.0 != 0).count();
        }
        // Two-way sets: a SYN overwrote another's slot only where three shared a set.
        assert!(slots > 900 && slots <= 1_000, "{slots} slots");
    });
}

#[test]
fn a_real_ipv6_handshake_records_exactly_one_entry_each_way() {
    let rig = Rig::build();
    let (c0, b0, c0_mac, b0_mac) = (rig.c0, rig.b0, rig.c0_mac, rig.b0_mac);
    rig.with_dataplane(V6_CONFIG, |c| {
        let syn = client_from(CLIENT6, 43000, SYN);
        let backend = table_backend6(c, "web6", &syn.flow_key());
        let id = backend_id6(c, "web6", backend);
        let dp = c.dataplane();
        let r = run_counted(dp, c0, &syn.bytes(), Reason::RedirectInterface);
        expect6(
            &r,
            XDP_REDIRECT,
            &as_to_backend6(&syn, backend, b0_mac),
            "SYN",
        );
        assert_eq!(entries(dp), (0, 0));
        let answer = syn_ack(&syn, backend);
        let r = run_counted(dp, b0, &answer.bytes(), Reason::RedirectInterface);
        expect6(&r, XDP_REDIRECT, &as_from_vip6(&answer, c0_mac), "SYN-ACK");
        assert_eq!(entries(dp), (0, 0), "the SYN-ACK records nothing");
        let ack = ack(&syn);
        let r = run_counted(dp, c0, &ack.bytes(), Reason::RedirectInterface);
        expect6(
            &r,
            XDP_REDIRECT,
            &as_to_backend6(&ack, backend, b0_mac),
            "ACK",
        );
        assert_eq!(entries(dp), (1, 1));
        let flow = dp.flows6.get(&syn.flow_key(), 0).unwrap();
        assert_eq!(
            (flow.backend, flow.state),
            (id, FLOW_F_COUNTED | FLOW_F_ESTABLISHED)
        );
        assert_eq!(dp.active_flows(id).unwrap(), 1);
        let s = dp.service_counters(service_id(c, "web6")).unwrap();
        assert_eq!((s.new_flows, s.unproven_acks), (1, 0));
        // The slot is spent: a second copy of the ACK follows the entry.
        let r = run_counted(dp, c0, &ack.bytes(), Reason::RedirectInterface);
        expect6(
            &r,
            XDP_REDIRECT,
            &as_to_backend6(&ack, backend, b0_mac),
            "ACK again",
        );
        assert_eq!(entries(dp), (1, 1));
        assert_eq!(
            dp.service_counters(service_id(c, "web6"))
                .unwrap()
                .new_flows,
            1
        );
    });
}

#[test]
fn an_ipv6_ack_that_proves_no_syn_ack_records_nothing_and_follows_the_syns_backend() {
    let rig = Rig::build();
    let (c0, b0_mac) = (rig.c0, rig.b0_mac);
    rig.with_dataplane(V6_CONFIG, |c| {
        let syn = client_from(CLIENT6, 43001, SYN);
        let backend = table_backend6(c, "web6", &syn.flow_key());
        let id = backend_id6(c, "web6", backend);
        let dp = c.dataplane();
        run_counted(dp, c0, &syn.bytes(), Reason::RedirectInterface);
        // A blind sender's ACK: it never saw the SYN-ACK (none passed).
        let blind = Frame6 {
            ack: 0x1234_5678,
            ..ack(&syn)
        };
        let r = run_counted(dp, c0, &blind.bytes(), Reason::RedirectInterface);
        expect6(
            &r,
            XDP_REDIRECT,
            &as_to_backend6(&blind, backend, b0_mac),
            "ACK",
        );
        assert_eq!(entries(dp), (0, 0));
        let s = dp.service_counters(service_id(c, "web6")).unwrap();
        assert_eq!(
            (s.unproven_acks, s.stateless_forwards, s.new_flows),
            (1, 1, 0)
        );
        assert_eq!(dp.backend_counters(id).unwrap().unproven_acks, 1);
        // A reply from a backend no SYN went to finds no slot: passed untouched.
        let other = [11, 12, 13]
            .map(backend6)
            .into_iter()
            .find(|b| *b != backend)
            .unwrap();
        let stray = syn_ack(&syn, other);
        let r = run_counted(dp, rig.b0, &stray.bytes(), Reason::PassNoService);
        expect_run(&r, XDP_PASS, &stray.bytes(), &"SYN-ACK of another backend");
    });
}

#[test]
fn a_retransmitted_ipv6_syn_keeps_its_backend_after_a_table_change() {
    let rig = Rig::build();
    let (c0, b0, b0_mac) = (rig.c0, rig.b0, rig.b0_mac);
    rig.with_dataplane(V6_CONFIG, |c| {
        let config = lb_userspace::model::config::parse(V6_CONFIG).unwrap();
        let syns: Vec<(Frame6, Ipv6Addr)> = (44000..44100)
            .map(|sport| {
                let syn = client_from(CLIENT6, sport, SYN);
                let r = run_once(c.dataplane().program(), c0, &syn.bytes());
                (syn.clone(), sent_to(&r))
            })
            .collect();
        let heavier = BackendRef {
            service: "web6".into(),
            address: backend6(11).into(),
            port: 8080,
        };
        let overlay = Overlay {
            ring_weights: [(heavier, 10_000)].into(),
            ..Overlay::default()
        };
        c.apply_with(&config, &overlay).unwrap();
        let moved: Vec<&(Frame6, Ipv6Addr)> = syns
            .iter()
            .filter(|(syn, b)| table_backend6(c, "web6", &syn.flow_key()) != *b)
            .collect();
        assert!(moved.len() >= 10, "{} of 100 tuples moved", moved.len());
        let dp = c.dataplane();
        for (syn, backend) in &moved {
            let r = run_counted(dp, c0, &syn.bytes(), Reason::RedirectInterface);
            expect6(
                &r,
                XDP_REDIRECT,
                &as_to_backend6(syn, *backend, b0_mac),
                "SYN again",
            );
            assert!(matches!(
                run_once(dp.program(), b0, &syn_ack(syn, *backend).bytes()).action,
                XDP_REDIRECT
            ));
            let r = run_counted(dp, c0, &ack(syn).bytes(), Reason::RedirectInterface);
            assert_eq!(sent_to(&r), *backend);
            let flow = dp.flows6.get(&syn.flow_key(), 0).unwrap();
            assert_eq!(flow.backend, backend_id6(c, "web6", *backend));
        }
        let retransmits: u64 = [11, 12, 13]
            .map(|last| backend_id6(c, "web6", backend6(last)))
            .iter()
            .map(|id| dp.backend_signals(*id).unwrap().syn_retransmits)
            .sum();
        assert_eq!(retransmits, moved.len() as u64);
        assert_eq!(entries(dp), (moved.len(), moved.len()));
        // A new tuple goes by the new table.
        let fresh = client_from(CLIENT6, 45000, SYN);
        let r = run_once(dp.program(), c0, &fresh.bytes());
        assert_eq!(sent_to(&r), table_backend6(c, "web6", &fresh.flow_key()));
    });
}

const RR_CONFIG: &str = rig_config_with!(
    r#"  - name: rr6
    vip: "2001:db8:100::100"
    port: 80
    policy: round_robin
    backends:
      - { address: "2001:db8:1::11", port: 8080, zone: az-a }
      - { address: "2001:db8:1::12", port: 8080, zone: az-b }
"#
);

#[test]
fn a_round_robin_ipv6_services_syn_still_records_its_flow() {
    let rig = Rig::build();
    let c0 = rig.c0;
    rig.with_dataplane(RR_CONFIG, |c| {
        let dp = c.dataplane();
        let syn = client_from(CLIENT6, 46000, SYN);
        let r = run_counted(dp, c0, &syn.bytes(), Reason::RedirectInterface);
        let backend = sent_to(&r);
        assert_eq!(entries(dp), (1, 1));
        let flow = dp.flows6.get(&syn.flow_key(), 0).unwrap();
        assert_eq!(
            (flow.backend, flow.state),
            (backend_id6(c, "rr6", backend), FLOW_F_COUNTED)
        );
        let key = syn.flow_key();
        let set = syn_set6(
            HASH_SEED,
            &addr6_wire(CLIENT6.octets()),
            key.src_port,
            syn_cache_sets(4096) - 1,
        );
        assert_eq!(
            dp.syn_set(set).unwrap().unwrap().ways.map(|w| w.entry.0),
            [0, 0],
            "no slot written"
        );
    });
}

/// Runs the whole handshake of the client's `syn` (to a hash-placed IPv6 service of the
/// rig): the SYN in through `c0`, its backend's SYN-ACK in through `b0`, the client's
/// ACK of it, which records the flow; the backend.
pub fn handshake6(dp: &KernelDataplane, c0: u32, b0: u32, syn: &Frame6) -> Ipv6Addr {
    let backend = sent_to(&run_once(dp.program(), c0, &syn.bytes()));
    let r = run_once(dp.program(), b0, &syn_ack(syn, backend).bytes());
    assert_eq!(r.action, XDP_REDIRECT, "SYN-ACK of {syn:?}");
    assert_eq!(
        sent_to(&run_once(dp.program(), c0, &ack(syn).bytes())),
        backend
    );
    assert!(dp.flows6.get(&syn.flow_key(), 0).is_ok(), "recorded");
    backend
}
