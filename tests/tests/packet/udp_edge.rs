//! Source rules of UDP services (docs/edge-protection.md, docs/udp.md): a datagram that
//! opens a flow gets the verdict of its source's most specific rule, counted on that rule
//! and under the reason; a flow opened before a deny rule keeps going; and a UDP
//! service's refusal is not remembered for the TCP service on the same VIP and port. The
//! same rules over IPv6 (`lb_edge6`), and a refused IPv6 datagram traced.
//! The real object, maps filled by the real controller, every verdict checked against
//! the reason counters.
use std::net::Ipv4Addr;

use lb_common::{
    counters::Reason,
    edge::{EDGE_ALLOW, EDGE_DENY},
};
use lb_tests::{frame::Frame, packet_exchange::run_counted, packet_rig::*, udp_frame::Datagram};
use lb_userspace::{
    control::tables::Controller, dataplane::Counters, kernel::KernelDataplane, model::config,
};

const DNS_VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 120);

/// `dns` (UDP) allows 10.10/16 but denies 10.10.5/24; `dns-tcp` on the same VIP and
/// port has no rules.
const CONFIG: &str = lb_tests::rig_config_with!(
    r#"  - name: dns
    vip: 10.0.0.120
    port: 53
    protocol: udp
    filter:
      allow: [10.10.0.0/16]
      deny: [10.10.5.0/24]
    backends:
      - { address: 10.1.0.11, port: 5353, zone: az-a }
  - name: dns-tcp
    vip: 10.0.0.120
    port: 53
    backends:
      - { address: 10.1.0.11, port: 8053, zone: az-a }
  - name: dns6
    vip: "2001:db8:100::120"
    port: 53
    protocol: udp
    filter:
      deny: ["2001:db8:10::/64"]
      allow: ["2001:db8:10::3/128"]
    backends:
      - { address: "2001:db8:1::11", port: 5353, zone: az-a }
"#
);

fn query(src: Ipv4Addr, sport: u16) -> Datagram {
    Datagram {
        src_mac: CLIENT_MAC,
        src,
        dst: DNS_VIP,
        sport,
        ..Datagram::default()
    }
}

/// The hit counter of `dns`'s rule for `net/len`, checking its verdict.
fn counter_of(c: &Controller<KernelDataplane>, net: [u8; 4], len: u8, verdict: u32) -> u32 {
    let net = Ipv4Addr::from(net).to_string();
    edge_rule_counter(c, "dns", (&net, len), verdict)
}

#[test]
fn a_datagram_opening_a_flow_gets_its_sources_rule_counted_on_it() {
    let rig = Rig::build();
    let c0 = rig.c0;
    rig.with_dataplane(CONFIG, |c| {
        let allowed = counter_of(c, [10, 10, 0, 0], 16, EDGE_ALLOW);
        let denied = counter_of(c, [10, 10, 5, 0], 24, EDGE_DENY);
        let dp = c.dataplane();
        let cases: [([u8; 4], Reason); 4] = [
            ([10, 10, 0, 2], Reason::RedirectInterface),
            ([10, 10, 5, 3], Reason::DropEdgeDenied),
            ([10, 10, 5, 4], Reason::DropEdgeDenied),
            ([192, 0, 2, 1], Reason::DropEdgeNotAllowed),
        ];
        for (i, (src, reason)) in cases.into_iter().enumerate() {
            let q = query(Ipv4Addr::from(src), 41_000 + i as u16);
            let r = run_counted(dp, c0, &q.bytes(), reason);
            let want = if reason == Reason::RedirectInterface {
                XDP_REDIRECT
            } else {
                XDP_DROP
            };
            assert_eq!(r.action, want, "datagram from {src:?}");
            if want == XDP_DROP {
                assert!(
                    dp.flows.get(&q.flow_key(), 0).is_err(),
                    "a refused datagram records no flow"
                );
            }
        }
        let hits = |counter| dp.edge_rule_hits(counter).unwrap();
        assert_eq!([hits(allowed), hits(denied)], [1, 2]);
        let id = service_id(c, "dns");
        assert_eq!(dp.edge_counters(id).unwrap().not_allowed, 1);

        // The TCP service on the same VIP and port has no rules: the denied source's SYNs
        // are placed, the second one too (nothing was remembered for the address).
        for sport in [42_000, 42_001] {
            let syn = Frame {
                src: Ipv4Addr::new(10, 10, 5, 3),
                dst: DNS_VIP,
                dport: 53,
                ..client_syn(sport)
            };
            let r = run_counted(dp, c0, &syn.bytes(), Reason::RedirectInterface);
            assert_eq!(r.action, XDP_REDIRECT, "SYN from the UDP-denied source");
        }
    });
}

