//! Direct server return through the real object (BPF_PROG_TEST_RUN, see
//! `lb_tests::packet_rig`): `dsr_l2` changes only the MACs, `ipip` and `gue` put exact
//! outer headers in front (checksums, the GUE UDP header and ports), a don't-fragment
//! packet too big once wrapped is answered with an exact fragmentation-needed, an ICMP
//! error to the VIP about a flow goes to that flow's backend, the flow is recorded at the
//! handshake's ACK without a SYN-ACK proof, and a retransmitted SYN is the passive signal.
use std::net::Ipv4Addr;

use lb_common::{checksum::internet_checksum, counters::Reason};
use lb_tests::{
    dsr_frames::{gue_header, wrapped},
    frame::{Frame, ETH_LEN, IP_LEN, PSH_ACK, TCP_LEN},
    icmp_frame::IcmpError,
    packet_exchange::run_counted,
    packet_rig::*,
};
use lb_userspace::dataplane::Dataplane;

/// The rig's `web` (NAT) and one service per DSR mode, every backend on the VIP's port.
const DSR: &str = lb_tests::rig_config_with!(lb_tests::rig_dsr_services!());

fn to_vip(vip: Ipv4Addr, sport: u16, flags: u8, payload: usize) -> Frame {
    Frame {
        dst: vip,
        flags,
        payload: vec![0x5a; payload],
        ..client_syn(sport)
    }
}

#[test]
fn dsr_l2_changes_only_the_macs() {
    let rig = Rig::build();
    let (c0, b0_mac) = (rig.c0, rig.b0_mac);
    rig.with_dataplane(DSR, |c| {
        let dp = c.dataplane();
        let vip = vip_of(c, "l2");
        for (n, sport) in (41_000..41_010).enumerate() {
            let backend = table_backend(c, "l2", sport);
            let frame = to_vip(vip, sport, if n % 2 == 0 { 0x02 } else { PSH_ACK }, n);
            let r = run_counted(dp, c0, &frame.bytes(), Reason::RedirectInterface);
            assert_eq!(r.action, XDP_REDIRECT, "port {sport}");
            let mut want = frame.bytes();
            want[0..6].copy_from_slice(&backend_mac(backend.octets()[3]));
            want[6..12].copy_from_slice(&b0_mac);
            assert_eq!(
                r.output, want,
                "port {sport}: only the MACs change, TTL too stays"
            );
        }
    });
}

#[test]
fn ipip_puts_an_exact_outer_ipv4_header_in_front() {
    let rig = Rig::build();
    let (c0, b0_mac) = (rig.c0, rig.b0_mac);
    rig.with_dataplane(DSR, |c| {
        let dp = c.dataplane();
        let vip = vip_of(c, "ipip");
        for (n, sport) in (42_000..42_010).enumerate() {
            let backend = table_backend(c, "ipip", sport);
            let frame = to_vip(vip, sport, 0x02, 3 * n);
            let r = run_counted(dp, c0, &frame.bytes(), Reason::RedirectInterface);
            assert_eq!(r.action, XDP_REDIRECT, "port {sport}");
            let inner = &frame.bytes()[ETH_LEN..];
            assert_eq!(
                r.output,
                wrapped(b0_mac, backend, 4, &[], inner),
                "port {sport}"
            );
        }
        // One literal header, checksum included, for a 40-byte SYN to 10.1.0.x.
        let r = run_once(dp.program(), c0, &to_vip(vip, 42_000, 0x02, 0).bytes());
        let backend = table_backend(c, "ipip", 42_000).octets()[3];
        let outer = &r.output[ETH_LEN..ETH_LEN + IP_LEN];
        assert_eq!(
            outer[..10],
            [0x45, 0, 0, 60, 0, 0, 0x40, 0, 64, 4],
            "{outer:02x?}"
        );
        assert_eq!(outer[12..], [10, 1, 0, 1, 10, 1, 0, backend]);
        assert_eq!(internet_checksum(outer, 0), 0, "outer checksum valid");
    });
}

