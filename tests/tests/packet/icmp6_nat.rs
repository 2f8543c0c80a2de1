//! Packet tests of ICMPv6 errors about NAT66 flows (docs/ipv6.md, ICMPv6 errors), as
//! `icmp_nat` tests IPv4's: an error to the VIP about a backend's reply goes to that
//! backend, and an error from a backend about a client's packet goes to that client, each
//! translated as the flow's own packets are. The oracle is the error the other end would
//! have got without NAT, built from scratch by `icmp6_frame` (its checksum computed over
//! the IPv6 pseudo-header, the quoted packet's by `frame6`), so an incremental update
//! that is off by one bit in either checksum fails.
use std::net::Ipv6Addr;

use lb_common::counters::Reason;
use lb_tests::{
    caps,
    frame::{Mac, PSH_ACK, SYN},
    frame6::{Frame6, IP6_LEN, PROTO_UDP, TCP_LEN, UDP_LEN},
    icmp6_frame::Icmp6Error,
    packet_exchange::run_counted,
    packet_rig::*,
    rig_config_with,
};
use lb_userspace::dataplane::Dataplane;

use crate::{
    ipv6::{backend_id6, table_backend6},
    stateless_syn6::handshake6,
};

pub const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x100);
/// `web6` (TCP) and `dns6` (UDP) on one IPv6 VIP, on the rig's IPv6 backends.
pub const CONFIG: &str =
    rig_config_with!(lb_tests::rig_web6_service!(), lb_tests::rig_dns6_service!());
/// A router on the clients' side.
const ROUTER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x10, 0, 0, 0, 0, 0xfe);
const ROUTER_MAC: Mac = [0x02, 0, 0, 0, 0x0a, 0xfe];
/// The MAC of `c0` a router's frame is addressed to (any: the data path rewrites it).
const TO_C0: Mac = [0x02, 0, 0, 0, 0xee, 0x01];

/// Where a frame the data path sent on goes: its IPv6 destination.
pub fn dst6(frame: &[u8]) -> Ipv6Addr {
    Ipv6Addr::from(<[u8; 16]>::try_from(&frame[14 + 24..14 + 40]).unwrap())
}

/// The client's TCP segment to `web6` from `sport`.
fn client_tcp(sport: u16, flags: u8) -> Frame6 {
    Frame6 {
        src_mac: CLIENT_MAC,
        src: CLIENT6,
        dst: VIP6,
        sport,
        flags,
        ..Frame6::default()
    }
}

/// The client's query to `dns6` from `sport`.
fn query(sport: u16) -> Frame6 {
    Frame6 {
        src_mac: CLIENT_MAC,
        src: CLIENT6,
        dst: VIP6,
        sport,
        dport: 53,
        proto: PROTO_UDP,
        payload: b"query".to_vec(),
        ..Frame6::default()
    }
}

/// `web6`'s reply from `backend`:8080 to the client's port `sport`, as the backend sent
/// it (`from_vip`: as this node sent it on, from the VIP's port 80).
fn tcp_reply(backend: Ipv6Addr, sport: u16, from_vip: bool) -> Frame6 {
    let (src, port) = if from_vip {
        (VIP6, 80)
    } else {
        (backend, 8080)
    };
    Frame6 {
        src,
        dst: CLIENT6,
        sport: port,
        dport: sport,
        flags: PSH_ACK,
        seq: 7_000_000,
        ack: 1001,
        payload: vec![0x5a; 1200],
        ..Frame6::default()
    }
}

/// `dns6`'s answer from `src`:`sport` to the client's port `dport`.
fn udp_answer(src: Ipv6Addr, sport: u16, dport: u16) -> Frame6 {
    Frame6 {
        src,
        dst: CLIENT6,
        sport,
        dport,
        proto: PROTO_UDP,
        payload: b"answer".to_vec(),
        ..Frame6::default()
    }
}

