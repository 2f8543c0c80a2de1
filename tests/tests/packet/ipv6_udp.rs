//! UDP services over IPv6 through the real program (`lb_v6`): a first datagram placed by
//! the Maglev table over the IPv6 flow hash and its flow recorded, later ones following
//! it, the backend's answer from the VIP; IPv6's checksum rule (a zero checksum is
//! invalid and dropped; an update that comes out zero is sent as 0xffff); and `lbd`'s
//! sweep ageing IPv6 flows by the IPv4 timeouts. Every run checks the action, every byte
//! of the output (the expected checksum computed from scratch by `frame6`), and the one
//! reason counter that moved.
use std::net::Ipv6Addr;

use lb_common::{
    counters::Reason,
    flow::{FLOW_F_COUNTED, FLOW_F_DATAGRAM, FLOW_F_ESTABLISHED},
    hash::flow_hash6,
    ipv6::{addr6_wire, FlowKey6, FAMILY_IPV6},
};
use lb_tests::{
    frame::{Mac, ACK, PSH_ACK, SYN, SYN_ACK},
    frame6::{checksum_valid, l4_checksum, Frame6, IP6_LEN, PROTO_TCP, PROTO_UDP},
    packet_exchange::run_counted,
    packet_rig::*,
    rig_config_with,
};
use lb_userspace::{
    control::tables::Controller, kernel::KernelDataplane, model::config::FlowTimeouts,
};

/// `dns6` (UDP) and `web6` (TCP) on one IPv6 VIP, on the rig's IPv6 backends.
const CONFIG: &str = rig_config_with!(
    lb_tests::rig_dns6_service!(),
    r#"  - name: web6
    vip: "2001:db8:100::100"
    port: 80
    backends:
      - { address: "2001:db8:1::11", port: 8080, zone: az-a }
"#
);

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

fn as_to_backend(q: &Frame6, addr: Ipv6Addr, b0_mac: Mac) -> Frame6 {
    Frame6 {
        dst_mac: backend_mac(addr.octets()[15]),
        src_mac: b0_mac,
        dst: addr,
        dport: 5353,
        hop_limit: q.hop_limit - 1,
        ..q.clone()
    }
}

fn answer(q: &Frame6, addr: Ipv6Addr) -> Frame6 {
    Frame6 {
        src_mac: backend_mac(addr.octets()[15]),
        src: addr,
        dst: q.src,
        sport: 5353,
        dport: q.sport,
        proto: PROTO_UDP,
        payload: b"answer".to_vec(),
        ..Frame6::default()
    }
}

fn as_from_vip(a: &Frame6, c0_mac: Mac) -> Frame6 {
    Frame6 {
        dst_mac: CLIENT_MAC,
        src_mac: c0_mac,
        src: VIP6,
        sport: 53,
        hop_limit: a.hop_limit - 1,
        ..a.clone()
    }
}

/// The backend `dns6`'s Maglev table gives `key` (userspace's copy of the table).
fn table_backend(c: &Controller<KernelDataplane>, key: &FlowKey6) -> Ipv6Addr {
    let ring = &planned_service(c, "dns6").ring;
    let id = ring[(flow_hash6(key, HASH_SEED) % ring.len() as u32) as usize];
    let plan = c.plan().expect("a plan was applied");
    let b = plan.backends.iter().find(|b| b.id == id).expect("ring id");
    b.at.address.to_string().parse().expect("an IPv6 backend")
}

fn backend_id(c: &Controller<KernelDataplane>, addr: Ipv6Addr) -> u32 {
    let plan = c.plan().expect("a plan was applied");
    plan.backends
        .iter()
        .find(|b| b.at.service == "dns6" && b.at.address.to_string() == addr.to_string())
        .expect("a backend of dns6")
        .id
}

fn reply_key(q: &Frame6, addr: Ipv6Addr) -> FlowKey6 {
    answer(q, addr).flow_key()
}

#[track_caller]
fn expect(r: &RunResult, action: u32, want: &Frame6, what: &str) {
    expect_run(r, action, &want.bytes(), &what);
    assert!(checksum_valid(&r.output), "{what}: checksum");
}

