//! UDP services in the direct-server-return modes through the real object: a datagram is
//! placed by the table as in NAT, then handed on unchanged, only its MACs changed
//! (`dsr_l2`) or behind the exact outer headers of `ipip` and `gue`; its flow is
//! recorded one way only (no reply crosses the node), and a later datagram of the flow
//! follows its entry while the table changes. The same over IPv6 (`lb_dsr6`: IPv6-in-IPv6
//! and GUE over IPv6, its UDP checksum summed from scratch by the oracle).
use std::net::Ipv4Addr;

use lb_common::counters::Reason;
use lb_tests::{
    dsr_frames::{gue_header, wrapped},
    dsr_frames6::{gue6_header, wrapped6},
    frame::ETH_LEN,
    frame6::{Frame6, PROTO_UDP},
    packet_exchange::run_counted,
    packet_rig::*,
    rig_config_with,
    udp_frame::Datagram,
};
use lb_userspace::{control::tables::Controller, kernel::KernelDataplane};

/// One UDP service per DSR mode, on port 53 of its own VIP, every backend on port 53.
const UDP_DSR: &str = rig_config_with!(
    r#"  - name: dns-l2
    vip: 10.0.0.130
    port: 53
    protocol: udp
    mode: dsr_l2
    backends:
      - { address: 10.1.0.11, port: 53, zone: az-a }
      - { address: 10.1.0.12, port: 53, zone: az-b }
      - { address: 10.1.0.13, port: 53, zone: az-c }
  - name: dns-ipip
    vip: 10.0.0.131
    port: 53
    protocol: udp
    mode: ipip
    backends:
      - { address: 10.1.0.11, port: 53, zone: az-a }
      - { address: 10.1.0.12, port: 53, zone: az-b }
      - { address: 10.1.0.13, port: 53, zone: az-c }
  - name: dns-gue
    vip: 10.0.0.132
    port: 53
    protocol: udp
    mode: gue
    backends:
      - { address: 10.1.0.11, port: 53, zone: az-a }
      - { address: 10.1.0.12, port: 53, zone: az-b }
      - { address: 10.1.0.13, port: 53, zone: az-c }
  - name: dns6-l2
    vip: "2001:db8:100::130"
    port: 53
    protocol: udp
    mode: dsr_l2
    backends:
      - { address: "2001:db8:1::11", port: 53, zone: az-a }
      - { address: "2001:db8:1::12", port: 53, zone: az-b }
      - { address: "2001:db8:1::13", port: 53, zone: az-c }
  - name: dns6-ipip
    vip: "2001:db8:100::131"
    port: 53
    protocol: udp
    mode: ipip
    backends:
      - { address: "2001:db8:1::11", port: 53, zone: az-a }
      - { address: "2001:db8:1::12", port: 53, zone: az-b }
      - { address: "2001:db8:1::13", port: 53, zone: az-c }
  - name: dns6-gue
    vip: "2001:db8:100::132"
    port: 53
    protocol: udp
    mode: gue
    backends:
      - { address: "2001:db8:1::11", port: 53, zone: az-a }
      - { address: "2001:db8:1::12", port: 53, zone: az-b }
      - { address: "2001:db8:1::13", port: 53, zone: az-c }
"#
);

fn query(vip: Ipv4Addr, sport: u16, n: usize) -> Datagram {
    Datagram {
        src_mac: CLIENT_MAC,
        dst: vip,
        sport,
        payload: vec![0x5a; 1 + n],
        ..Datagram::default()
    }
}

/// What `service`'s backend `backend` must get of `dg`, out of `b0` (MAC `b0_mac`).
fn expected(service: &str, dg: &Datagram, backend: Ipv4Addr, b0_mac: [u8; 6]) -> Vec<u8> {
    let frame = dg.bytes();
    let inner = &frame[ETH_LEN..];
    match service {
        "dns-l2" => {
            let mut want = frame.clone();
            want[0..6].copy_from_slice(&backend_mac(backend.octets()[3]));
            want[6..12].copy_from_slice(&b0_mac);
            want
        }
        "dns-ipip" => wrapped(b0_mac, backend, 4, &[], inner),
        _ => {
            let udp = gue_header(&dg.flow_key(), HASH_SEED, 6080, inner.len());
            wrapped(b0_mac, backend, 17, &udp, inner)
        }
    }
}

/// The backend `service`'s table gives `dg`'s flow.
fn table_backend(c: &Controller<KernelDataplane>, service: &str, dg: &Datagram) -> Ipv4Addr {
    table_pick(c, service, &dg.flow_key()).0
}