/// An error of `kind` (type, code) with `rest` from [`ROUTER6`] to `to` about `about`
/// (an Ethernet frame), quoting its IPv6 header and `l4` bytes after it, as it arrives
/// on `c0`.
fn from_router(to: Ipv6Addr, kind: (u8, u8), rest: [u8; 4], about: &[u8], l4: usize) -> Icmp6Error {
    Icmp6Error {
        dst_mac: TO_C0,
        src_mac: ROUTER_MAC,
        from: ROUTER6,
        to,
        hop_limit: 64,
        icmp_type: kind.0,
        code: kind.1,
        rest,
        quoted: Icmp6Error::quote(about, IP6_LEN + l4),
    }
}

/// Errors to the VIP about replies of TCP flows and of a UDP flow go to the backend the
/// flow is on (its flow entry's, or the table's for a tuple without one), as that
/// backend's own reply would have been reported: outer destination and quoted source
/// translated, and the quoted TCP or UDP checksum with them where the error quotes it
/// (the whole header), or only the ports where it does not (8 bytes of TCP). Each of
/// RFC 4443's four error types is translated.
#[test]
fn an_error_to_the_vip_about_a_reply_goes_to_the_backend_as_if_about_its_own_reply() {
    let rig = Rig::build();
    let (c0, rig_b0, b0_mac) = (rig.c0, rig.b0, rig.b0_mac);
    // Loaded with only the capabilities lbd serves with: the verifier accepts the
    // translation without CAP_PERFMON's leniency.
    rig.with_dataplane_loaded_with(CONFIG, Some(&caps::SERVING), |c| {
        let dp = c.dataplane();
        let too_big = ((2, 0), [0, 0, 0x05, 0x00]);
        let time_exceeded = ((3, 0), [0; 4]);
        let parameter_problem = ((4, 0), [0, 0, 0, 6]);
        for (sport, l4, (kind, rest), recorded) in [
            (47_000, TCP_LEN + 8, too_big, true),
            (47_001, 8, time_exceeded, true),
            (47_002, TCP_LEN, parameter_problem, false),
        ] {
            let syn = client_tcp(sport, SYN);
            let backend = if recorded {
                handshake6(dp, c0, rig_b0, &syn)
            } else {
                table_backend6(c, "web6", &syn.flow_key())
            };
            let sent = tcp_reply(backend, sport, true).bytes();
            let error = from_router(VIP6, kind, rest, &sent, l4);
            let r = run_counted(dp, c0, &error.bytes(), Reason::RedirectInterface);
            let original = tcp_reply(backend, sport, false).bytes();
            let expected = Icmp6Error {
                dst_mac: backend_mac(backend.octets()[15]),
                src_mac: b0_mac,
                to: backend,
                hop_limit: 63,
                quoted: Icmp6Error::quote(&original, IP6_LEN + l4),
                ..error.clone()
            };
            let what = format!(
                "TCP, type {}, {l4} bytes quoted, recorded {recorded}",
                kind.0
            );
            expect_run(&r, XDP_REDIRECT, &expected.bytes(), &what);
        }

        // UDP: a query records the flow, then an address unreachable about its answer.
        let q = query(41_500);
        let r = run_counted(dp, c0, &q.bytes(), Reason::RedirectInterface);
        let backend = dst6(&r.output);
        let answered = udp_answer(VIP6, 53, 41_500).bytes();
        let l4 = UDP_LEN + 6;
        let error = from_router(VIP6, (1, 3), [0; 4], &answered, l4);
        let r = run_counted(dp, c0, &error.bytes(), Reason::RedirectInterface);
        let expected = Icmp6Error {
            dst_mac: backend_mac(backend.octets()[15]),
            src_mac: b0_mac,
            to: backend,
            hop_limit: 63,
            quoted: Icmp6Error::quote(&udp_answer(backend, 5353, 41_500).bytes(), IP6_LEN + l4),
            ..error.clone()
        };
        expect_run(&r, XDP_REDIRECT, &expected.bytes(), &"UDP");
    });
}