#[test]
fn gue_puts_exact_outer_ipv4_and_udp_headers_in_front() {
    let rig = Rig::build();
    let (c0, b0_mac) = (rig.c0, rig.b0_mac);
    let on_port = DSR.replace("hash_seed: 42 }", "hash_seed: 42, gue_port: 7000 }");
    for (config, port) in [(DSR.to_string(), 6080u16), (on_port, 7000)] {
        rig.with_dataplane(&config, |c| {
            let dp = c.dataplane();
            let vip = vip_of(c, "gue");
            let mut ports = std::collections::BTreeSet::new();
            for (n, sport) in (43_000..43_020).enumerate() {
                let backend = table_backend(c, "gue", sport);
                let frame = to_vip(vip, sport, 0x02, n);
                let r = run_counted(dp, c0, &frame.bytes(), Reason::RedirectInterface);
                assert_eq!(r.action, XDP_REDIRECT, "port {sport}");
                let inner = &frame.bytes()[ETH_LEN..];
                let udp = gue_header(&frame.flow_key(), HASH_SEED, port, inner.len());
                ports.insert([udp[0], udp[1]]);
                assert_eq!(
                    r.output,
                    wrapped(b0_mac, backend, 17, &udp, inner),
                    "port {sport}, GUE port {port}"
                );
            }
            assert!(ports.len() >= 18, "source ports spread: {ports:?}");
        });
    }
}

/// A client's data segment of `len` IP bytes to `vip`, with or without don't-fragment.
fn sized(vip: Ipv4Addr, sport: u16, ip_len: usize, df: bool) -> Vec<u8> {
    let mut f = to_vip(vip, sport, PSH_ACK, ip_len - IP_LEN - TCP_LEN).bytes();
    if !df {
        f[ETH_LEN + 6] = 0;
        f[ETH_LEN + 10..ETH_LEN + 12].fill(0);
        let check = internet_checksum(&f[ETH_LEN..ETH_LEN + IP_LEN], 0);
        f[ETH_LEN + 10..ETH_LEN + 12].copy_from_slice(&check.to_be_bytes());
    }
    f
}

#[test]
fn a_packet_too_big_once_wrapped_is_answered_with_fragmentation_needed() {
    let rig = Rig::build();
    let c0 = rig.c0;
    rig.with_dataplane(DSR, |c| {
        let dp = c.dataplane();
        // b0's MTU is 1500: 1480 bytes fit IPIP, 1472 GUE.
        for (name, fits, mtu) in [("ipip", 1480usize, 1480u16), ("gue", 1472, 1472)] {
            let vip = vip_of(c, name);
            let r = run_counted(
                dp,
                c0,
                &sized(vip, 44_000, fits, true),
                Reason::RedirectInterface,
            );
            assert_eq!(r.action, XDP_REDIRECT, "{name}: {fits} bytes fit");
            let big = sized(vip, 44_000, fits + 1, true);
            let r = run_counted(dp, c0, &big, Reason::TxFragNeeded);
            assert_eq!(r.action, XDP_TX, "{name}: back out of c0");
            let mut want = Vec::new();
            want.extend(&big[6..12]);
            want.extend(&big[0..6]);
            want.extend([0x08, 0x00]);
            let mut ip = vec![0x45, 0, 0, 56, 0, 0, 0, 0, 64, 1, 0, 0];
            ip.extend(vip.octets());
            ip.extend(CLIENT.octets());
            let check = internet_checksum(&ip, 0);
            ip[10..12].copy_from_slice(&check.to_be_bytes());
            want.extend(ip);
            let mut icmp = vec![3, 4, 0, 0, 0, 0];
            icmp.extend(mtu.to_be_bytes());
            icmp.extend(&big[ETH_LEN..ETH_LEN + IP_LEN + 8]);
            let check = internet_checksum(&icmp, 0);
            icmp[2..4].copy_from_slice(&check.to_be_bytes());
            want.extend(icmp);
            assert_eq!(r.output, want, "{name}: the exact fragmentation-needed");
            // Without don't-fragment nothing may be said: dropped, counted.
            let r = run_counted(
                dp,
                c0,
                &sized(vip, 44_000, fits + 1, false),
                Reason::DropDsrTooBig,
            );
            assert_eq!(r.action, XDP_DROP, "{name}");
        }
    });
}

