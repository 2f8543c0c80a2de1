//! The client's ACK records a hash-placed service's flow only if it acknowledges the
//! backend's SYN-ACK as it passed through (see `lb_common::syn_cache::syn_ack_proof`): a
//! spoofed SYN and ACK of the same tuple, whose sender never sees the SYN-ACK, record
//! nothing and are counted as `unproven_acks`, while real handshakes (retransmitted
//! SYN-ACKs, a backend answering afresh, a reused tuple) still record their flow. Real
//! object, BPF_PROG_TEST_RUN (see `lb_tests::packet_rig`).
use std::net::Ipv4Addr;

use lb_common::flow::{FLOW_F_CLOSED, FLOW_F_ESTABLISHED};
use lb_tests::{
    frame::{dst_ip, source, Frame},
    packet_rig::*,
};
use lb_userspace::kernel::KernelDataplane;

const ACK: u8 = 0x10;
const RST: u8 = 0x04;

fn flow_entries(dp: &KernelDataplane) -> usize {
    dp.flows.keys().filter_map(Result::ok).count()
}

fn return_entries(dp: &KernelDataplane) -> usize {
    dp.return_flows.keys().filter_map(Result::ok).count()
}

/// Sends `frame` from the client; it must be redirected. Returns the backend it went to.
fn send(dp: &KernelDataplane, c0: u32, frame: &Frame) -> Ipv4Addr {
    let r = run_once(dp.program(), c0, &frame.bytes());
    assert_eq!(r.action, XDP_REDIRECT, "{frame:?}");
    dst_ip(&r.output)
}

/// The client's ACK of `syn` acknowledging `ack`.
fn ack_with(syn: &Frame, ack: u32) -> Frame {
    Frame { ack, ..ack_of(syn) }
}

#[test]
fn an_ack_that_acknowledges_no_syn_ack_records_nothing_and_is_counted() {
    let rig = Rig::build();
    let (c0, b0) = (rig.c0, rig.b0);
    rig.with_dataplane(CONFIG, |c| {
        let web = service_id(c, "web");
        let dp = c.dataplane();
        let syn = client_syn(47_000);
        let backend = send(dp, c0, &syn);
        let id = backend_id(c, "web", backend);

        // No SYN-ACK has passed: whatever the ACK acknowledges proves nothing. It goes
        // to the SYN's backend and records nothing.
        assert_eq!(send(dp, c0, &ack_of(&syn)), backend);
        assert_eq!((flow_entries(dp), return_entries(dp)), (0, 0));
        let s = dp.service_counters(web).unwrap();
        assert_eq!(
            (s.unproven_acks, s.stateless_forwards, s.new_flows),
            (1, 1, 0)
        );
        assert_eq!(dp.backend_counters(id).unwrap().unproven_acks, 1);

        // The SYN-ACK passed, but the ACK acknowledges another sequence number.
        syn_ack_passes(dp, b0, &syn, backend);
        assert_eq!(send(dp, c0, &ack_with(&syn, BACKEND_ISN + 2)), backend);
        assert_eq!((flow_entries(dp), return_entries(dp)), (0, 0));
        assert_eq!(dp.service_counters(web).unwrap().unproven_acks, 2);

        // The unproven ACKs left the slot to the client that saw the SYN-ACK.
        assert_eq!(send(dp, c0, &ack_of(&syn)), backend);
        assert_eq!((flow_entries(dp), return_entries(dp)), (1, 1));
        let entry = dp.flows.get(&syn.flow_key(), 0).unwrap();
        assert_eq!(entry.backend, id);
        assert_ne!(entry.state & FLOW_F_ESTABLISHED, 0);
        let s = dp.service_counters(web).unwrap();
        assert_eq!((s.unproven_acks, s.new_flows), (2, 1));
        assert_eq!(dp.active_flows(id).unwrap(), 1);
    });
}

