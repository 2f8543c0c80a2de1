//! Direct server return for IPv6 services through the real object (`lb_v6` hands a
//! placed packet to `lb_dsr6`): `dsr_l2` changes only the MACs (hop limit, addresses,
//! ports, checksum as the client sent them), and a backend reached through a gateway is
//! refused per packet; `ipip` and `gue` put exact outer IPv6 (and UDP, its checksum
//! summed from scratch) headers in front (`lb_tests::dsr_frames6`); a packet too big once
//! wrapped is answered with an exact ICMPv6 packet too big; an ICMPv6 error to the VIP
//! about a backend's reply goes, wrapped, to the backend of its flow. Every run checks the
//! action, every output byte and the one reason counter that moved.
use std::net::Ipv6Addr;

use lb_common::counters::Reason;
use lb_tests::{
    dsr_frames6::{gue6_header, packet_too_big6, wrapped6},
    frame::{ETH_LEN, PSH_ACK, SYN},
    frame6::{checksum_valid, Frame6, IP6_LEN, TCP_LEN},
    icmp6_frame::Icmp6Error,
    packet_exchange::run_counted,
    packet_rig::*,
    rig_config_with,
};

use super::ipv6::table_backend6;

/// The rig's `web` (NAT) and the IPv6 DSR services.
const DSR6: &str = rig_config_with!(lb_tests::rig_dsr6_services!());

const L2_VIP: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x120);
const IPIP_VIP: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x121);
const GUE_VIP: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x122);

fn to_vip(vip: Ipv6Addr, sport: u16, flags: u8, payload: usize) -> Frame6 {
    Frame6 {
        src_mac: CLIENT_MAC,
        src: CLIENT6,
        dst: vip,
        sport,
        flags,
        payload: vec![0x5a; payload],
        ..Frame6::default()
    }
}

#[test]
fn dsr_l2_over_ipv6_changes_only_the_macs() {
    let rig = Rig::build();
    let (c0, b0_mac) = (rig.c0, rig.b0_mac);
    rig.with_dataplane(DSR6, |c| {
        for (n, sport) in (41_000..41_012).enumerate() {
            // SYNs (which record their flow) and data segments without one (placed by
            // the table, as a flow another node saw open).
            let flags = if n % 2 == 0 { SYN } else { PSH_ACK };
            let frame = to_vip(L2_VIP, sport, flags, n * 3);
            let backend = table_backend6(c, "l2v6", &frame.flow_key());
            let r = run_counted(c.dataplane(), c0, &frame.bytes(), Reason::RedirectInterface);
            assert_eq!(r.action, XDP_REDIRECT, "port {sport}");
            let mut want = frame.bytes();
            want[0..6].copy_from_slice(&backend_mac(backend.octets()[15]));
            want[6..12].copy_from_slice(&b0_mac);
            assert_eq!(
                r.output, want,
                "port {sport}: only the MACs change, the hop limit too stays"
            );
        }
        let web = c
            .dataplane()
            .service_counters(service_id(c, "l2v6"))
            .unwrap();
        // A DSR service's SYN leaves a SYN-cache slot only (its handshake's ACK would
        // record the flow, as over IPv4), and a segment without an entry records nothing.
        assert_eq!(web.new_flows, 0, "no SYN opened a flow");
    });
}

#[test]
fn a_dsr_l2_backend_behind_a_gateway_is_refused_per_packet() {
    let rig = Rig::build();
    let c0 = rig.c0;
    // 2001:db8:2::/64 is routed through the backend 2001:db8:1::12, which has a
    // neighbour entry: the lookup succeeds, with a gateway.
    lb_tests::netns::ns_ip(
        &rig.ns,
        &[
            "-6",
            "route",
            "add",
            "2001:db8:2::/64",
            "via",
            "2001:db8:1::12",
            "dev",
            "b0",
        ],
    );
    let far = DSR6
        .replace("2001:db8:1::11\", port: 80", "2001:db8:2::11\", port: 80")
        .replace("2001:db8:1::12\", port: 80", "2001:db8:2::12\", port: 80")
        .replace("2001:db8:1::13\", port: 80", "2001:db8:2::13\", port: 80");
    assert_ne!(far, DSR6);
    rig.with_dataplane(&far, |c| {
        for sport in 42_000..42_004 {
            let frame = to_vip(L2_VIP, sport, PSH_ACK, 10);
            let r = run_counted(c.dataplane(), c0, &frame.bytes(), Reason::DropDsrNotOnLink);
            assert_eq!(r.action, XDP_DROP, "port {sport}");
        }
    });
}

