//! UDP services through the real program (`lb_udp`, tail-called by `lb_xdp`): a
//! datagram's first placement by the table, its flow followed while the table changes, a
//! datagram without an entry placed where the first went, replies from the VIP, the zero
//! checksum kept, a TCP and a UDP service on one VIP:port. Every run checks the action,
//! every byte of the output, and the one reason counter that moved.
use std::net::Ipv4Addr;

use lb_common::{
    counters::Reason,
    flow::{FLOW_F_COUNTED, FLOW_F_DATAGRAM, FLOW_F_ESTABLISHED},
    trace::{
        TraceRecord, TRACE_DECISION_FLOW_HIT, TRACE_DECISION_NEW_FLOW, TRACE_DECISION_REFUSED,
        TRACE_DIR_TO_BACKEND, TRACE_NO_BACKEND,
    },
};
use lb_tests::{
    frame::{Frame, Mac},
    packet_exchange::run_counted,
    packet_rig::*,
    rig_config_with,
    udp_frame::{udp_checksums_valid, Datagram},
};
use lb_userspace::{
    control::{runtime::Runtime, tables::Controller},
    kernel::KernelDataplane,
    model::{
        config::{self, FlowTimeouts},
        plan::{BackendRef, Overlay},
    },
    ops::explain::explain_protocol,
};

const DNS_VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 120);

/// `dns` (UDP) and `dns-tcp` (TCP) on one VIP:port, with backend ports of their own so
/// that the output shows which service placed a packet.
const UDP_CONFIG: &str = rig_config_with!(
    lb_tests::rig_dns_service!(),
    r#"  - name: dns-tcp
    vip: 10.0.0.120
    port: 53
    backends:
      - { address: 10.1.0.11, port: 8053, zone: az-a }
"#
);

fn query(sport: u16) -> Datagram {
    Datagram {
        src_mac: CLIENT_MAC,
        dst: DNS_VIP,
        sport,
        ..Datagram::default()
    }
}

/// `dg` as backend `addr`:5353 must get it: out of `b0` (MAC `b0_mac`), one hop later.
fn as_to_backend(dg: &Datagram, addr: Ipv4Addr, b0_mac: Mac) -> Datagram {
    Datagram {
        dst_mac: backend_mac(addr.octets()[3]),
        src_mac: b0_mac,
        dst: addr,
        dport: 5353,
        ttl: dg.ttl - 1,
        ..dg.clone()
    }
}

/// Backend `addr`:5353's answer to `to`, as it arrives on `b0`.
fn answer(to: &Datagram, addr: Ipv4Addr) -> Datagram {
    Datagram {
        src_mac: backend_mac(addr.octets()[3]),
        src: addr,
        dst: to.src,
        sport: 5353,
        dport: to.sport,
        no_checksum: to.no_checksum,
        payload: b"answer".to_vec(),
        ..Datagram::default()
    }
}

/// `answer` as the client must get it: from the VIP's port 53, out of `c0`.
fn as_from_vip(answer: &Datagram, c0_mac: Mac) -> Datagram {
    Datagram {
        dst_mac: CLIENT_MAC,
        src_mac: c0_mac,
        src: DNS_VIP,
        sport: 53,
        ttl: answer.ttl - 1,
        ..answer.clone()
    }
}

/// The backend `dns`'s table gives `dg`, from userspace's copy of the table.
fn table_backend(c: &Controller<KernelDataplane>, dg: &Datagram) -> Ipv4Addr {
    let (addr, port) = table_pick(c, "dns", &dg.flow_key());
    assert_eq!(port, 5353);
    addr
}

#[track_caller]
fn expect(r: &RunResult, action: u32, want: &Datagram, what: &str) {
    let want = want.bytes();
    expect_run(r, action, &want, &what);
    assert!(udp_checksums_valid(&r.output), "{what}: checksums");
}

