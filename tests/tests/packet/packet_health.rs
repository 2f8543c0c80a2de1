//! Packet tests of what health checking needs from the data path: the passive
//! handshake counters, flows that survive a backend leaving the ring, the purge of a
//! backend's flows in both directions, and the cost of a table swap with 1,000 backends.
//! The real XDP object, maps filled by the real controller, frames through
//! BPF_PROG_TEST_RUN in a [`Rig`] namespace.
use std::{collections::BTreeSet, net::Ipv4Addr, time::Instant};

use lb_common::{flow::FlowKey, hash::flow_hash, net::FAMILY_IPV4};
use lb_tests::{
    frame::{dst_ip, ACK, RST, SYN},
    packet_exchange::reply,
    packet_rig::*,
};
use lb_userspace::{
    control::tables::Controller,
    dataplane::Dataplane,
    kernel::KernelDataplane,
    model::config,
    model::plan::{BackendRef, Overlay},
};

const SEED: u32 = 42;

/// Opens a connection from `sport` (SYN, the backend's SYN-ACK, then the client's ACK,
/// which records the flow: `web` takes SYNs without recording them); returns its backend.
fn connect(dp: &KernelDataplane, (rig_c0, rig_b0): (u32, u32), sport: u16) -> Ipv4Addr {
    let backend = from_client(dp, rig_c0, sport, SYN);
    ack_to(dp, (rig_c0, rig_b0), sport, backend);
    backend
}

/// Passes `backend`'s SYN-ACK to the client's SYN from `sport` and sends the client's
/// ACK of it, which must reach `backend`.
fn ack_to(dp: &KernelDataplane, (rig_c0, rig_b0): (u32, u32), sport: u16, backend: Ipv4Addr) {
    let syn = client_syn(sport);
    syn_ack_passes(dp, rig_b0, &syn, backend);
    let r = run_once(dp.program(), rig_c0, &ack_of(&syn).bytes());
    assert_eq!(
        (r.action, lb_tests::frame::dst_ip(&r.output)),
        (XDP_REDIRECT, backend),
        "port {sport}"
    );
}

/// Runs a frame from `backend`:8080 back to the client's `dport` with TCP `flags`.
fn from_backend(dp: &KernelDataplane, rig_b0: u32, backend: Ipv4Addr, dport: u16, flags: u8) {
    let frame = reply(&client_syn(dport), backend, flags);
    let r = run_once(dp.program(), rig_b0, &frame.bytes());
    assert_eq!(
        r.action, XDP_REDIRECT,
        "reply from {backend} flags {flags:#x}"
    );
}

fn at(address: Ipv4Addr) -> BackendRef {
    BackendRef {
        service: "web".into(),
        address: address.into(),
        port: 8080,
    }
}

fn id_of(c: &Controller<KernelDataplane>, address: Ipv4Addr) -> u32 {
    c.backend_id(&at(address)).expect("a web backend")
}

#[test]
fn syns_syn_acks_and_resets_are_counted_per_backend() {
    let rig = Rig::build();
    let (c0, b0) = (rig.c0, rig.b0);
    rig.with_dataplane(CONFIG, |c| {
        let dp = c.dataplane();
        let backend = from_client(dp, c0, 41000, SYN);
        let id = id_of(c, backend);
        // A retransmitted SYN counts as another attempt; established packets do not.
        from_client(dp, c0, 41000, SYN);
        from_client(dp, c0, 41000, ACK);
        from_client(dp, c0, 41000, RST | ACK);
        let s = dp.backend_signals(id).unwrap();
        assert_eq!((s.syns, s.syn_acks, s.resets), (2, 0, 0));
        from_backend(dp, b0, backend, 41000, SYN | ACK);
        from_backend(dp, b0, backend, 41000, ACK);
        let s = dp.backend_signals(id).unwrap();
        assert_eq!((s.syns, s.syn_acks, s.resets), (2, 1, 0));
        from_backend(dp, b0, backend, 41000, RST | ACK);
        let s = dp.backend_signals(id).unwrap();
        assert_eq!((s.syns, s.syn_acks, s.resets), (2, 1, 1));
        // Nothing was counted against the other backends.
        for other in [11u8, 12, 13].map(|l| Ipv4Addr::new(10, 1, 0, l)) {
            if other != backend {
                assert_eq!(
                    dp.backend_signals(id_of(c, other)).unwrap(),
                    Default::default()
                );
            }
        }
    });
}