#[test]
fn ipip_over_ipv6_puts_an_exact_outer_ipv6_header_in_front() {
    let rig = Rig::build();
    let (c0, b0_mac) = (rig.c0, rig.b0_mac);
    rig.with_dataplane(DSR6, |c| {
        for (n, sport) in (43_000..43_010).enumerate() {
            let flags = if n % 2 == 0 { SYN } else { PSH_ACK };
            let frame = to_vip(IPIP_VIP, sport, flags, n * 5);
            let backend = table_backend6(c, "ipip6", &frame.flow_key());
            let r = run_counted(c.dataplane(), c0, &frame.bytes(), Reason::RedirectInterface);
            assert_eq!(r.action, XDP_REDIRECT, "port {sport}");
            let inner = &frame.bytes()[ETH_LEN..];
            assert_eq!(
                r.output,
                wrapped6(b0_mac, backend, 41, &[], inner),
                "port {sport}"
            );
        }
        // One literal outer header, for a 60-byte SYN: the inner traffic class and flow
        // label (0x0a, 0x000bc), payload length 60, next header 41, hop limit 64.
        let syn = to_vip(IPIP_VIP, 43_000, SYN, 0);
        let r = run_once(c.dataplane().program(), c0, &syn.bytes());
        let outer = &r.output[ETH_LEN..ETH_LEN + IP6_LEN];
        assert_eq!(
            outer[..8],
            [0x60, 0x0a, 0, 0xbc, 0, 60, 41, 64],
            "{outer:02x?}"
        );
        assert_eq!(outer[8..24], lb_tests::dsr_frames6::NODE_B0_6.octets());
    });
}

#[test]
fn gue_over_ipv6_puts_exact_outer_ipv6_and_udp_headers_with_a_checksum_in_front() {
    let rig = Rig::build();
    let (c0, b0_mac) = (rig.c0, rig.b0_mac);
    let on_port = DSR6.replace("hash_seed: 42 }", "hash_seed: 42, gue_port: 7000 }");
    assert_ne!(on_port, DSR6);
    for (config, port) in [(DSR6.to_string(), 6080u16), (on_port, 7000)] {
        rig.with_dataplane(&config, |c| {
            let mut ports = std::collections::BTreeSet::new();
            for (n, sport) in (44_000..44_020).enumerate() {
                let flags = if n % 2 == 0 { SYN } else { PSH_ACK };
                let frame = to_vip(GUE_VIP, sport, flags, n * 7);
                let backend = table_backend6(c, "gue6", &frame.flow_key());
                let r = run_counted(c.dataplane(), c0, &frame.bytes(), Reason::RedirectInterface);
                assert_eq!(r.action, XDP_REDIRECT, "port {sport}");
                let inner = &frame.bytes()[ETH_LEN..];
                let udp = gue6_header(&frame.flow_key(), HASH_SEED, port, backend, inner);
                ports.insert([udp[0], udp[1]]);
                assert_eq!(
                    r.output,
                    wrapped6(b0_mac, backend, 17, &udp[..8], inner),
                    "port {sport}, GUE port {port}"
                );
                assert!(checksum_valid(&r.output), "the outer UDP checksum verifies");
            }
            assert!(ports.len() >= 18, "source ports spread: {ports:?}");
        });
    }
}

/// A client's data segment of `ip_len` IPv6 bytes (header included) to `vip`.
fn sized(vip: Ipv6Addr, sport: u16, ip_len: usize) -> Vec<u8> {
    to_vip(vip, sport, PSH_ACK, ip_len - IP6_LEN - TCP_LEN).bytes()
}

#[test]
fn an_ipv6_packet_too_big_once_wrapped_is_answered_with_an_exact_packet_too_big() {
    let rig = Rig::build();
    let c0 = rig.c0;
    rig.with_dataplane(DSR6, |c| {
        let dp = c.dataplane();
        // b0's MTU is 1500: 1460 bytes fit ip6ip6, 1452 GUE, 1500 dsr_l2.
        for (vip, fits) in [(IPIP_VIP, 1460usize), (GUE_VIP, 1452), (L2_VIP, 1500)] {
            let r = run_counted(dp, c0, &sized(vip, 45_000, fits), Reason::RedirectInterface);
            assert_eq!(r.action, XDP_REDIRECT, "{vip}: {fits} bytes fit");
            let big = sized(vip, 45_000, fits + 1);
            let r = run_counted(dp, c0, &big, Reason::TxPacketTooBig);
            assert_eq!(r.action, XDP_TX, "{vip}: back out of c0");
            assert_eq!(
                r.output,
                packet_too_big6(&big, fits as u32),
                "{vip}: the exact packet too big"
            );
        }
    });
}

/// A router's ICMPv6 error of `icmp_type`/`code` to `vip` about the backend's reply from
/// `vip`:80 to the client's `sport`, quoting its IPv6 header, TCP header and 100 bytes.
fn icmp6_error(vip: Ipv6Addr, sport: u16, icmp_type: u8, code: u8) -> Vec<u8> {
    let reply = Frame6 {
        src: vip,
        dst: CLIENT6,
        sport: 80,
        dport: sport,
        flags: PSH_ACK,
        payload: vec![1; 1400],
        ..Frame6::default()
    }
    .bytes();
    Icmp6Error {
        dst_mac: [0x02, 0, 0, 0, 0xee, 0x01],
        src_mac: CLIENT_MAC,
        from: "2001:db8:10::fe".parse().unwrap(),
        to: vip,
        hop_limit: 63,
        icmp_type,
        code,
        rest: [0, 0, 0x05, 0x00],
        quoted: Icmp6Error::quote(&reply, IP6_LEN + TCP_LEN + 100),
    }
    .bytes()
}