/// A router's ICMP error of `icmp_type`/`code` to `vip` about the backend's reply from
/// `vip`:80 to the client's `sport` (quoting its IP header and first 8 bytes).
fn icmp_error(vip: Ipv4Addr, sport: u16, icmp_type: u8, code: u8) -> Vec<u8> {
    let reply = Frame {
        src: vip,
        dst: CLIENT,
        sport: 80,
        dport: sport,
        flags: PSH_ACK,
        payload: vec![1; 1400],
        ..Frame::default()
    }
    .bytes();
    IcmpError {
        dst_mac: [0x02, 0, 0, 0, 0xee, 0x01],
        src_mac: [0x02, 0, 0, 0, 0x0a, 0xfe],
        from: Ipv4Addr::new(10, 10, 0, 254),
        to: vip,
        ttl: 63,
        icmp_type,
        code,
        rest: [0, 0, 0x05, 0x00],
        quoted: IcmpError::quote(&reply, IP_LEN + 8),
    }
    .bytes()
}

#[test]
fn an_icmp_error_to_the_vip_goes_to_the_backend_of_its_flow() {
    let rig = Rig::build();
    let (c0, b0_mac) = (rig.c0, rig.b0_mac);
    rig.with_dataplane(DSR, |c| {
        let dp = c.dataplane();
        for sport in 45_000..45_010 {
            // Fragmentation needed, by IPIP: to the backend the table gives the flow.
            let vip = vip_of(c, "ipip");
            let backend = table_backend(c, "ipip", sport);
            let error = icmp_error(vip, sport, 3, 4);
            let r = run_counted(dp, c0, &error, Reason::RedirectInterface);
            assert_eq!(r.action, XDP_REDIRECT, "port {sport}");
            assert_eq!(
                r.output,
                wrapped(b0_mac, backend, 4, &[], &error[ETH_LEN..])
            );
            // Time exceeded, by GUE, hashed like the flow's own packets.
            let vip = vip_of(c, "gue");
            let backend = table_backend(c, "gue", sport);
            let error = icmp_error(vip, sport, 11, 0);
            let flow = to_vip(vip, sport, 0x02, 0).flow_key();
            let udp = gue_header(&flow, HASH_SEED, 6080, error.len() - ETH_LEN);
            let r = run_counted(dp, c0, &error, Reason::RedirectInterface);
            assert_eq!(
                r.output,
                wrapped(b0_mac, backend, 17, &udp, &error[ETH_LEN..])
            );
        }
        // A recorded flow is followed even where the table now says otherwise: the
        // handshake's ACK records it; the backend is then taken out of the table.
        let vip = vip_of(c, "l2");
        let sport = 45_100;
        let syn = to_vip(vip, sport, 0x02, 0);
        run_once(dp.program(), c0, &syn.bytes());
        let r = run_once(dp.program(), c0, &ack_of(&syn).bytes());
        let backend: [u8; 6] = r.output[0..6].try_into().unwrap();
        let error = icmp_error(vip, sport, 3, 4);
        let r = run_counted(dp, c0, &error, Reason::RedirectInterface);
        assert_eq!(r.output[0..6], backend);
        let mut want = error.clone();
        want[0..6].copy_from_slice(&backend);
        want[6..12].copy_from_slice(&b0_mac);
        assert_eq!(
            r.output, want,
            "dsr_l2: the error itself, only the MACs changed"
        );
        // An echo request stays the kernel's (an error about a NAT service's flow is
        // translated: see the `icmp_nat` tests).
        let echo = icmp_error(vip, sport, 8, 0);
        let r = run_counted(dp, c0, &echo, Reason::PassNotTcp);
        assert_eq!((r.action, r.output), (XDP_PASS, echo));
    });
}