#[test]
fn a_udp_flow_opened_before_a_deny_rule_keeps_going_and_a_new_one_is_refused() {
    let rig = Rig::build();
    let c0 = rig.c0;
    rig.with_dataplane(CONFIG, |c| {
        let q = query(CLIENT, 43_000);
        let r = run_counted(c.dataplane(), c0, &q.bytes(), Reason::RedirectInterface);
        assert_eq!(r.action, XDP_REDIRECT);
        let mut denied = config::parse(CONFIG).unwrap();
        let dns = denied
            .services
            .iter_mut()
            .find(|s| s.name == "dns")
            .unwrap();
        dns.filter.deny.push("10.10.0.2/32".parse().unwrap());
        c.apply(&denied).unwrap();
        let dp = c.dataplane();
        let again = run_counted(dp, c0, &q.bytes(), Reason::RedirectInterface);
        assert_eq!(
            (again.action, &again.output),
            (XDP_REDIRECT, &r.output),
            "the flow's next datagram follows its entry"
        );
        let other = query(CLIENT, 43_001);
        let r = run_counted(dp, c0, &other.bytes(), Reason::DropEdgeDenied);
        assert_eq!(r.action, XDP_DROP, "a new flow from the source is refused");
    });
}

#[test]
fn an_ipv6_datagram_opening_a_flow_gets_its_sources_rule_and_a_refusal_is_traced() {
    use lb_common::trace::{TRACE_DECISION_REFUSED, TRACE_NO_BACKEND};
    use lb_tests::frame6::{Frame6, PROTO_UDP};

    let rig = Rig::build();
    let c0 = rig.c0;
    rig.with_dataplane(CONFIG, |c| {
        let dns6 = service_id(c, "dns6");
        let mut trace = c.dataplane_mut().take_trace().expect("the trace maps");
        let mut ring = trace.take_ring().expect("the ring");
        trace.set_sample(dns6, 1).unwrap();
        let dp = c.dataplane();
        let query6 = |src: &str, sport: u16| Frame6 {
            src_mac: CLIENT_MAC,
            src: src.parse().unwrap(),
            dst: "2001:db8:100::120".parse().unwrap(),
            sport,
            dport: 53,
            proto: PROTO_UDP,
            payload: b"query".to_vec(),
            ..Frame6::default()
        };
        let denied = query6("2001:db8:10::2", 44_000);
        let r = run_counted(dp, c0, &denied.bytes(), Reason::DropEdgeDenied);
        assert_eq!(r.action, XDP_DROP, "the /64 is denied");
        assert!(
            dp.flows6.get(&denied.flow_key(), 0).is_err(),
            "no flow recorded"
        );
        let carved = query6("2001:db8:10::3", 44_001);
        let r = run_counted(dp, c0, &carved.bytes(), Reason::RedirectInterface);
        assert_eq!(r.action, XDP_REDIRECT, "the /128 is carved out of the deny");
        let records = super::trace::drain(&mut ring);
        let refused: Vec<_> = records
            .iter()
            .filter(|r| r.decision == TRACE_DECISION_REFUSED)
            .map(|r| (r.src_port, r.backend, r.reason, r.family))
            .collect();
        assert_eq!(
            refused,
            [(
                44_000u16.to_be(),
                TRACE_NO_BACKEND,
                Reason::DropEdgeDenied as u32,
                lb_common::trace::TRACE_FAMILY_IPV6
            )],
            "{records:?}"
        );
        assert_eq!(records.len(), 2, "the refused and the placed datagram");
    });
}