#[test]
fn a_first_datagram_records_its_flow_later_ones_follow_it_and_the_answer_comes_from_the_vip() {
    let rig = Rig::build();
    let (c0, b0, c0_mac, b0_mac) = (rig.c0, rig.b0, rig.c0_mac, rig.b0_mac);
    rig.with_dataplane(CONFIG, |c| {
        c.dataplane_mut().set_clock(500).unwrap();
        let q = query(42000);
        let backend = table_backend(c, &q.flow_key());
        let id = backend_id(c, backend);
        let dns6 = service_id(c, "dns6");
        let dp = c.dataplane();
        let r = run_counted(dp, c0, &q.bytes(), Reason::RedirectInterface);
        expect(
            &r,
            XDP_REDIRECT,
            &as_to_backend(&q, backend, b0_mac),
            "query",
        );
        let flow = dp
            .flows6
            .get(&q.flow_key(), 0)
            .expect("the flow is recorded");
        assert_eq!(
            (flow.backend, flow.service, flow.last_seen),
            (id, dns6, 500)
        );
        assert_eq!(
            flow.state,
            FLOW_F_COUNTED | FLOW_F_ESTABLISHED | FLOW_F_DATAGRAM
        );
        assert_eq!(dp.active_flows(id).unwrap(), 1);
        let ret = dp
            .return_flows6
            .get(&reply_key(&q, backend), 0)
            .expect("and its reply direction");
        assert_eq!(
            (ret.vip, ret.vport, ret.service, ret.backend),
            (addr6_wire(VIP6.octets()), 53u16.to_be(), dns6, id)
        );

        let a = answer(&q, backend);
        let r = run_counted(dp, b0, &a.bytes(), Reason::RedirectInterface);
        expect(&r, XDP_REDIRECT, &as_from_vip(&a, c0_mac), "answer");

        let again = Frame6 {
            payload: b"second query".to_vec(),
            ..q.clone()
        };
        let r = run_counted(dp, c0, &again.bytes(), Reason::RedirectInterface);
        expect(
            &r,
            XDP_REDIRECT,
            &as_to_backend(&again, backend, b0_mac),
            "second",
        );
        let s = dp.service_counters(dns6).unwrap();
        assert_eq!(
            (s.packets_to_backend, s.packets_to_client, s.new_flows),
            (2, 1, 1)
        );
        assert_eq!(dp.active_flows(id).unwrap(), 1);
    });
}

#[test]
fn a_zero_checksum_is_dropped_and_an_update_that_comes_out_zero_is_sent_as_all_ones() {
    let rig = Rig::build();
    let (c0, b0, b0_mac) = (rig.c0, rig.b0, rig.b0_mac);
    rig.with_dataplane(CONFIG, |c| {
        let q = query(42001);
        let backend = table_backend(c, &q.flow_key());
        let dp = c.dataplane();
        let none = Frame6 {
            zero_checksum: true,
            ..q.clone()
        };
        let r = run_counted(dp, c0, &none.bytes(), Reason::DropUdpZeroChecksum);
        expect_run(&r, XDP_DROP, &none.bytes(), &"zero checksum, no flow");
        assert!(dp.flows6.get(&q.flow_key(), 0).is_err(), "records nothing");

        // A payload whose last word makes the rewritten datagram's checksum come out 0:
        // with that word zero, the outgoing checksum is c; adding c to the sum makes it
        // all ones, whose complement is 0.
        let mut payload = b"query\0\0\0".to_vec();
        let out = Frame6 {
            payload: payload.clone(),
            ..as_to_backend(&q, backend, b0_mac)
        };
        let seg = &out.bytes()[14 + IP6_LEN..];
        let mut zeroed = seg.to_vec();
        zeroed[6..8].copy_from_slice(&[0, 0]);
        let c_ = l4_checksum(out.src, out.dst, PROTO_UDP, &zeroed);
        payload[6..8].copy_from_slice(&c_.to_be_bytes());
        let tuned = Frame6 {
            payload,
            ..q.clone()
        };
        let want = as_to_backend(&tuned, backend, b0_mac);
        let mut check_zeroed = want.bytes()[14 + IP6_LEN..].to_vec();
        check_zeroed[6..8].copy_from_slice(&[0, 0]);
        assert_eq!(
            l4_checksum(want.src, want.dst, PROTO_UDP, &check_zeroed),
            0,
            "the rewritten datagram's checksum computes to zero"
        );
        let r = run_counted(dp, c0, &tuned.bytes(), Reason::RedirectInterface);
        let at = 14 + IP6_LEN + 6;
        assert_eq!(r.output[at..at + 2], [0xff, 0xff], "sent as all ones");
        expect(&r, XDP_REDIRECT, &want, "a checksum computing to zero");

        // A backend's reply of the flow with a zero checksum: dropped too.
        let a = Frame6 {
            zero_checksum: true,
            ..answer(&tuned, backend)
        };
        let r = run_counted(dp, b0, &a.bytes(), Reason::DropUdpZeroChecksum);
        expect_run(&r, XDP_DROP, &a.bytes(), &"zero checksum reply");

        // A UDP length past the payload.
        let mut bad = query(42002).bytes();
        bad[14 + IP6_LEN + 4..14 + IP6_LEN + 6].copy_from_slice(&400u16.to_be_bytes());
        let r = run_counted(dp, c0, &bad, Reason::DropMalformedUdp);
        expect_run(&r, XDP_DROP, &bad, &"UDP length past the payload");
        // A port no UDP service has.
        let other = Frame6 {
            dport: 54,
            ..query(42003)
        };
        let r = run_counted(dp, c0, &other.bytes(), Reason::PassNotTcp);
        expect_run(&r, XDP_PASS, &other.bytes(), &"unserved UDP port");
    });
}