#[test]
fn an_icmpv6_error_to_the_vip_goes_to_the_backend_of_its_flow() {
    let rig = Rig::build();
    let (c0, b0_mac) = (rig.c0, rig.b0_mac);
    rig.with_dataplane(DSR6, |c| {
        let dp = c.dataplane();
        for sport in 46_000..46_010 {
            let flow = |vip| to_vip(vip, sport, SYN, 0).flow_key();
            // Packet too big, by ip6ip6: to the backend the table gives the flow.
            let backend = table_backend6(c, "ipip6", &flow(IPIP_VIP));
            let error = icmp6_error(IPIP_VIP, sport, 2, 0);
            let r = run_counted(dp, c0, &error, Reason::RedirectInterface);
            assert_eq!(r.action, XDP_REDIRECT, "port {sport}");
            assert_eq!(
                r.output,
                wrapped6(b0_mac, backend, 41, &[], &error[ETH_LEN..]),
                "port {sport}"
            );
            // Time exceeded, by GUE, hashed like the flow's own packets.
            let backend = table_backend6(c, "gue6", &flow(GUE_VIP));
            let error = icmp6_error(GUE_VIP, sport, 3, 0);
            let inner = &error[ETH_LEN..];
            let udp = gue6_header(&flow(GUE_VIP), HASH_SEED, 6080, backend, inner);
            let r = run_counted(dp, c0, &error, Reason::RedirectInterface);
            assert_eq!(r.output, wrapped6(b0_mac, backend, 17, &udp[..8], inner));
            assert!(checksum_valid(&r.output), "the outer UDP checksum verifies");
        }
        // A recorded flow is followed: its SYN records it; the error about its reply,
        // by dsr_l2, is the error itself with only the MACs changed.
        let sport = 46_100;
        let syn = to_vip(L2_VIP, sport, SYN, 0);
        let r = run_once(dp.program(), c0, &syn.bytes());
        let backend: [u8; 6] = r.output[0..6].try_into().unwrap();
        let error = icmp6_error(L2_VIP, sport, 1, 3);
        let r = run_counted(dp, c0, &error, Reason::RedirectInterface);
        let mut want = error.clone();
        want[0..6].copy_from_slice(&backend);
        want[6..12].copy_from_slice(&b0_mac);
        assert_eq!(r.output, want, "dsr_l2: only the MACs changed");
        // An echo request stays the kernel's.
        let echo = icmp6_error(L2_VIP, sport, 128, 0);
        let r = run_counted(dp, c0, &echo, Reason::PassNotTcp);
        assert_eq!((r.action, r.output), (XDP_PASS, echo));
    });
}

#[test]
fn an_ipv6_dsr_ack_records_the_flow_unproven_and_a_retransmitted_syn_is_counted() {
    use lb_userspace::dataplane::Dataplane;

    let rig = Rig::build();
    let c0 = rig.c0;
    rig.with_dataplane(DSR6, |c| {
        let syn = to_vip(IPIP_VIP, 47_000, SYN, 0);
        let backend = table_backend6(c, "ipip6", &syn.flow_key());
        let id = super::ipv6::backend_id6(c, "ipip6", backend);
        let dp = c.dataplane();
        let signals = || dp.backend_signals(id).unwrap();
        run_once(dp.program(), c0, &syn.bytes());
        assert!(
            dp.flows6.get(&syn.flow_key(), 0).is_err(),
            "a SYN records nothing"
        );
        assert_eq!((signals().syns, signals().syn_retransmits), (1, 0));
        run_once(dp.program(), c0, &syn.bytes());
        run_once(dp.program(), c0, &syn.bytes());
        assert_eq!((signals().syns, signals().syn_retransmits), (3, 2));
        // The node never sees the SYN-ACK: the client's ACK records the flow unproven.
        let ack = Frame6 {
            flags: lb_tests::frame::ACK,
            seq: syn.seq.wrapping_add(1),
            ack: 0x1234_5678,
            ..syn.clone()
        };
        let r = run_counted(dp, c0, &ack.bytes(), Reason::RedirectInterface);
        assert_eq!(r.action, XDP_REDIRECT);
        let flow = dp
            .flows6
            .get(&syn.flow_key(), 0)
            .expect("the ACK records the flow");
        assert_eq!(flow.backend, id);
        let counted = dp.service_counters(service_id(c, "ipip6")).unwrap();
        assert_eq!(
            (counted.new_flows, counted.unproven_acks),
            (1, 0),
            "no proof is asked of DSR"
        );
        // The next SYN on the tuple opens a new handshake: not a retransmission.
        run_once(dp.program(), c0, &syn.bytes());
        assert_eq!((signals().syns, signals().syn_retransmits), (4, 2));
    });
}
