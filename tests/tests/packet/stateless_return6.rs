//! `stateless_return` over IPv6: a backend's reply that finds no return entry and no
//! SYN-cache slot (a connection whose client packets another node of the tier saw) is
//! translated by the IPv6 reverse map (`lb_common::reverse6`), recording nothing; a
//! reply from a backend of a service without the key is passed untouched, as before;
//! the client's ACK of a handshake whose SYN-ACK this node never saw records the flow
//! (a tier's rule). Real object, BPF_PROG_TEST_RUN (see `lb_tests::packet_rig`).
use std::{collections::BTreeMap, net::Ipv6Addr};

use lb_common::{
    counters::Reason,
    flow::{FLOW_F_COUNTED, FLOW_F_ESTABLISHED, FLOW_F_TIER},
    ipv6::{addr6_wire, FAMILY_IPV6},
    reverse6::{ReverseKey6, ReverseTarget6},
};
use lb_tests::{
    frame::{Mac, ACK, PSH_ACK, SYN, SYN_ACK},
    frame6::{checksum_valid, Frame6, PROTO_TCP},
    packet_exchange::run_counted,
    packet_rig::*,
    rig_config_with,
};
use lb_userspace::kernel::KernelDataplane;

use super::ipv6::backend_id6;

/// `web6` with `stateless_return`; `other6` keeps its backend (port 9090) to itself.
const STATELESS6: &str = rig_config_with!(
    r#"  - name: web6
    vip: "2001:db8:100::100"
    port: 80
    stateless_return: true
    backends:
      - { address: "2001:db8:1::11", port: 8080, zone: az-a }
      - { address: "2001:db8:1::12", port: 8080, zone: az-b }
  - name: other6
    vip: "2001:db8:100::101"
    port: 80
    backends:
      - { address: "2001:db8:1::13", port: 9090, zone: az-c }
"#
);

fn reverse6(dp: &KernelDataplane) -> BTreeMap<ReverseKey6, ReverseTarget6> {
    dp.reverse6.iter().map(Result::unwrap).collect()
}

/// Backend `addr`:`port`'s segment with `flags` to the client's port `dport`, as it
/// arrives on `b0`.
fn from_backend(addr: Ipv6Addr, port: u16, dport: u16, flags: u8) -> Frame6 {
    Frame6 {
        src_mac: backend_mac(addr.octets()[15]),
        src: addr,
        dst: CLIENT6,
        sport: port,
        dport,
        flags,
        seq: BACKEND_ISN,
        ack: 1001,
        ..Frame6::default()
    }
}

/// `reply` as the client must get it: from `vip`'s port 80, out of `c0`.
fn from_vip(reply: &Frame6, vip: Ipv6Addr, c0_mac: Mac) -> Frame6 {
    Frame6 {
        dst_mac: CLIENT_MAC,
        src_mac: c0_mac,
        src: vip,
        sport: 80,
        hop_limit: reply.hop_limit - 1,
        ..reply.clone()
    }
}

#[test]
fn the_ipv6_reverse_map_holds_each_stateless_return_backend_and_nothing_else() {
    let rig = Rig::build();
    rig.with_dataplane(STATELESS6, |c| {
        let id = service_id(c, "web6");
        let want: BTreeMap<ReverseKey6, ReverseTarget6> = [11u8, 12]
            .into_iter()
            .map(|last| {
                let key = ReverseKey6 {
                    addr: addr6_wire(backend6(last).octets()),
                    port: 8080u16.to_be(),
                    proto: PROTO_TCP,
                    family: FAMILY_IPV6,
                };
                let target = ReverseTarget6 {
                    vip: addr6_wire(VIP6.octets()),
                    vport: 80u16.to_be(),
                    _pad: 0,
                    service: id,
                    backend: backend_id6(c, "web6", backend6(last)),
                };
                (key, target)
            })
            .collect();
        assert_eq!(reverse6(c.dataplane()), want);
        assert_eq!(c.dataplane().reverse.iter().count(), 0, "no IPv4 entry");
        let off =
            lb_userspace::model::config::parse(&STATELESS6.replace("stateless_return: true", ""))
                .expect("valid config");
        c.apply(&off).unwrap();
        assert_eq!(reverse6(c.dataplane()), BTreeMap::new());
    });
}