#[test]
fn a_first_datagram_goes_to_its_table_backend_records_its_flow_and_the_answer_comes_from_the_vip() {
    let rig = Rig::build();
    let (c0, b0, c0_mac, b0_mac) = (rig.c0, rig.b0, rig.c0_mac, rig.b0_mac);
    rig.with_dataplane(UDP_CONFIG, |c| {
        c.dataplane_mut().set_clock(500).unwrap();
        let q = query(41000);
        let backend = table_backend(c, &q);
        let dp = c.dataplane();
        let r = run_counted(dp, c0, &q.bytes(), Reason::RedirectInterface);
        expect(
            &r,
            XDP_REDIRECT,
            &as_to_backend(&q, backend, b0_mac),
            "query",
        );
        let flow = dp
            .flows
            .get(&q.flow_key(), 0)
            .expect("the flow is recorded");
        let id = backend_id(c, "dns", backend);
        assert_eq!((flow.backend, flow.service), (id, service_id(c, "dns")));
        assert_eq!(
            flow.state,
            FLOW_F_COUNTED | FLOW_F_ESTABLISHED | FLOW_F_DATAGRAM
        );
        assert_eq!(flow.last_seen, 500);
        assert_eq!(dp.active_flows(id).unwrap(), 1);

        let a = answer(&q, backend);
        let r = run_counted(dp, b0, &a.bytes(), Reason::RedirectInterface);
        expect(&r, XDP_REDIRECT, &as_from_vip(&a, c0_mac), "answer");
        let s = dp.service_counters(service_id(c, "dns")).unwrap();
        assert_eq!(
            (s.new_flows, s.packets_to_backend, s.packets_to_client),
            (1, 1, 1)
        );
        assert_eq!(s.bytes_to_backend, q.bytes().len() as u64);
        assert_eq!(s.bytes_to_client, a.bytes().len() as u64);
    });
}

#[test]
fn a_zero_checksum_stays_zero_both_ways() {
    let rig = Rig::build();
    let (c0, b0, c0_mac, b0_mac) = (rig.c0, rig.b0, rig.c0_mac, rig.b0_mac);
    rig.with_dataplane(UDP_CONFIG, |c| {
        let q = Datagram {
            no_checksum: true,
            ..query(41001)
        };
        let backend = table_backend(c, &q);
        let dp = c.dataplane();
        let r = run_counted(dp, c0, &q.bytes(), Reason::RedirectInterface);
        let want = as_to_backend(&q, backend, b0_mac);
        expect(&r, XDP_REDIRECT, &want, "query without a checksum");
        assert_eq!(r.output[14 + 20 + 6..14 + 20 + 8], [0, 0]);
        let a = answer(&q, backend);
        let r = run_counted(dp, b0, &a.bytes(), Reason::RedirectInterface);
        expect(
            &r,
            XDP_REDIRECT,
            &as_from_vip(&a, c0_mac),
            "answer without a checksum",
        );
        assert_eq!(r.output[14 + 20 + 6..14 + 20 + 8], [0, 0]);
    });
}

#[test]
fn a_checksum_that_updates_to_zero_is_sent_as_all_ones() {
    let rig = Rig::build();
    let (c0, b0_mac) = (rig.c0, rig.b0_mac);
    rig.with_dataplane(UDP_CONFIG, |c| {
        // A payload word chosen so that the rewritten datagram's checksum computes to
        // zero, which UDP must send as 0xffff (zero means none).
        let q = query(41002);
        let backend = table_backend(c, &q);
        let mut probe = as_to_backend(&q, backend, b0_mac);
        probe.payload = vec![0, 0];
        let bytes = probe.bytes();
        let sum = u16::from_be_bytes([bytes[14 + 20 + 6], bytes[14 + 20 + 7]]);
        // With the payload word w the sum S of the rest becomes S + w, and its checksum
        // ~(S + w): zero for w = ~S, which is the checksum with w = 0 (0 if that was
        // itself a computed zero, sent as 0xffff).
        let word = if sum == 0xffff { 0 } else { sum };
        let q = Datagram {
            payload: word.to_be_bytes().to_vec(),
            ..q
        };
        let want = Datagram {
            payload: q.payload.clone(),
            ..as_to_backend(&q, backend, b0_mac)
        };
        let want_bytes = want.bytes();
        assert_eq!(want_bytes[14 + 20 + 6..14 + 20 + 8], [0xff, 0xff]);
        let r = run_counted(c.dataplane(), c0, &q.bytes(), Reason::RedirectInterface);
        expect(&r, XDP_REDIRECT, &want, "query whose rewrite sums to zero");
    });
}