#[test]
fn a_datagram_to_a_dsr_udp_service_is_handed_on_unchanged_and_records_its_flow_one_way() {
    let rig = Rig::build();
    let (c0, b0_mac) = (rig.c0, rig.b0_mac);
    rig.with_dataplane(UDP_DSR, |c| {
        for service in ["dns-l2", "dns-ipip", "dns-gue"] {
            let vip = vip_of(c, service);
            let mut backends = std::collections::BTreeSet::new();
            for (n, sport) in (44_000..44_012).enumerate() {
                let dg = query(vip, sport, n);
                let backend = table_backend(c, service, &dg);
                backends.insert(backend);
                let dp = c.dataplane();
                for attempt in ["first", "second"] {
                    let r = run_counted(dp, c0, &dg.bytes(), Reason::RedirectInterface);
                    assert_eq!(r.action, XDP_REDIRECT, "{service} port {sport}, {attempt}");
                    assert_eq!(
                        r.output,
                        expected(service, &dg, backend, b0_mac),
                        "{service} port {sport}, {attempt} datagram"
                    );
                }
                // The flow is recorded towards the backend, and no return entry: the
                // backend answers the client directly.
                let target = dp.flows.get(&dg.flow_key(), 0).expect("the flow entry");
                assert_eq!(target.backend, backend_id(c, service, backend));
                let reply = Datagram {
                    src: backend,
                    dst: dg.src,
                    sport: 53,
                    dport: sport,
                    ..Datagram::default()
                };
                assert!(
                    dp.return_flows.get(&reply.flow_key(), 0).is_err(),
                    "{service}: a DSR flow records no return entry"
                );
            }
            assert_eq!(backends.len(), 3, "{service}: the table spreads the flows");
        }
    });
}

#[test]
fn a_dsr_udp_flow_stays_on_its_backend_when_the_table_changes() {
    let rig = Rig::build();
    let (c0, b0_mac) = (rig.c0, rig.b0_mac);
    rig.with_dataplane(UDP_DSR, |c| {
        let vip = vip_of(c, "dns-gue");
        let flows: Vec<(Datagram, Ipv4Addr)> = (45_000..45_040)
            .map(|sport| {
                let dg = query(vip, sport, 0);
                let backend = table_backend(c, "dns-gue", &dg);
                let r = run_counted(c.dataplane(), c0, &dg.bytes(), Reason::RedirectInterface);
                assert_eq!(r.output, expected("dns-gue", &dg, backend, b0_mac));
                (dg, backend)
            })
            .collect();
        // 10.1.0.11 takes five times the weight: the table moves flows to it.
        let heavier = UDP_DSR.replacen(
            "mode: gue\n    backends:\n      - { address: 10.1.0.11, port: 53, zone: az-a }",
            "mode: gue\n    backends:\n      - { address: 10.1.0.11, port: 53, zone: az-a, weight: 5 }",
            1,
        );
        assert_ne!(heavier, UDP_DSR);
        let config = lb_userspace::model::config::parse(&heavier).expect("valid config");
        c.apply(&config).unwrap();
        let mut moved_by_table = 0;
        for (dg, was) in &flows {
            moved_by_table += usize::from(table_backend(c, "dns-gue", dg) != *was);
            let r = run_counted(c.dataplane(), c0, &dg.bytes(), Reason::RedirectInterface);
            assert_eq!(
                r.output,
                expected("dns-gue", dg, *was, b0_mac),
                "port {} stays on {was}",
                dg.sport
            );
        }
        assert!(moved_by_table > 0, "the new table places some flows elsewhere");
    });
}

#[test]
fn an_ipv6_datagram_to_a_dsr_udp_service_is_handed_on_unchanged() {
    let rig = Rig::build();
    let (c0, b0_mac) = (rig.c0, rig.b0_mac);
    rig.with_dataplane(UDP_DSR, |c| {
        for (service, last) in [
            ("dns6-l2", 0x130),
            ("dns6-ipip", 0x131),
            ("dns6-gue", 0x132),
        ] {
            let vip = std::net::Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, last);
            let mut backends = std::collections::BTreeSet::new();
            for (n, sport) in (46_000..46_012).enumerate() {
                let dg = Frame6 {
                    src_mac: CLIENT_MAC,
                    src: CLIENT6,
                    dst: vip,
                    sport,
                    dport: 53,
                    proto: PROTO_UDP,
                    payload: vec![0x5a; 1 + n],
                    ..Frame6::default()
                };
                let backend = super::ipv6::table_backend6(c, service, &dg.flow_key());
                backends.insert(backend);
                let frame = dg.bytes();
                let inner = &frame[ETH_LEN..];
                let want = match service {
                    "dns6-l2" => {
                        let mut want = frame.clone();
                        want[0..6].copy_from_slice(&backend_mac(backend.octets()[15]));
                        want[6..12].copy_from_slice(&b0_mac);
                        want
                    }
                    "dns6-ipip" => wrapped6(b0_mac, backend, 41, &[], inner),
                    _ => {
                        let udp = gue6_header(&dg.flow_key(), HASH_SEED, 6080, backend, inner);
                        wrapped6(b0_mac, backend, 17, &udp[..8], inner)
                    }
                };
                for attempt in ["first", "second"] {
                    let r = run_counted(c.dataplane(), c0, &frame, Reason::RedirectInterface);
                    assert_eq!(r.action, XDP_REDIRECT, "{service} port {sport}, {attempt}");
                    assert_eq!(r.output, want, "{service} port {sport}, {attempt} datagram");
                }
            }
            assert_eq!(backends.len(), 3, "{service}: the table spreads the flows");
        }
    });
}