#[test]
fn an_ipv6_reply_on_a_node_that_never_saw_the_connection_is_translated_by_the_reverse_map() {
    let rig = Rig::build();
    let (b0, c0_mac) = (rig.b0, rig.c0_mac);
    rig.with_dataplane(STATELESS6, |c| {
        let dp = c.dataplane();
        let backend = backend6(11);
        let id = backend_id6(c, "web6", backend);
        let service = service_id(c, "web6");
        let replies = [
            from_backend(backend, 8080, 41_000, SYN_ACK),
            Frame6 {
                payload: b"world".to_vec(),
                ..from_backend(backend, 8080, 41_000, PSH_ACK)
            },
        ];
        for (n, frame) in replies.iter().enumerate() {
            let r = run_counted(dp, b0, &frame.bytes(), Reason::RedirectInterface);
            expect_run(
                &r,
                XDP_REDIRECT,
                &from_vip(frame, VIP6, c0_mac).bytes(),
                &format!("reply {n}"),
            );
            assert!(checksum_valid(&r.output), "reply {n}");
            let s = dp.service_counters(service).unwrap();
            assert_eq!(
                (s.replies_reverse_mapped, s.packets_to_client),
                (n as u64 + 1, n as u64 + 1)
            );
        }
        assert_eq!(dp.backend_counters(id).unwrap().replies_reverse_mapped, 2);
        // Nothing recorded.
        assert_eq!(dp.flows6.keys().count(), 0);
        assert_eq!(dp.return_flows6.keys().count(), 0);
        // The backend of a service without the key: its reply is not ours.
        let other = from_backend(backend6(13), 9090, 41_001, PSH_ACK);
        let r = run_counted(dp, b0, &other.bytes(), Reason::PassNoService);
        expect_run(&r, XDP_PASS, &other.bytes(), &"other6's reply");
        // A stateless_return backend's reply from the client's side fails the
        // reverse-path check.
        let c0 = rig.c0;
        let spoofed = replies[1].clone();
        let r = run_counted(dp, c0, &spoofed.bytes(), Reason::PassReplyWrongInterface);
        expect_run(&r, XDP_PASS, &spoofed.bytes(), &"from the client's side");
    });
}

#[test]
fn in_an_ipv6_tier_the_ack_of_a_handshake_records_its_flow_without_the_syn_ack() {
    let rig = Rig::build();
    let (c0, b0_mac) = (rig.c0, rig.b0_mac);
    rig.with_dataplane(STATELESS6, |c| {
        let dp = c.dataplane();
        let syn = Frame6 {
            src_mac: CLIENT_MAC,
            src: CLIENT6,
            dst: VIP6,
            sport: 41_010,
            flags: SYN,
            ..Frame6::default()
        };
        let r = run_once(dp.program(), c0, &syn.bytes());
        assert_eq!(r.action, XDP_REDIRECT);
        let to = Ipv6Addr::from(<[u8; 16]>::try_from(&r.output[14 + 24..14 + 40]).unwrap());
        // The SYN-ACK went back through another node: the ACK proves nothing here.
        let ack = Frame6 {
            flags: ACK,
            seq: syn.seq + 1,
            ack: BACKEND_ISN + 1,
            ..syn.clone()
        };
        let r = run_counted(dp, c0, &ack.bytes(), Reason::RedirectInterface);
        let want = Frame6 {
            dst_mac: backend_mac(to.octets()[15]),
            src_mac: b0_mac,
            dst: to,
            dport: 8080,
            hop_limit: 63,
            ..ack.clone()
        };
        expect_run(&r, XDP_REDIRECT, &want.bytes(), &"ACK");
        let flow = dp.flows6.get(&syn.flow_key(), 0).expect("recorded");
        assert_eq!(
            (flow.backend, flow.state),
            (
                backend_id6(c, "web6", to),
                FLOW_F_COUNTED | FLOW_F_ESTABLISHED | FLOW_F_TIER
            )
        );
        let s = dp.service_counters(service_id(c, "web6")).unwrap();
        assert_eq!((s.unproven_acks, s.new_flows), (1, 1));
    });
}