#[test]
fn later_datagrams_follow_their_flow_while_the_table_sends_new_ones_elsewhere() {
    let rig = Rig::build();
    let (c0, b0, c0_mac, b0_mac) = (rig.c0, rig.b0, rig.c0_mac, rig.b0_mac);
    rig.with_dataplane(UDP_CONFIG, |c| {
        let q = query(41003);
        let backend = table_backend(c, &q);
        run_counted(c.dataplane(), c0, &q.bytes(), Reason::RedirectInterface);
        // The flow's backend drains (ring weight 0): the table no longer has it, the
        // flow keeps it.
        let draining = Overlay {
            ring_weights: [(
                BackendRef {
                    service: "dns".into(),
                    address: backend.into(),
                    port: 5353,
                },
                0,
            )]
            .into(),
            ..Overlay::default()
        };
        let config = config::parse(UDP_CONFIG).unwrap();
        c.apply_with(&config, &draining).unwrap();
        assert_ne!(table_backend(c, &q), backend, "the table moved the tuple");
        let dp = c.dataplane();
        for i in 0..3u8 {
            let next = Datagram {
                payload: vec![i; 3],
                ..q.clone()
            };
            let r = run_counted(dp, c0, &next.bytes(), Reason::RedirectInterface);
            expect(
                &r,
                XDP_REDIRECT,
                &as_to_backend(&next, backend, b0_mac),
                "later datagram",
            );
            let a = answer(&next, backend);
            let r = run_counted(dp, b0, &a.bytes(), Reason::RedirectInterface);
            expect(&r, XDP_REDIRECT, &as_from_vip(&a, c0_mac), "its answer");
        }
        let s = dp.service_counters(service_id(c, "dns")).unwrap();
        assert_eq!((s.new_flows, s.packets_to_backend), (1, 4));
        // A new tuple goes by the new table.
        let other = query(41004);
        let moved = table_backend(c, &other);
        assert_ne!(moved, backend);
        let r = run_counted(dp, c0, &other.bytes(), Reason::RedirectInterface);
        expect(
            &r,
            XDP_REDIRECT,
            &as_to_backend(&other, moved, b0_mac),
            "new tuple",
        );
    });
}

#[test]
fn a_datagram_without_a_flow_entry_goes_where_its_flows_first_datagram_went() {
    let rig = Rig::build();
    let (c0, b0_mac) = (rig.c0, rig.b0_mac);
    // The node that saw the flow's first datagram, then one that did not (a restart with
    // fresh maps, an ECMP move): the same table sends both to one backend.
    let q = query(41005);
    let first = rig.with_dataplane(UDP_CONFIG, |c| {
        let r = run_counted(c.dataplane(), c0, &q.bytes(), Reason::RedirectInterface);
        Ipv4Addr::from(<[u8; 4]>::try_from(&r.output[14 + 16..14 + 20]).unwrap())
    });
    rig.with_dataplane(UDP_CONFIG, |c| {
        let later = Datagram {
            payload: b"second".to_vec(),
            ..q.clone()
        };
        let dp = c.dataplane();
        assert!(dp.flows.get(&later.flow_key(), 0).is_err(), "fresh maps");
        let r = run_counted(dp, c0, &later.bytes(), Reason::RedirectInterface);
        expect(
            &r,
            XDP_REDIRECT,
            &as_to_backend(&later, first, b0_mac),
            "no entry",
        );
        assert_eq!(first, table_backend(c, &later));
        // And the entry it recorded is followed from then on.
        assert_eq!(
            dp.flows.get(&later.flow_key(), 0).unwrap().backend,
            backend_id(c, "dns", first)
        );
    });
}