#[test]
fn a_backend_out_of_the_ring_keeps_its_flows_and_gets_no_new_ones() {
    let rig = Rig::build();
    let (c0, b0) = (rig.c0, rig.b0);
    rig.with_dataplane(CONFIG, |c| {
        let config = config::parse(CONFIG).unwrap();
        let before: Vec<Ipv4Addr> = (42000..42090)
            .map(|p| connect(c.dataplane(), (c0, b0), p))
            .collect();
        let out = Ipv4Addr::new(10, 1, 0, 12);
        assert!(before.contains(&out));
        let overlay = Overlay {
            ring_weights: [(at(out), 0)].into(),
            ..Overlay::default()
        };
        let summary = c.apply_with(&config, &overlay).unwrap();
        assert_eq!((summary.services_flipped, summary.flows_purged), (1, 0));
        for (p, was) in (42000..42090).zip(&before) {
            assert_eq!(from_client(c.dataplane(), c0, p, ACK), *was, "port {p}");
        }
        for p in 43000..43090 {
            assert_ne!(from_client(c.dataplane(), c0, p, SYN), out, "port {p}");
        }
    });
}

fn flows_of(dp: &KernelDataplane, id: u32) -> (usize, usize) {
    let forward = dp
        .flows
        .iter()
        .filter_map(Result::ok)
        .filter(|(_, t)| t.backend == id)
        .count();
    let reverse = dp
        .return_flows
        .iter()
        .filter_map(Result::ok)
        .filter(|(_, n)| n.backend == id)
        .count();
    (forward, reverse)
}

#[test]
fn purging_a_backend_deletes_both_directions_of_its_flows_and_nothing_else() {
    let rig = Rig::build();
    let (c0, b0) = (rig.c0, rig.b0);
    rig.with_dataplane(CONFIG, |c| {
        let mut per_backend = std::collections::BTreeMap::new();
        for p in 44000..44120 {
            *per_backend
                .entry(connect(c.dataplane(), (c0, b0), p))
                .or_insert(0usize) += 1;
        }
        let victim = Ipv4Addr::new(10, 1, 0, 13);
        let id = id_of(c, victim);
        assert_eq!(
            flows_of(c.dataplane(), id),
            (per_backend[&victim], per_backend[&victim])
        );
        let purged = c.purge_flows(&at(victim)).unwrap();
        assert_eq!(purged, per_backend[&victim]);
        assert_eq!(flows_of(c.dataplane(), id), (0, 0));
        for (backend, n) in &per_backend {
            if *backend != victim {
                assert_eq!(
                    flows_of(c.dataplane(), id_of(c, *backend)),
                    (*n, *n),
                    "{backend}"
                );
            }
        }
        // The slot stays: the purged flows are placed again by Maglev, the others stay.
        let again = from_client(c.dataplane(), c0, 44000, ACK);
        assert!(per_backend.contains_key(&again));
    });
}