/// A backend's port unreachable about a client's datagram, and its destination
/// unreachable about a client's TCP segment, reach the client as if the VIP had sent
/// them: outer source and quoted destination translated back, both checksums with them.
/// The datagram's port unreachable is counted on the backend against the flow placed on
/// it (a UDP service's passive health signal); the segment's is not.
#[test]
fn an_error_from_a_backend_about_a_clients_packet_reaches_the_client_from_the_vip() {
    let rig = Rig::build();
    let (c0, b0, c0_mac, b0_mac) = (rig.c0, rig.b0, rig.c0_mac, rig.b0_mac);
    // Loaded with only the capabilities lbd serves with: the verifier accepts the
    // translation without CAP_PERFMON's leniency.
    rig.with_dataplane_loaded_with(CONFIG, Some(&caps::SERVING), |c| {
        let dp = c.dataplane();
        let q = query(41_600);
        let r = run_counted(dp, c0, &q.bytes(), Reason::RedirectInterface);
        let at_backend = r.output.clone();
        let backend = dst6(&at_backend);
        let whole = UDP_LEN + q.payload.len();
        let error = from_backend(backend, b0_mac, (1, 4), &at_backend, whole);
        let r = run_counted(dp, b0, &error.bytes(), Reason::RedirectInterface);
        // As the backend got it: one hop on, to the VIP's port.
        let as_sent = Frame6 {
            hop_limit: 63,
            ..q.clone()
        };
        let expected = Icmp6Error {
            dst_mac: CLIENT_MAC,
            src_mac: c0_mac,
            from: VIP6,
            hop_limit: 63,
            quoted: Icmp6Error::quote(&as_sent.bytes(), IP6_LEN + whole),
            ..error.clone()
        };
        expect_run(&r, XDP_REDIRECT, &expected.bytes(), &"port unreachable");
        let signals = dp.backend_signals(backend_id6(c, "dns6", backend)).unwrap();
        assert_eq!((signals.datagram_flows, signals.unreachables), (1, 1));

        // TCP: the handshake records the flow; then the backend's port unreachable about
        // the client's next segment (its whole TCP header quoted).
        let syn = client_tcp(47_100, SYN);
        let tcp_backend = handshake6(dp, c0, b0, &syn);
        let data = Frame6 {
            flags: PSH_ACK,
            seq: 1001,
            payload: vec![0x33; 1200],
            ..syn.clone()
        };
        let r = run_counted(dp, c0, &data.bytes(), Reason::RedirectInterface);
        let error = from_backend(tcp_backend, b0_mac, (1, 4), &r.output, TCP_LEN);
        let r = run_counted(dp, b0, &error.bytes(), Reason::RedirectInterface);
        let as_sent = Frame6 {
            hop_limit: 63,
            ..data.clone()
        };
        let expected = Icmp6Error {
            dst_mac: CLIENT_MAC,
            src_mac: c0_mac,
            from: VIP6,
            hop_limit: 63,
            quoted: Icmp6Error::quote(&as_sent.bytes(), IP6_LEN + TCP_LEN),
            ..error.clone()
        };
        expect_run(&r, XDP_REDIRECT, &expected.bytes(), &"TCP port unreachable");
        let signals = dp
            .backend_signals(backend_id6(c, "web6", tcp_backend))
            .unwrap();
        assert_eq!(
            (signals.datagram_flows, signals.unreachables),
            (0, 0),
            "TCP"
        );
    });
}

/// The error `backend` sends (into `b0`, from its MAC) about `about` (as it got it),
/// quoting its IPv6 header and `l4` bytes after it.
fn from_backend(
    backend: Ipv6Addr,
    b0_mac: Mac,
    kind: (u8, u8),
    about: &[u8],
    l4: usize,
) -> Icmp6Error {
    Icmp6Error {
        dst_mac: b0_mac,
        src_mac: backend_mac(backend.octets()[15]),
        from: backend,
        to: CLIENT6,
        hop_limit: 64,
        icmp_type: kind.0,
        code: kind.1,
        rest: [0; 4],
        quoted: Icmp6Error::quote(about, IP6_LEN + l4),
    }
}