#[test]
fn a_tcp_and_a_udp_service_on_one_vip_and_port_each_take_their_own_protocol() {
    let rig = Rig::build();
    let (c0, b0_mac) = (rig.c0, rig.b0_mac);
    rig.with_dataplane(UDP_CONFIG, |c| {
        let dp = c.dataplane();
        let syn = Frame {
            dst: DNS_VIP,
            dport: 53,
            ..client_syn(41006)
        };
        let r = run_counted(dp, c0, &syn.bytes(), Reason::RedirectInterface);
        let b11 = Ipv4Addr::new(10, 1, 0, 11);
        let want = lb_tests::packet_rig::as_to_backend(&syn, (b11, 8053), b0_mac);
        expect_run(&r, XDP_REDIRECT, &want.bytes(), &"TCP to dns-tcp");
        let q = query(41006);
        let backend = table_backend(c, &q);
        let r = run_counted(dp, c0, &q.bytes(), Reason::RedirectInterface);
        expect(
            &r,
            XDP_REDIRECT,
            &as_to_backend(&q, backend, b0_mac),
            "UDP to dns",
        );
        let tcp = dp.service_counters(service_id(c, "dns-tcp")).unwrap();
        let udp = dp.service_counters(service_id(c, "dns")).unwrap();
        assert_eq!((tcp.packets_to_backend, udp.packets_to_backend), (1, 1));
    });
}

#[test]
fn datagrams_no_udp_service_claims_or_that_are_malformed_are_passed_or_dropped_and_counted() {
    let rig = Rig::build();
    let (c0, b0) = (rig.c0, rig.b0);
    rig.with_dataplane(UDP_CONFIG, |c| {
        let dp = c.dataplane();
        // To the VIP on a port no UDP service has, and to web's VIP:port, which is TCP.
        for dg in [
            Datagram {
                dport: 54,
                ..query(41007)
            },
            Datagram {
                dst: VIP,
                dport: 80,
                ..query(41007)
            },
        ] {
            let r = run_counted(dp, c0, &dg.bytes(), Reason::PassNotTcp);
            expect_run(&r, XDP_PASS, &dg.bytes(), &"unlisted");
        }
        // A backend's datagram to a client it has no flow with.
        let stray = answer(&query(41008), Ipv4Addr::new(10, 1, 0, 11));
        let r = run_counted(dp, b0, &stray.bytes(), Reason::PassNotTcp);
        expect_run(&r, XDP_PASS, &stray.bytes(), &"stray answer");
        // A UDP length running past the IP packet, or under the header's 8 bytes.
        for len in [200u16, 7] {
            let mut bad = query(41009).bytes();
            bad[14 + 20 + 4..14 + 20 + 6].copy_from_slice(&len.to_be_bytes());
            let r = run_counted(dp, c0, &bad, Reason::DropMalformedUdp);
            assert_eq!(r.action, XDP_DROP, "length {len}");
        }
        // Nothing was recorded for any of them.
        let s = dp.service_counters(service_id(c, "dns")).unwrap();
        assert_eq!((s.new_flows, s.packets_to_backend), (0, 0));
    });
}

#[test]
fn a_datagram_whose_ttl_would_expire_is_left_to_the_kernel() {
    let rig = Rig::build();
    let c0 = rig.c0;
    rig.with_dataplane(UDP_CONFIG, |c| {
        let q = Datagram {
            ttl: 1,
            ..query(41010)
        };
        let r = run_counted(c.dataplane(), c0, &q.bytes(), Reason::PassTtlExpired);
        expect_run(&r, XDP_PASS, &q.bytes(), &"ttl 1");
    });
}

#[test]
fn a_udp_flow_is_removed_both_ways_once_idle_for_the_udp_timeout_and_kept_while_used() {
    let rig = Rig::build();
    let c0 = rig.c0;
    rig.with_dataplane(UDP_CONFIG, |c| {
        let t = FlowTimeouts::default();
        let q = query(41011);
        let backend = table_backend(c, &q);
        let dp = c.dataplane_mut();
        dp.set_clock(1000).unwrap();
        run_once(dp.program(), c0, &q.bytes());
        let reply_key = answer(&q, backend).flow_key();
        assert!(dp.return_flows.get(&reply_key, 0).is_ok());
        // Used at 1020: still there 30 s later, gone after 31.
        dp.set_clock(1020).unwrap();
        run_once(dp.program(), c0, &q.bytes());
        assert_eq!(dp.expire_flows(1020 + 30, &t).unwrap(), 0);
        assert_eq!(dp.expire_flows(1020 + 31, &t).unwrap(), 1);
        assert!(dp.flows.get(&q.flow_key(), 0).is_err());
        assert!(dp.return_flows.get(&reply_key, 0).is_err());
    });
}