/// A SYN-ACK retransmitted with the same sequence number leaves the same proof. A backend
/// that answers the client's retransmitted SYN with a new initial sequence number
/// replaces it: the ACK of the newest SYN-ACK records the flow, and an ACK of the older
/// one is forwarded to the SYN's backend unrecorded, so the client is not cut off.
#[test]
fn retransmitted_syn_acks_still_prove_and_a_new_isn_replaces_the_proof() {
    let rig = Rig::build();
    let (c0, b0) = (rig.c0, rig.b0);
    rig.with_dataplane(CONFIG, |c| {
        let web = service_id(c, "web");
        let dp = c.dataplane();
        let syn = client_syn(47_100);
        let backend = send(dp, c0, &syn);
        syn_ack_passes(dp, b0, &syn, backend);
        syn_ack_passes(dp, b0, &syn, backend);
        assert_eq!(send(dp, c0, &ack_of(&syn)), backend);
        assert!(dp.flows.get(&syn.flow_key(), 0).is_ok());

        let syn = client_syn(47_101);
        let backend = send(dp, c0, &syn);
        syn_ack_passes(dp, b0, &syn, backend);
        assert_eq!(send(dp, c0, &syn), backend, "the retransmitted SYN");
        let afresh = Frame {
            seq: BACKEND_ISN + 0x10_0000,
            ..syn_ack_of(&syn, backend)
        };
        let r = run_once(dp.program(), b0, &afresh.bytes());
        assert_eq!((r.action, source(&r.output)), (XDP_REDIRECT, (VIP, 80)));
        assert_eq!(
            send(dp, c0, &ack_of(&syn)),
            backend,
            "the older SYN-ACK's ACK"
        );
        assert!(dp.flows.get(&syn.flow_key(), 0).is_err());
        assert_eq!(dp.service_counters(web).unwrap().unproven_acks, 1);
        assert_eq!(send(dp, c0, &ack_with(&syn, afresh.seq + 1)), backend);
        assert!(dp.flows.get(&syn.flow_key(), 0).is_ok());
        assert_eq!(flow_entries(dp), 2);
    });
}

/// A client reuses the tuple of a closed flow and the table sends its SYN to the same
/// backend: the SYN-ACK is translated by the old flow's return entry, and still leaves
/// its proof. An ACK without it leaves the closed entry as it is; the ACK of the SYN-ACK
/// replaces it with the new connection's.
#[test]
fn a_reused_tuple_replaces_its_entry_only_with_the_ack_of_the_syn_ack() {
    let rig = Rig::build();
    let (c0, b0) = (rig.c0, rig.b0);
    rig.with_dataplane(CONFIG, |c| {
        let dp = c.dataplane();
        let syn = client_syn(47_200);
        let backend = send(dp, c0, &syn);
        let id = backend_id(c, "web", backend);
        syn_ack_passes(dp, b0, &syn, backend);
        send(dp, c0, &ack_of(&syn));
        send(
            dp,
            c0,
            &Frame {
                flags: RST | ACK,
                ..ack_of(&syn)
            },
        );
        let closed = dp.flows.get(&syn.flow_key(), 0).unwrap();
        assert_ne!(closed.state & FLOW_F_CLOSED, 0);
        assert_eq!(dp.active_flows(id).unwrap(), 0);

        assert_eq!(send(dp, c0, &syn), backend, "the table did not change");
        assert!(dp.return_flows.get(&syn.reply_key(backend), 0).is_ok());
        syn_ack_passes(dp, b0, &syn, backend);
        send(dp, c0, &ack_with(&syn, 7));
        assert_eq!(dp.flows.get(&syn.flow_key(), 0).unwrap(), closed);
        send(dp, c0, &ack_of(&syn));
        let entry = dp.flows.get(&syn.flow_key(), 0).unwrap();
        assert_eq!(entry.backend, id);
        assert_eq!(entry.state & FLOW_F_CLOSED, 0, "the new connection's entry");
        assert_eq!(dp.active_flows(id).unwrap(), 1);
    });
}

/// Spoofed SYN and ACK pairs, five times the flow table's 4,096 entries, from as many
/// sources: none records a flow (before the ACK had to prove anything, each did, and the
/// table filled), and the live flows keep their entries.
#[test]
fn a_flood_of_spoofed_syn_and_ack_pairs_records_no_flow() {
    let rig = Rig::build();
    let (c0, b0) = (rig.c0, rig.b0);
    rig.with_dataplane(CONFIG, |c| {
        let web = service_id(c, "web");
        let dp = c.dataplane();
        let live: Vec<Frame> = (47_300..47_308).map(client_syn).collect();
        for syn in &live {
            let backend = send(dp, c0, syn);
            syn_ack_passes(dp, b0, syn, backend);
            send(dp, c0, &ack_of(syn));
        }
        let before = flow_entries(dp);
        assert_eq!(before, live.len());
        let pairs = 5 * 4096u32;
        for i in 0..pairs {
            let syn = Frame {
                src: Ipv4Addr::from(0xc612_0000 + i),
                sport: 1024 + (i % 60_000) as u16,
                ..client_syn(0)
            };
            send(dp, c0, &syn);
            // A guess at the SYN-ACK's sequence number the sender never saw.
            send(dp, c0, &ack_with(&syn, i.wrapping_mul(0x9e37_79b9)));
        }
        let after = flow_entries(dp);
        eprintln!(
            "flow entries before and after {pairs} spoofed SYN+ACK pairs: {before} -> {after}"
        );
        assert_eq!(after, before, "the flood recorded nothing");
        assert_eq!(return_entries(dp), before);
        for syn in &live {
            assert!(dp.flows.get(&syn.flow_key(), 0).is_ok(), "{syn:?} kept");
        }
        let s = dp.service_counters(web).unwrap();
        assert_eq!(
            (s.unproven_acks, s.new_flows),
            (pairs as u64, live.len() as u64)
        );
    });
}