#[test]
fn the_ack_records_the_flow_unproven_and_a_retransmitted_syn_is_counted() {
    let rig = Rig::build();
    let (c0, b0) = (rig.c0, rig.b0);
    rig.with_dataplane(DSR, |c| {
        let vip = vip_of(c, "ipip");
        let sport = 46_000;
        let syn = to_vip(vip, sport, 0x02, 0);
        let backend = table_backend(c, "ipip", sport);
        let id = backend_id(c, "ipip", backend);
        let dp = c.dataplane();
        let signals = || dp.backend_signals(id).unwrap();
        run_once(dp.program(), c0, &syn.bytes());
        assert!(
            dp.flows.get(&syn.flow_key(), 0).is_err(),
            "a SYN records nothing"
        );
        assert_eq!((signals().syns, signals().syn_retransmits), (1, 0));
        run_once(dp.program(), c0, &syn.bytes());
        run_once(dp.program(), c0, &syn.bytes());
        assert_eq!((signals().syns, signals().syn_retransmits), (3, 2));
        run_once(dp.program(), c0, &ack_of(&syn).bytes());
        let flow = dp
            .flows
            .get(&syn.flow_key(), 0)
            .expect("the ACK records the flow");
        assert_eq!(flow.backend, id);
        // Its replies leave the backend from the VIP, never through this node: nothing
        // serves replies from the backend's own address, which are not the connection's
        // and pass untranslated.
        let own = lb_tests::packet_exchange::answer(&syn, backend, 80, 0x18);
        assert!(dp.return_flows.get(&own.flow_key(), 0).is_err());
        assert_eq!(dp.return_flows.overflow().keys().count(), 0);
        let r = run_once(dp.program(), b0, &own.bytes());
        assert_eq!((r.action, r.output), (XDP_PASS, own.bytes()));
        let web = c
            .dataplane()
            .service_counters(service_id(c, "ipip"))
            .unwrap();
        assert_eq!(
            (web.new_flows, web.unproven_acks),
            (1, 0),
            "no proof is asked of DSR"
        );
        // The next SYN on the tuple opens a new handshake: not a retransmission.
        run_once(dp.program(), c0, &syn.bytes());
        assert_eq!((signals().syns, signals().syn_retransmits), (4, 2));
    });
}

#[test]
fn a_table_change_moves_no_recorded_dsr_flow() {
    let rig = Rig::build();
    let (c0, b0_mac) = (rig.c0, rig.b0_mac);
    rig.with_dataplane(DSR, |c| {
        let vip = vip_of(c, "ipip");
        let ports: Vec<u16> = (47_000..47_040).collect();
        let recorded: Vec<Ipv4Addr> = ports
            .iter()
            .map(|&sport| {
                let syn = to_vip(vip, sport, 0x02, 0);
                let r = run_once(c.dataplane().program(), c0, &syn.bytes());
                assert_eq!(r.action, XDP_REDIRECT);
                let r = run_once(c.dataplane().program(), c0, &ack_of(&syn).bytes());
                assert_eq!(r.action, XDP_REDIRECT);
                lb_tests::frame::dst_ip(&r.output)
            })
            .collect();
        // 10.1.0.11 takes five times the weight: the table moves flows to it.
        let heavier = DSR.replacen(
            "mode: ipip\n    backends:\n      - { address: 10.1.0.11, port: 80, zone: az-a }",
            "mode: ipip\n    backends:\n      - { address: 10.1.0.11, port: 80, zone: az-a, weight: 5 }",
            1,
        );
        assert_ne!(heavier, DSR);
        let config = lb_userspace::model::config::parse(&heavier).expect("valid config");
        c.apply(&config).unwrap();
        let mut moved_by_table = 0;
        for (&sport, &was) in ports.iter().zip(&recorded) {
            moved_by_table += usize::from(table_backend(c, "ipip", sport) != was);
            let data = Frame {
                flags: PSH_ACK,
                payload: b"more".to_vec(),
                ..ack_of(&to_vip(vip, sport, 0x02, 0))
            };
            let r = run_once(c.dataplane().program(), c0, &data.bytes());
            let inner = &data.bytes()[ETH_LEN..];
            assert_eq!(
                r.output,
                wrapped(b0_mac, was, 4, &[], inner),
                "port {sport} stays on {was}"
            );
        }
        assert!(moved_by_table > 0, "the new table places some flows elsewhere");
    });
}