#[test]
fn a_traced_udp_service_gets_one_exact_record_per_datagram() {
    let rig = Rig::build();
    let c0 = rig.c0;
    rig.with_dataplane(UDP_CONFIG, |c| {
        let dns = service_id(c, "dns");
        let mut trace = c.dataplane_mut().take_trace().expect("the trace maps");
        let mut ring = trace.take_ring().expect("the ring");
        trace.set_sample(dns, 1).unwrap();
        let q = query(41012);
        let backend = backend_id(c, "dns", table_backend(c, &q));
        let dp = c.dataplane();
        run_counted(dp, c0, &q.bytes(), Reason::RedirectInterface);
        run_counted(dp, c0, &q.bytes(), Reason::RedirectInterface);
        let mut bad = query(41013).bytes();
        bad[14 + 20 + 4..14 + 20 + 6].copy_from_slice(&7u16.to_be_bytes());
        run_counted(dp, c0, &bad, Reason::DropMalformedUdp);
        let record = |dg: &Datagram, backend, decision, action, reason: Reason| {
            let key = dg.flow_key();
            TraceRecord {
                ns: 0,
                service: dns,
                backend,
                src_addr: [key.src_addr, 0, 0, 0],
                dst_addr: [key.dst_addr, 0, 0, 0],
                src_port: key.src_port,
                dst_port: key.dst_port,
                proto: 17,
                tcp_flags: 0,
                direction: TRACE_DIR_TO_BACKEND,
                decision,
                action,
                reason: reason as u32,
                family: lb_common::trace::TRACE_FAMILY_IPV4,
                _pad: 0,
            }
        };
        let redirect = Reason::RedirectInterface;
        assert_eq!(
            super::trace::drain(&mut ring),
            vec![
                record(&q, backend, TRACE_DECISION_NEW_FLOW, XDP_REDIRECT, redirect),
                record(&q, backend, TRACE_DECISION_FLOW_HIT, XDP_REDIRECT, redirect),
                record(
                    &query(41013),
                    TRACE_NO_BACKEND,
                    TRACE_DECISION_REFUSED,
                    XDP_DROP,
                    Reason::DropMalformedUdp
                ),
            ]
        );
    });
}

#[test]
fn explain_names_the_backend_each_datagram_of_a_udp_tuple_takes() {
    let rig = Rig::build();
    let (c0, b0_mac) = (rig.c0, rig.b0_mac);
    let ns = rig.ns.clone();
    lb_tests::netns::run_in(&ns, move || {
        let config = config::parse(UDP_CONFIG).unwrap();
        let mut dp = KernelDataplane::load(&config, None).expect("loading the XDP object");
        dp.add_egress(rig.c0).unwrap();
        dp.add_egress(rig.b0).unwrap();
        let controller = Controller::new(dp, config.cluster.ring_size);
        let now = std::time::Instant::now();
        let (rt, _) = Runtime::start(config, controller, now).expect("start");
        let q = query(41014);
        let (client, vip) = (
            std::net::SocketAddrV4::new(q.src, q.sport),
            std::net::SocketAddrV4::new(q.dst, q.dport),
        );
        let ask = |rt: &Runtime<KernelDataplane>| {
            explain_protocol(rt, client, vip, config::Protocol::Udp, now).expect("explain")
        };
        let named = |v: &lb_userspace::ops::explain::ExplainView| {
            let b = v.new_connection.backend.as_ref().expect("a backend");
            let at: std::net::SocketAddrV4 = b.address.parse().unwrap();
            *at.ip()
        };
        let v = ask(&rt);
        assert_eq!(
            (v.new_connection.by.as_str(), v.flow_entry.is_none()),
            ("table", true)
        );
        let first = named(&v);
        let dp = rt.controller().dataplane();
        let r = run_counted(dp, c0, &q.bytes(), Reason::RedirectInterface);
        expect(
            &r,
            XDP_REDIRECT,
            &as_to_backend(&q, first, b0_mac),
            "first datagram",
        );
        let v = ask(&rt);
        assert_eq!(
            (v.new_connection.by.as_str(), named(&v)),
            ("flow_entry", first)
        );
    });
}