/// A spoofed SYN and ACK pair with the exact tuple of an entry that a reused tuple may
/// replace (closed, idle for more than 5 s, or on a backend taking no new flows), after
/// the table moved that tuple to another backend: the SYN goes by the table and its
/// SYN-ACK passes (to the real client), but the ACK, whose sender never saw it, leaves the
/// entry on its backend, follows it there and is counted as unproven. The real client's
/// ACK of that SYN-ACK still replaces the entry.
#[test]
fn a_spoofed_syn_and_ack_leave_a_reusable_entry_on_its_backend() {
    let rig = Rig::build();
    let (c0, b0) = (rig.c0, rig.b0);
    rig.with_dataplane(CONFIG, |c| {
        let config = lb_userspace::model::config::parse(CONFIG).unwrap();
        let web = service_id(c, "web");
        let mut recorded = Vec::new();
        for sport in 47_400..47_700 {
            let syn = client_syn(sport);
            let backend = send(c.dataplane(), c0, &syn);
            syn_ack_passes(c.dataplane(), b0, &syn, backend);
            send(c.dataplane(), c0, &ack_of(&syn));
            recorded.push((syn, backend));
        }
        // 10.1.0.11 weighs 3 and 10.1.0.13 takes no new flows: tuples move.
        let (heavier, out) = (Ipv4Addr::new(10, 1, 0, 11), Ipv4Addr::new(10, 1, 0, 13));
        let at = |address| lb_userspace::model::plan::BackendRef {
            service: "web".into(),
            address,
            port: 8080,
        };
        let overlay = lb_userspace::model::plan::Overlay {
            ring_weights: [(at(heavier.into()), 3000), (at(out.into()), 0)].into(),
            ..Default::default()
        };
        c.apply_with(&config, &overlay).unwrap();
        let moved = |on: &dyn Fn(&Frame, Ipv4Addr) -> bool| {
            let (syn, old) = recorded
                .iter()
                .find(|(syn, old)| on(syn, *old) && table_backend(c, "web", syn.sport) != *old)
                .expect("a tuple the new table moves");
            let now = table_backend(c, "web", syn.sport);
            let ids = (backend_id(c, "web", *old), backend_id(c, "web", now));
            (syn.clone(), *old, now, ids)
        };
        let closed = moved(&|_, old| old != out);
        let idle = moved(&|syn, old| old != out && syn.sport != closed.0.sport);
        let draining = moved(&|_, old| old == out);
        let dp = c.dataplane_mut();
        dp.set_clock(100).unwrap();
        let rst = Frame {
            flags: RST | ACK,
            ..ack_of(&closed.0)
        };
        send(dp, c0, &rst);
        send(dp, c0, &ack_of(&draining.0));
        for (syn, old, now, (old_id, _)) in [&closed, &idle, &draining] {
            let before = dp.flows.get(&syn.flow_key(), 0).unwrap();
            let active = dp.active_flows(*old_id).unwrap();
            let unproven = dp.service_counters(web).unwrap().unproven_acks;
            assert_eq!(send(dp, c0, syn), *now, "the spoofed SYN goes by the table");
            syn_ack_passes(dp, b0, syn, *now);
            let spoofed = ack_with(syn, BACKEND_ISN ^ 0x5a5a);
            assert_eq!(send(dp, c0, &spoofed), *old, "the spoofed ACK: {syn:?}");
            let after = dp.flows.get(&syn.flow_key(), 0).unwrap();
            assert_eq!(
                (after.backend, after.state),
                (before.backend, before.state),
                "{syn:?}"
            );
            assert_eq!(dp.active_flows(*old_id).unwrap(), active, "{syn:?}");
            let s = dp.service_counters(web).unwrap();
            assert_eq!(
                (s.unproven_acks - unproven, s.stateless_forwards),
                (1, 0),
                "{syn:?}"
            );
            assert_eq!(dp.backend_counters(*old_id).unwrap().stateless_forwards, 0);
        }
        // The spoofed ACK refreshed the idle entry, as any packet of a flow does.
        dp.set_clock(200).unwrap();
        for (syn, _, now, (_, now_id)) in [&closed, &idle, &draining] {
            assert_eq!(send(dp, c0, &ack_of(syn)), *now, "the ACK of the SYN-ACK");
            let entry = dp.flows.get(&syn.flow_key(), 0).unwrap();
            assert_eq!(entry.backend, *now_id);
            assert_eq!(entry.state & FLOW_F_CLOSED, 0, "{syn:?}");
        }
    });
}
