//! Packet tests of ICMP errors about NAT flows (docs/architecture.md, ICMP errors): an
//! error to the VIP about a backend's reply goes to that backend, and an error from a
//! backend about a client's packet goes to that client, each translated as the flow's own
//! packets are. The oracle is the error the other end would have got without NAT, built
//! from scratch (every checksum computed over the bytes), so an incremental update that
//! is off by one bit in any checksum fails.
use std::net::Ipv4Addr;

use lb_common::counters::Reason;
use lb_tests::{
    frame::{Frame, IP_LEN, PSH_ACK, TCP_LEN},
    icmp_frame::IcmpError,
    packet_exchange::run_counted,
    packet_rig::*,
    rig_config_with,
    udp_frame::Datagram,
};
use lb_userspace::dataplane::Dataplane;

const DNS_VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 120);
const CONFIG: &str = rig_config_with!(lb_tests::rig_dns_service!());
/// A router on the clients' side.
const ROUTER: Ipv4Addr = Ipv4Addr::new(10, 10, 0, 254);
const ROUTER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x0a, 0xfe];

/// `web`'s reply from `backend`:8080 to the client's port `sport`, as the backend sent
/// it (`from_vip`: as this node sent it on, from the VIP's port 80).
fn reply(backend: Ipv4Addr, sport: u16, from_vip: bool) -> Frame {
    let (src, port) = if from_vip { (VIP, 80) } else { (backend, 8080) };
    Frame {
        src,
        dst: CLIENT,
        sport: port,
        dport: sport,
        flags: PSH_ACK,
        seq: 7_000_000,
        ack: 1001,
        payload: vec![0x5a; 1400],
        ..Frame::default()
    }
}

/// A fragmentation needed from [`ROUTER`] to `to` about `about` (an Ethernet frame),
/// quoting its IP header and `l4` bytes after it, as it arrives on `c0` (`dst_mac`).
fn frag_needed(to: Ipv4Addr, about: &[u8], l4: usize, dst_mac: [u8; 6]) -> IcmpError {
    IcmpError {
        dst_mac,
        src_mac: ROUTER_MAC,
        from: ROUTER,
        to,
        ttl: 63,
        icmp_type: 3,
        code: 4,
        rest: [0, 0, 0x05, 0x00],
        quoted: IcmpError::quote(about, IP_LEN + l4),
    }
}

/// An error to the VIP about a reply of a TCP flow and of a UDP flow goes to the
/// backend the flow is on, as that backend's own reply would have been reported: outer
/// destination and quoted source translated, and the quoted TCP or UDP checksum with
/// them where the error quotes it (the whole TCP header; 8 bytes of UDP), or only the
/// ports where it does not (8 bytes of TCP).
#[test]
fn an_error_to_the_vip_about_a_reply_goes_to_the_backend_as_if_about_its_own_reply() {
    let rig = Rig::build();
    let (c0, b0_mac) = (rig.c0, rig.b0_mac);
    rig.with_dataplane(CONFIG, |c| {
        let dp = c.dataplane();
        for (sport, l4) in [(47_000, TCP_LEN + 8), (47_001, 8)] {
            let backend = table_backend(c, "web", sport);
            let sent = reply(backend, sport, true).bytes();
            let error = frag_needed(VIP, &sent, l4, [0x02, 0, 0, 0, 0xee, 0x01]);
            let r = run_counted(dp, c0, &error.bytes(), Reason::RedirectInterface);
            let original = reply(backend, sport, false).bytes();
            let expected = IcmpError {
                dst_mac: backend_mac(backend.octets()[3]),
                src_mac: b0_mac,
                to: backend,
                ttl: 62,
                quoted: IcmpError::quote(&original, IP_LEN + l4),
                ..error.clone()
            };
            let what = format!("TCP, {l4} bytes quoted");
            expect_run(&r, XDP_REDIRECT, &expected.bytes(), &what);
        }

        // UDP: a datagram's flow is recorded, then an error about its answer.
        let query = Datagram {
            src_mac: CLIENT_MAC,
            dst: DNS_VIP,
            sport: 41_500,
            ..Datagram::default()
        };
        let r = run_counted(dp, c0, &query.bytes(), Reason::RedirectInterface);
        let backend = lb_tests::frame::dst_ip(&r.output);
        let answer = |src: Ipv4Addr, sport: u16| Datagram {
            src,
            dst: CLIENT,
            sport,
            dport: 41_500,
            payload: b"answer".to_vec(),
            ..Datagram::default()
        };
        let error = frag_needed(
            DNS_VIP,
            &answer(DNS_VIP, 53).bytes(),
            8,
            [0x02, 0, 0, 0, 0xee, 0x01],
        );
        let r = run_counted(dp, c0, &error.bytes(), Reason::RedirectInterface);
        let expected = IcmpError {
            dst_mac: backend_mac(backend.octets()[3]),
            src_mac: b0_mac,
            to: backend,
            ttl: 62,
            quoted: IcmpError::quote(&answer(backend, 5353).bytes(), IP_LEN + 8),
            ..error.clone()
        };
        expect_run(&r, XDP_REDIRECT, &expected.bytes(), &"UDP");
    });
}