/// What is not an error about a flow of ours is the kernel's, untouched and counted as
/// before: an echo request to the VIP; an error about a tuple no flow or service has; one
/// about a reply that did not leave from the VIP it came back to; one relayed by a host
/// other than the backend the quoted packet went to; one quoting ICMPv6; and one whose
/// hop limit would expire.
#[test]
fn icmpv6_that_is_no_error_about_a_flow_of_ours_passes_untouched() {
    let rig = Rig::build();
    let (c0, b0, b0_mac) = (rig.c0, rig.b0, rig.b0_mac);
    rig.with_dataplane(CONFIG, |c| {
        let dp = c.dataplane();
        let q = query(41_700);
        let r = run_counted(dp, c0, &q.bytes(), Reason::RedirectInterface);
        let at_backend = r.output.clone();
        let backend = dst6(&at_backend);
        let answered = udp_answer(VIP6, 53, 41_700).bytes();
        let mut cases: Vec<(&str, u32, Vec<u8>, Reason)> = Vec::new();
        let echo = Icmp6Error {
            icmp_type: 128,
            rest: [0x12, 0x34, 0, 1],
            quoted: b"ping".to_vec(),
            ..from_router(VIP6, (128, 0), [0; 4], &answered, 0)
        };
        cases.push((
            "echo request to the VIP",
            c0,
            echo.bytes(),
            Reason::PassNotTcp,
        ));
        let unserved = udp_answer(VIP6, 54, 41_700).bytes();
        cases.push((
            "about a port no service has",
            c0,
            from_router(VIP6, (1, 3), [0; 4], &unserved, 8).bytes(),
            Reason::PassNotTcp,
        ));
        let elsewhere = udp_answer(ROUTER6, 53, 41_700).bytes();
        cases.push((
            "about a reply from another address",
            c0,
            from_router(VIP6, (1, 3), [0; 4], &elsewhere, 8).bytes(),
            Reason::PassNotTcp,
        ));
        let quoting_icmp = {
            let mut about = answered.clone();
            about[14 + 6] = 58;
            from_router(VIP6, (1, 3), [0; 4], &about, 8).bytes()
        };
        cases.push(("quoting ICMPv6", c0, quoting_icmp, Reason::PassNotTcp));
        let expiring = Icmp6Error {
            hop_limit: 1,
            ..from_router(VIP6, (1, 3), [0; 4], &answered, 8)
        };
        cases.push(("hop limit 1", c0, expiring.bytes(), Reason::PassTtlExpired));
        let no_flow = {
            let mut other = at_backend.clone();
            other[14 + 40..14 + 42].copy_from_slice(&41_701u16.to_be_bytes());
            from_backend(backend, b0_mac, (1, 4), &other, 8).bytes()
        };
        cases.push(("from the backend, no flow", b0, no_flow, Reason::PassNotTcp));
        let another = [11, 12, 13]
            .map(backend6)
            .into_iter()
            .find(|a| *a != backend)
            .unwrap();
        let relayed = Icmp6Error {
            from: another,
            ..from_backend(backend, b0_mac, (1, 4), &at_backend, 8)
        };
        cases.push((
            "not from the backend",
            b0,
            relayed.bytes(),
            Reason::PassNotTcp,
        ));
        for (what, ingress, frame, reason) in cases {
            let r = run_counted(dp, ingress, &frame, reason);
            expect_run(&r, XDP_PASS, &frame, &what);
        }
        let signals = dp.backend_signals(backend_id6(c, "dns6", backend)).unwrap();
        assert_eq!(signals.unreachables, 0, "nothing counted");
    });
}