#[test]
fn the_sweep_ages_ipv6_flows_by_the_ipv4_timeouts_both_directions() {
    let rig = Rig::build();
    let (c0, b0) = (rig.c0, rig.b0);
    rig.with_dataplane(CONFIG, |c| {
        let t = FlowTimeouts::default();
        let q = query(42010);
        let udp_backend = table_backend(c, &q.flow_key());
        let dp = c.dataplane_mut();
        dp.set_clock(1000).unwrap();
        run_once(dp.program(), c0, &q.bytes());
        // A TCP connection of `web6`, recorded by the ACK of its SYN-ACK.
        let syn = Frame6 {
            src_mac: CLIENT_MAC,
            src: CLIENT6,
            dst: VIP6,
            sport: 42011,
            flags: SYN,
            ..Frame6::default()
        };
        run_once(dp.program(), c0, &syn.bytes());
        let syn_ack = Frame6 {
            src_mac: backend_mac(11),
            src: backend6(11),
            dst: CLIENT6,
            sport: 8080,
            dport: 42011,
            flags: SYN_ACK,
            seq: BACKEND_ISN,
            ack: syn.seq + 1,
            ..Frame6::default()
        };
        assert_eq!(
            run_once(dp.program(), b0, &syn_ack.bytes()).action,
            XDP_REDIRECT
        );
        let ack = Frame6 {
            flags: ACK,
            seq: syn.seq + 1,
            ack: BACKEND_ISN + 1,
            ..syn.clone()
        };
        run_once(dp.program(), c0, &ack.bytes());
        let tcp_reply_key = FlowKey6 {
            src_addr: addr6_wire(backend6(11).octets()),
            dst_addr: addr6_wire(CLIENT6.octets()),
            src_port: 8080u16.to_be(),
            dst_port: 42011u16.to_be(),
            proto: PROTO_TCP,
            family: FAMILY_IPV6,
            _pad: [0; 2],
        };
        assert!(dp.return_flows6.get(&tcp_reply_key, 0).is_ok());
        assert!(dp.return_flows6.get(&reply_key(&q, udp_backend), 0).is_ok());

        // Used again at 1020: the UDP flow is there 30 s later, gone (both ways) after 31;
        // the established connection is not.
        dp.set_clock(1020).unwrap();
        run_once(dp.program(), c0, &q.bytes());
        let data = Frame6 {
            flags: PSH_ACK,
            payload: b"x".to_vec(),
            ..syn.clone()
        };
        run_once(dp.program(), c0, &data.bytes());
        assert_eq!(dp.expire_flows(1020 + 30, &t).unwrap(), 0);
        assert_eq!(dp.expire_flows(1020 + 31, &t).unwrap(), 1);
        assert!(dp.flows6.get(&q.flow_key(), 0).is_err());
        assert!(dp
            .return_flows6
            .get(&reply_key(&q, udp_backend), 0)
            .is_err());
        assert!(dp.flows6.get(&syn.flow_key(), 0).is_ok());
        // The connection goes once idle past the established timeout.
        assert_eq!(dp.expire_flows(1020 + 350, &t).unwrap(), 0);
        assert_eq!(dp.expire_flows(1020 + 351, &t).unwrap(), 1);
        assert!(dp.flows6.get(&syn.flow_key(), 0).is_err());
        assert!(dp.return_flows6.get(&tcp_reply_key, 0).is_err());
    });
}