/// A backend's port unreachable about a client's datagram, and its fragmentation needed
/// about a client's TCP segment, reach the client as if the VIP had sent them: outer
/// source and quoted destination translated back, every checksum with them. The port
/// unreachable is counted on the backend (a UDP service's passive health signal). An error
/// from a backend about a tuple it has no flow on, or about a packet another host got,
/// is the kernel's.
#[test]
fn an_error_from_a_backend_about_a_clients_packet_reaches_the_client_from_the_vip() {
    let rig = Rig::build();
    let (c0, b0, c0_mac, b0_mac) = (rig.c0, rig.b0, rig.c0_mac, rig.b0_mac);
    rig.with_dataplane(CONFIG, |c| {
        let dp = c.dataplane();
        let query = Datagram {
            src_mac: CLIENT_MAC,
            dst: DNS_VIP,
            sport: 41_600,
            payload: b"query".to_vec(),
            ..Datagram::default()
        };
        let r = run_counted(dp, c0, &query.bytes(), Reason::RedirectInterface);
        let at_backend = r.output.clone();
        let backend = lb_tests::frame::dst_ip(&at_backend);
        let unreachable = |quoted: Vec<u8>, from: Ipv4Addr| IcmpError {
            dst_mac: b0_mac,
            src_mac: backend_mac(backend.octets()[3]),
            from,
            to: CLIENT,
            ttl: 64,
            icmp_type: 3,
            code: 3,
            rest: [0; 4],
            quoted,
        };
        let error = unreachable(IcmpError::quote(&at_backend, IP_LEN + 8 + 5), backend);
        let r = run_counted(dp, b0, &error.bytes(), Reason::RedirectInterface);
        // As the backend got it: one hop on, to the VIP's port.
        let as_sent = Datagram {
            ttl: 63,
            ..query.clone()
        }
        .bytes();
        let expected = IcmpError {
            dst_mac: CLIENT_MAC,
            src_mac: c0_mac,
            from: DNS_VIP,
            ttl: 63,
            quoted: IcmpError::quote(&as_sent, IP_LEN + 8 + 5),
            ..error.clone()
        };
        expect_run(&r, XDP_REDIRECT, &expected.bytes(), &"port unreachable");
        // A UDP service's passive health signal: one flow placed, one refused.
        let id = backend_id(c, "dns", backend);
        let signals = dp.backend_signals(id).unwrap();
        assert_eq!((signals.datagram_flows, signals.unreachables), (1, 1));

        // TCP: a handshake records the flow; then the backend's fragmentation needed
        // about the client's segment (its whole TCP header quoted).
        let syn = client_syn(47_100);
        let r = run_counted(dp, c0, &syn.bytes(), Reason::RedirectInterface);
        let tcp_backend = lb_tests::frame::dst_ip(&r.output);
        syn_ack_passes(dp, b0, &syn, tcp_backend);
        let ack = ack_of(&syn);
        run_counted(dp, c0, &ack.bytes(), Reason::RedirectInterface);
        let data = Frame {
            flags: PSH_ACK,
            payload: vec![0x33; 1400],
            ..ack.clone()
        };
        let r = run_counted(dp, c0, &data.bytes(), Reason::RedirectInterface);
        let error = IcmpError {
            src_mac: backend_mac(tcp_backend.octets()[3]),
            from: tcp_backend,
            code: 4,
            rest: [0, 0, 0x05, 0x00],
            quoted: IcmpError::quote(&r.output, IP_LEN + TCP_LEN),
            ..unreachable(Vec::new(), tcp_backend)
        };
        let r = run_counted(dp, b0, &error.bytes(), Reason::RedirectInterface);
        let expected = IcmpError {
            dst_mac: CLIENT_MAC,
            src_mac: c0_mac,
            from: VIP,
            ttl: 63,
            quoted: IcmpError::quote(
                &Frame {
                    ttl: 63,
                    ..data.clone()
                }
                .bytes(),
                IP_LEN + TCP_LEN,
            ),
            ..error.clone()
        };
        expect_run(
            &r,
            XDP_REDIRECT,
            &expected.bytes(),
            &"TCP fragmentation needed",
        );
        let id = backend_id(c, "web", tcp_backend);
        let signals = dp.backend_signals(id).unwrap();
        assert_eq!(
            (signals.datagram_flows, signals.unreachables),
            (0, 0),
            "TCP"
        );

        // No flow on the quoted tuple; an outer source that is not the quoted
        // destination: passed untouched.
        let other = Datagram {
            sport: 41_601,
            ..query.clone()
        };
        let stray = unreachable(
            IcmpError::quote(
                &Datagram {
                    dst: backend,
                    dport: 5353,
                    ..other
                }
                .bytes(),
                28,
            ),
            backend,
        );
        let r = run_counted(dp, b0, &stray.bytes(), Reason::PassNotTcp);
        expect_run(&r, XDP_PASS, &stray.bytes(), &"no flow");
        let another = [11, 12, 13]
            .map(|host| Ipv4Addr::new(10, 1, 0, host))
            .into_iter()
            .find(|a| *a != backend)
            .unwrap();
        let relayed = unreachable(IcmpError::quote(&at_backend, IP_LEN + 8), another);
        let r = run_counted(dp, b0, &relayed.bytes(), Reason::PassNotTcp);
        expect_run(&r, XDP_PASS, &relayed.bytes(), &"not from the backend");
    });
}
