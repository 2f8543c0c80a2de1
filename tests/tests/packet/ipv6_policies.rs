//! The IPv4 policies over IPv6 (`lb-ebpf/src/select6.rs`): round robin walks the
//! service's weighted schedule, source hash keeps every port of a client on the backend
//! that the ring gives the IPv6 source hash of its address.
use std::{collections::BTreeMap, net::Ipv6Addr};

use lb_common::hash::source_hash6;
use lb_common::ipv6::addr6_wire;
use lb_tests::{frame::SYN, frame6::Frame6, packet_rig::*, rig_config_with};
use lb_userspace::{control::tables::Controller, kernel::KernelDataplane};

const CONFIG: &str = rig_config_with!(
    r#"  - name: rr6
    vip: "2001:db8:100::110"
    port: 80
    policy: round_robin
    backends:
      - { address: "2001:db8:1::11", port: 8080, zone: az-a, weight: 3 }
      - { address: "2001:db8:1::12", port: 8080, zone: az-b, weight: 1 }
      - { address: "2001:db8:1::13", port: 8080, zone: az-c, weight: 1 }
  - name: sh6
    vip: "2001:db8:100::112"
    port: 80
    policy: source_hash
    backends:
      - { address: "2001:db8:1::11", port: 8080, zone: az-a }
      - { address: "2001:db8:1::12", port: 8080, zone: az-b }
      - { address: "2001:db8:1::13", port: 8080, zone: az-c }
"#
);

fn syn(src: Ipv6Addr, vip: &str, sport: u16) -> Frame6 {
    Frame6 {
        src_mac: CLIENT_MAC,
        src,
        dst: vip.parse().unwrap(),
        sport,
        flags: SYN,
        ..Frame6::default()
    }
}

/// Where the data path sent `f`: it must be redirected.
fn sent_to(c: &Controller<KernelDataplane>, c0: u32, f: &Frame6) -> Ipv6Addr {
    let r = run_once(c.dataplane().program(), c0, &f.bytes());
    assert_eq!(r.action, XDP_REDIRECT, "{f:?}");
    Ipv6Addr::from(<[u8; 16]>::try_from(&r.output[14 + 24..14 + 40]).unwrap())
}

#[test]
fn round_robin_cycles_through_ipv6_backends_in_weight_proportion() {
    let rig = Rig::build();
    let c0 = rig.c0;
    rig.with_dataplane(CONFIG, |c| {
        pin_to_cpu(0);
        let picks: Vec<Ipv6Addr> = (0..10)
            .map(|i| sent_to(c, c0, &syn(CLIENT6, "2001:db8:100::110", 41000 + i)))
            .collect();
        // Weights 3:1:1 give the smooth schedule a, b, a, c, a, repeated.
        let (a, b, c_) = (backend6(11), backend6(12), backend6(13));
        let cycle = [a, b, a, c_, a];
        assert_eq!(picks, [cycle, cycle].concat());
    });
}

#[test]
fn source_hash_keeps_every_port_of_an_ipv6_client_on_its_ring_backend() {
    let rig = Rig::build();
    let c0 = rig.c0;
    rig.with_dataplane(CONFIG, |c| {
        let ring = planned_service(c, "sh6").ring.clone();
        let plan = c.plan().unwrap().clone();
        let mut per_client = BTreeMap::new();
        for client in 0..24u16 {
            let src = Ipv6Addr::new(0x2001, 0xdb8, 0x10, 0, 0, 0, 1, client + 1);
            let id = ring
                [(source_hash6(&addr6_wire(src.octets()), HASH_SEED) % ring.len() as u32) as usize];
            let want: Ipv6Addr = plan
                .backends
                .iter()
                .find(|b| b.id == id)
                .unwrap()
                .at
                .address
                .to_string()
                .parse()
                .unwrap();
            for p in 0..8 {
                let got = sent_to(c, c0, &syn(src, "2001:db8:100::112", 45000 + p));
                assert_eq!(got, want, "client {src} port {}", 45000 + p);
            }
            per_client.insert(src, want);
        }
        let distinct: std::collections::BTreeSet<_> = per_client.values().collect();
        assert_eq!(
            distinct.len(),
            3,
            "24 clients over all backends: {per_client:?}"
        );
    });
}