/// One backend of 1,000 turns unhealthy: effective weights -> Maglev rebuild of a
/// 65,537-slot ring -> diff against the idle slot -> map writes -> flip, against the
/// real maps. The figure is printed (timing on a shared machine is not a test); the test
/// asserts that the kernel then places flows exactly as the new table says.
#[test]
fn rebuild_and_swap_with_a_thousand_backends() {
    let backends: Vec<String> = (0..1000)
        .map(|i| {
            format!(
                "{{ address: 10.2.{}.{}, port: 8080, zone: az-a }}",
                i / 250,
                i % 250 + 1
            )
        })
        .collect();
    let text = format!(
        "node: {{ zone: az-a }}\ninterfaces: [c0, b0]\ncluster: {{ hash_seed: {SEED} }}\n\
         limits: {{ max_services: 4, max_backends: 1024, flow_table_size: 4096 }}\n\
         services:\n  - {{ name: web, vip: 10.0.0.100, port: 80, backends: [{}] }}\n",
        backends.join(", ")
    );
    let rig = Rig::build();
    let c0 = rig.c0;
    rig.with_dataplane(&text, |c| {
        let config = config::parse(&text).unwrap();
        let ring_size = config.cluster.ring_size;
        let victim = at(Ipv4Addr::new(10, 2, 0, 1));
        let mut overlay = Overlay::default();
        for b in &config.services[0].backends {
            overlay.ring_weights.insert(at(ipv4(b.address)), 1000);
        }
        let started = Instant::now();
        let full = c.apply_with(&config, &overlay).unwrap();
        let reweigh = started.elapsed();
        overlay.ring_weights.insert(victim.clone(), 0);
        let started = Instant::now();
        let one = c.apply_with(&config, &overlay).unwrap();
        let swap = started.elapsed();
        eprintln!(
            "1,000 backends, ring {ring_size}, kernel maps: scaled re-weigh (same table) {:.1} ms, {} entries; \
             one backend out: rebuild + swap {:.1} ms, {} ring entries written",
            reweigh.as_secs_f64() * 1e3,
            full.ring_entries_written,
            swap.as_secs_f64() * 1e3,
            one.ring_entries_written
        );
        assert_eq!(full.ring_entries_written, 0, "x1000 weights leave the table as it was");
        assert_eq!(one.services_flipped, 1);
        assert!(one.ring_entries_written > 0 && one.ring_entries_written < ring_size as usize / 20);
        let plan = c.plan().unwrap();
        let ring = &plan.services[0].ring;
        let victim_id = c.backend_id(&victim).unwrap();
        let mut seen = BTreeSet::new();
        for p in 45000..45200u16 {
            let key = FlowKey {
                src_addr: u32::from_ne_bytes(CLIENT.octets()),
                dst_addr: u32::from_ne_bytes(VIP.octets()),
                src_port: p.to_be(),
                dst_port: 80u16.to_be(),
                proto: 6,
                family: FAMILY_IPV4,
                _pad: [0; 2],
            };
            let id = ring[(flow_hash(&key, SEED) % ring_size) as usize];
            assert_ne!(id, victim_id);
            let want = plan.backends.iter().find(|b| b.id == id).unwrap().at.address;
            let frame = client_syn(p).bytes();
            let r = run_once(c.dataplane().program(), c0, &frame);
            // These backends have no neighbour entry in the rig: the rewritten frame goes
            // to the kernel, which is enough to read where it was sent.
            assert_eq!(r.action, XDP_PASS);
            assert_eq!(dst_ip(&r.output), want, "port {p}");
            seen.insert(want);
        }
        assert!(seen.len() > 150, "flows spread over many backends: {}", seen.len());
    });
}

#[test]
fn a_syn_on_a_reused_tuple_is_placed_by_the_ring_not_by_a_stale_entry() {
    let rig = Rig::build();
    let (c0, b0) = (rig.c0, rig.b0);
    rig.with_dataplane(CONFIG, |c| {
        let config = config::parse(CONFIG).unwrap();
        let out = Ipv4Addr::new(10, 1, 0, 12);
        let ports: Vec<u16> = (46000..46200)
            .filter(|p| connect(c.dataplane(), (c0, b0), *p) == out)
            .collect();
        assert!(!ports.is_empty());
        // A retransmitted SYN the ring still places there is not a new flow.
        let id = id_of(c, out);
        let before = c.dataplane().backend_counters(id).unwrap().new_flows;
        from_client(c.dataplane(), c0, ports[0], SYN);
        assert_eq!(
            c.dataplane().backend_counters(id).unwrap().new_flows,
            before
        );

        let overlay = Overlay {
            ring_weights: [(at(out), 0)].into(),
            ..Overlay::default()
        };
        c.apply_with(&config, &overlay).unwrap();
        for p in &ports {
            // The old connection's packets still go there; a new SYN on the same tuple
            // (a client reusing the port) does not, and the entry follows it.
            assert_eq!(from_client(c.dataplane(), c0, *p, ACK), out);
            let moved = from_client(c.dataplane(), c0, *p, SYN);
            assert_ne!(moved, out, "port {p}");
            ack_to(c.dataplane(), (c0, b0), *p, moved);
        }
    });
}
