//! IPv6 services through the real program (`lb_v6`, tail-called by `lb_xdp`), NAT66:
//! a SYN placed by the Maglev table over the IPv6 flow hash, recording no flow but its
//! SYN-cache slot (`lb_v6_syn`), its SYN-ACK translated by that slot, the ACK that
//! acknowledges the SYN-ACK recording its flow in both directions, established data
//! following it, the backend's reply from the VIP, a FIN
//! pair or an RST closing it; what is not for a VIP (neighbour discovery, router
//! advertisements) passed untouched; extension headers and fragments passed and
//! counted. Every run checks the action, every byte of the output (the expected frame's
//! checksum computed from scratch over the IPv6 pseudo-header by `frame6`), and the one
//! reason counter that moved.
use std::net::Ipv6Addr;

use aya::maps::{HashMap, MapData};
use lb_common::{
    counters::Reason,
    flow::{FlowTarget, FLOW_F_CLOSED, FLOW_F_COUNTED, FLOW_F_ESTABLISHED, FLOW_F_FIN_CLIENT},
    hash::flow_hash6,
    ipv6::{addr6_wire, FlowKey6, NatReturn6, FAMILY_IPV6},
};
use lb_tests::{
    frame::{Mac, ACK, FIN_ACK, PSH_ACK, RST_ACK, SYN, SYN_ACK},
    frame6::{checksum_valid, with_next_header, Frame6, PROTO_TCP},
    packet_exchange::run_counted,
    packet_rig::*,
    rig_config_with,
};
use lb_userspace::{control::tables::Controller, dataplane::Dataplane, kernel::KernelDataplane};

/// `web6`: an IPv6 TCP service on the rig's three IPv6 backends, port 8080.
pub const V6_CONFIG: &str = rig_config_with!(lb_tests::rig_web6_service!());

/// A segment from the IPv6 client to `web6` from `sport`.
fn client(sport: u16, flags: u8) -> Frame6 {
    client_from(CLIENT6, sport, flags)
}

/// A segment from `src` (through the client's NIC) to `web6` from `sport`.
pub(crate) fn client_from(src: Ipv6Addr, sport: u16, flags: u8) -> Frame6 {
    Frame6 {
        src_mac: CLIENT_MAC,
        src,
        dst: VIP6,
        sport,
        flags,
        ..Frame6::default()
    }
}

/// `f` as backend `addr`:8080 must get it: out of `b0` (MAC `b0_mac`), one hop later,
/// with a checksum that this file's oracle computed afresh.
pub(crate) fn as_to_backend6(f: &Frame6, addr: Ipv6Addr, b0_mac: Mac) -> Frame6 {
    Frame6 {
        dst_mac: backend_mac(addr.octets()[15]),
        src_mac: b0_mac,
        dst: addr,
        dport: 8080,
        hop_limit: f.hop_limit - 1,
        ..f.clone()
    }
}

/// Backend `addr`:8080's segment with `flags` to the client that sent `to`, as it
/// arrives on `b0`.
fn answer6(to: &Frame6, addr: Ipv6Addr, flags: u8) -> Frame6 {
    Frame6 {
        src_mac: backend_mac(addr.octets()[15]),
        src: addr,
        dst: to.src,
        sport: 8080,
        dport: to.sport,
        flags,
        seq: BACKEND_ISN,
        ack: to.seq.wrapping_add(1),
        ..Frame6::default()
    }
}

/// `answer` as the client must get it: from the VIP's port 80, out of `c0`.
pub(crate) fn as_from_vip6(answer: &Frame6, c0_mac: Mac) -> Frame6 {
    Frame6 {
        dst_mac: CLIENT_MAC,
        src_mac: c0_mac,
        src: VIP6,
        sport: 80,
        hop_limit: answer.hop_limit - 1,
        ..answer.clone()
    }
}

#[track_caller]
pub(crate) fn expect6(r: &RunResult, action: u32, want: &Frame6, what: &str) {
    expect_run(r, action, &want.bytes(), &what);
    assert!(checksum_valid(&r.output), "{what}: checksum");
}

/// The id of backend `addr` of service `service` in the applied plan.
pub fn backend_id6(c: &Controller<KernelDataplane>, service: &str, addr: Ipv6Addr) -> u32 {
    c.plan()
        .expect("a plan was applied")
        .backends
        .iter()
        .find(|b| b.at.service == service && b.at.address.to_string() == addr.to_string())
        .unwrap_or_else(|| panic!("no backend {addr} in service {service}"))
        .id
}

/// The backend `service`'s Maglev table gives `key`, from userspace's copy of the table
/// and the IPv6 flow hash (the rig's seed).
pub fn table_backend6(c: &Controller<KernelDataplane>, service: &str, key: &FlowKey6) -> Ipv6Addr {
    let ring = &planned_service(c, service).ring;
    let id = ring[(flow_hash6(key, HASH_SEED) % ring.len() as u32) as usize];
    let plan = c.plan().expect("a plan was applied");
    let b = plan.backends.iter().find(|b| b.id == id).expect("ring id");
    b.at.address.to_string().parse().expect("an IPv6 backend")
}

fn flows6(c: &Controller<KernelDataplane>) -> &HashMap<MapData, FlowKey6, FlowTarget> {
    &c.dataplane().flows6
}

fn return_flows6(c: &Controller<KernelDataplane>) -> &HashMap<MapData, FlowKey6, NatReturn6> {
    &c.dataplane().return_flows6
}

/// The reply direction's key of `f`'s flow on backend `addr`:8080.
fn reply_key6(f: &Frame6, addr: Ipv6Addr) -> FlowKey6 {
    FlowKey6 {
        src_addr: addr6_wire(addr.octets()),
        dst_addr: addr6_wire(f.src.octets()),
        src_port: 8080u16.to_be(),
        dst_port: f.sport.to_be(),
        proto: PROTO_TCP,
        family: FAMILY_IPV6,
        _pad: [0; 2],
    }
}

#[test]
fn a_connection_goes_to_its_table_backend_both_ways_and_a_fin_pair_closes_it() {
    let rig = Rig::build();
    let (c0, b0, c0_mac, b0_mac) = (rig.c0, rig.b0, rig.c0_mac, rig.b0_mac);
    rig.with_dataplane(V6_CONFIG, |c| {
        c.dataplane_mut().set_clock(700).unwrap();
        let syn = client(41000, SYN);
        let backend = table_backend6(c, "web6", &syn.flow_key());
        let id = backend_id6(c, "web6", backend);
        let service = service_id(c, "web6");
        let dp = c.dataplane();
        let r = run_counted(dp, c0, &syn.bytes(), Reason::RedirectInterface);
        expect6(
            &r,
            XDP_REDIRECT,
            &as_to_backend6(&syn, backend, b0_mac),
            "SYN",
        );
        assert!(
            flows6(c).get(&syn.flow_key(), 0).is_err(),
            "the SYN records no flow"
        );
        assert!(return_flows6(c).get(&reply_key6(&syn, backend), 0).is_err());
        assert_eq!(dp.active_flows(id).unwrap(), 0);

        // Translated by the SYN's slot, which it leaves its proof beside.
        let syn_ack = answer6(&syn, backend, SYN_ACK);
        let r = run_counted(dp, b0, &syn_ack.bytes(), Reason::RedirectInterface);
        expect6(&r, XDP_REDIRECT, &as_from_vip6(&syn_ack, c0_mac), "SYN-ACK");
        assert!(flows6(c).get(&syn.flow_key(), 0).is_err());

        // The client's first segment after the SYN acknowledges the SYN-ACK: it records
        // the flow, both ways, on the slot's backend.
        let data = Frame6 {
            seq: syn.seq + 1,
            ack: BACKEND_ISN + 1,
            payload: b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            ..client(41000, PSH_ACK)
        };
        let r = run_counted(dp, c0, &data.bytes(), Reason::RedirectInterface);
        expect6(
            &r,
            XDP_REDIRECT,
            &as_to_backend6(&data, backend, b0_mac),
            "data",
        );
        let flow = flows6(c)
            .get(&syn.flow_key(), 0)
            .expect("the handshake's ACK records the flow");
        assert_eq!((flow.backend, flow.service), (id, service));
        assert_eq!(
            (flow.state, flow.last_seen),
            (FLOW_F_COUNTED | FLOW_F_ESTABLISHED, 700)
        );
        let ret = return_flows6(c)
            .get(&reply_key6(&syn, backend), 0)
            .expect("and its reply direction");
        assert_eq!(
            (ret.vip, ret.vport, ret.service, ret.backend),
            (addr6_wire(VIP6.octets()), 80u16.to_be(), service, id)
        );
        assert_eq!(dp.active_flows(id).unwrap(), 1);

        let response = Frame6 {
            payload: b"HTTP/1.1 200 OK\r\n\r\n".to_vec(),
            ..answer6(&data, backend, PSH_ACK)
        };
        let r = run_counted(dp, b0, &response.bytes(), Reason::RedirectInterface);
        expect6(
            &r,
            XDP_REDIRECT,
            &as_from_vip6(&response, c0_mac),
            "response",
        );

        let fin = client(41000, FIN_ACK);
        let r = run_counted(dp, c0, &fin.bytes(), Reason::RedirectInterface);
        expect6(
            &r,
            XDP_REDIRECT,
            &as_to_backend6(&fin, backend, b0_mac),
            "FIN",
        );
        let flow = flows6(c).get(&syn.flow_key(), 0).unwrap();
        assert_eq!(
            flow.state,
            FLOW_F_COUNTED | FLOW_F_ESTABLISHED | FLOW_F_FIN_CLIENT
        );
        assert_eq!(dp.active_flows(id).unwrap(), 1, "half closed is open");
        let fin_back = answer6(&fin, backend, FIN_ACK);
        let r = run_counted(dp, b0, &fin_back.bytes(), Reason::RedirectInterface);
        expect6(
            &r,
            XDP_REDIRECT,
            &as_from_vip6(&fin_back, c0_mac),
            "FIN back",
        );
        let flow = flows6(c).get(&syn.flow_key(), 0).unwrap();
        assert_ne!(flow.state & FLOW_F_CLOSED, 0);
        assert_eq!(dp.active_flows(id).unwrap(), 0);

        let s = dp.service_counters(service).unwrap();
        assert_eq!(
            (s.packets_to_backend, s.packets_to_client, s.new_flows),
            (3, 3, 1)
        );
        let len = |f: &Frame6| f.bytes().len() as u64;
        assert_eq!(s.bytes_to_backend, len(&syn) + len(&data) + len(&fin));
        assert_eq!(
            s.bytes_to_client,
            len(&syn_ack) + len(&response) + len(&fin_back)
        );
    });
}

#[test]
fn a_retransmitted_syn_keeps_its_backend_a_reset_closes_the_flow_and_a_new_handshake_replaces_it() {
    let rig = Rig::build();
    let (c0, b0, b0_mac) = (rig.c0, rig.b0, rig.b0_mac);
    rig.with_dataplane(V6_CONFIG, |c| {
        let syn = client(41001, SYN);
        let backend = table_backend6(c, "web6", &syn.flow_key());
        let id = backend_id6(c, "web6", backend);
        let service = service_id(c, "web6");
        let dp = c.dataplane();
        run_counted(dp, c0, &syn.bytes(), Reason::RedirectInterface);
        // A retransmitted SYN goes where its slot says: nothing recorded or counted.
        let r = run_counted(dp, c0, &syn.bytes(), Reason::RedirectInterface);
        expect6(
            &r,
            XDP_REDIRECT,
            &as_to_backend6(&syn, backend, b0_mac),
            "SYN again",
        );
        assert_eq!(dp.backend_signals(id).unwrap().syn_retransmits, 1);
        assert_eq!(dp.service_counters(service).unwrap().new_flows, 0);
        run_counted(
            dp,
            b0,
            &answer6(&syn, backend, SYN_ACK).bytes(),
            Reason::RedirectInterface,
        );
        let ack = Frame6 {
            seq: syn.seq + 1,
            ack: BACKEND_ISN + 1,
            ..client(41001, ACK)
        };
        run_counted(dp, c0, &ack.bytes(), Reason::RedirectInterface);
        assert_eq!(dp.service_counters(service).unwrap().new_flows, 1);
        assert_eq!(dp.active_flows(id).unwrap(), 1);
        let rst = client(41001, RST_ACK);
        let r = run_counted(dp, c0, &rst.bytes(), Reason::RedirectInterface);
        expect6(
            &r,
            XDP_REDIRECT,
            &as_to_backend6(&rst, backend, b0_mac),
            "RST",
        );
        let flow = flows6(c).get(&syn.flow_key(), 0).unwrap();
        assert_ne!(flow.state & FLOW_F_CLOSED, 0);
        assert_eq!(dp.active_flows(id).unwrap(), 0);
        // The tuple's next SYN leaves the closed entry as it is; the ACK of its handshake
        // replaces it with a live, counted flow.
        let r = run_counted(dp, c0, &syn.bytes(), Reason::RedirectInterface);
        expect6(
            &r,
            XDP_REDIRECT,
            &as_to_backend6(&syn, backend, b0_mac),
            "new SYN",
        );
        assert_ne!(
            flows6(c).get(&syn.flow_key(), 0).unwrap().state & FLOW_F_CLOSED,
            0
        );
        let syn_ack = answer6(&syn, backend, SYN_ACK);
        run_counted(dp, b0, &syn_ack.bytes(), Reason::RedirectInterface);
        let r = run_counted(dp, c0, &ack.bytes(), Reason::RedirectInterface);
        expect6(
            &r,
            XDP_REDIRECT,
            &as_to_backend6(&ack, backend, b0_mac),
            "new ACK",
        );
        let flow = flows6(c).get(&syn.flow_key(), 0).unwrap();
        assert_eq!(flow.state, FLOW_F_COUNTED | FLOW_F_ESTABLISHED);
        assert_eq!(dp.active_flows(id).unwrap(), 1);
        assert_eq!(dp.service_counters(service).unwrap().new_flows, 2);
    });
}

#[test]
fn a_segment_without_a_flow_goes_by_the_table_and_records_nothing() {
    let rig = Rig::build();
    let (c0, b0_mac) = (rig.c0, rig.b0_mac);
    rig.with_dataplane(V6_CONFIG, |c| {
        let ack = client(41002, ACK);
        let backend = table_backend6(c, "web6", &ack.flow_key());
        let dp = c.dataplane();
        let r = run_counted(dp, c0, &ack.bytes(), Reason::RedirectInterface);
        expect6(
            &r,
            XDP_REDIRECT,
            &as_to_backend6(&ack, backend, b0_mac),
            "ACK",
        );
        assert!(
            flows6(c).get(&ack.flow_key(), 0).is_err(),
            "nothing recorded"
        );
        let s = dp.service_counters(service_id(c, "web6")).unwrap();
        assert_eq!((s.stateless_forwards, s.new_flows), (1, 0));
    });
}

/// An ICMPv6 message from `src` to `dst` of `kind` (type, code) with `body`, with its
/// checksum (ICMPv6 has the same pseudo-header).
fn icmp6(src: Ipv6Addr, dst: Ipv6Addr, src_mac: Mac, kind: (u8, u8), body: &[u8]) -> Vec<u8> {
    let mut msg = vec![kind.0, kind.1, 0, 0];
    msg.extend_from_slice(body);
    let c = lb_tests::frame6::l4_checksum(src, dst, 58, &msg);
    msg[2..4].copy_from_slice(&c.to_be_bytes());
    let f = Frame6 {
        src_mac,
        dst_mac: [0x33, 0x33, 0, 0, 0, 1],
        src,
        dst,
        hop_limit: 255,
        ..Frame6::default()
    };
    with_next_header(&f, 58, &msg)
}

#[test]
fn neighbour_discovery_and_router_advertisements_pass_untouched() {
    let rig = Rig::build();
    let c0 = rig.c0;
    rig.with_dataplane(V6_CONFIG, |c| {
        let dp = c.dataplane();
        let target = VIP6.octets();
        let mut ns_body = vec![0u8; 4];
        ns_body.extend_from_slice(&target);
        let solicited: Ipv6Addr = "ff02::1:ff00:100".parse().unwrap();
        let cases: Vec<(&str, Vec<u8>, Reason)> = vec![
            (
                "neighbour solicitation for the VIP, to its solicited-node group",
                icmp6(CLIENT6, solicited, CLIENT_MAC, (135, 0), &ns_body),
                Reason::PassNoService,
            ),
            (
                // Unicast to the VIP (neighbour unreachability detection): lb_v6 sees
                // it, and ICMPv6 is the kernel's.
                "neighbour solicitation to the VIP itself",
                icmp6(CLIENT6, VIP6, CLIENT_MAC, (135, 0), &ns_body),
                Reason::PassNotTcp,
            ),
            (
                "router advertisement to all nodes",
                icmp6(
                    "fe80::1".parse().unwrap(),
                    "ff02::1".parse().unwrap(),
                    [0x02, 0, 0, 0, 0, 0x01],
                    (134, 0),
                    &[64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0],
                ),
                Reason::PassNoService,
            ),
        ];
        for (what, frame, reason) in cases {
            let r = run_counted(dp, c0, &frame, reason);
            expect_run(&r, XDP_PASS, &frame, &what);
        }
    });
}

#[test]
fn extension_headers_fragments_and_unserved_ports_pass_untouched_and_counted() {
    let rig = Rig::build();
    let c0 = rig.c0;
    rig.with_dataplane(V6_CONFIG, |c| {
        let dp = c.dataplane();
        let syn = client(41003, SYN);
        let segment = syn.bytes()[14 + 40..].to_vec();
        // A hop-by-hop header (8 bytes: next header TCP, length 0, a PadN option) before
        // the SYN, and a first fragment of it.
        let mut hop_by_hop = vec![PROTO_TCP, 0, 1, 4, 0, 0, 0, 0];
        hop_by_hop.extend_from_slice(&segment);
        let mut fragment = vec![PROTO_TCP, 0, 0, 1, 0x12, 0x34, 0x56, 0x78];
        fragment.extend_from_slice(&segment);
        let mut routing = vec![PROTO_TCP, 0, 0, 0, 0, 0, 0, 0];
        routing.extend_from_slice(&segment);
        let cases: Vec<(&str, Vec<u8>, u32, Reason)> = vec![
            (
                "hop-by-hop options",
                with_next_header(&syn, 0, &hop_by_hop),
                XDP_PASS,
                Reason::PassIpv6Extension,
            ),
            (
                "routing header",
                with_next_header(&syn, 43, &routing),
                XDP_PASS,
                Reason::PassIpv6Extension,
            ),
            (
                "fragment",
                with_next_header(&syn, 44, &fragment),
                XDP_PASS,
                Reason::PassFragment,
            ),
            (
                "a VIP port no service has",
                Frame6 {
                    dport: 81,
                    ..syn.clone()
                }
                .bytes(),
                XDP_PASS,
                Reason::PassNoService,
            ),
            (
                "hop limit 1",
                Frame6 {
                    hop_limit: 1,
                    ..syn.clone()
                }
                .bytes(),
                XDP_PASS,
                Reason::PassTtlExpired,
            ),
            (
                "from a link-local source",
                Frame6 {
                    src: "fe80::2".parse().unwrap(),
                    ..syn.clone()
                }
                .bytes(),
                XDP_DROP,
                Reason::DropMartianSource,
            ),
            (
                "truncated IPv6 header",
                syn.bytes()[..14 + 30].to_vec(),
                XDP_PASS,
                Reason::PassMalformedIpv6,
            ),
            (
                "payload length past the frame",
                {
                    let mut f = syn.bytes();
                    f[14 + 4..14 + 6].copy_from_slice(&200u16.to_be_bytes());
                    f
                },
                XDP_PASS,
                Reason::PassMalformedIpv6,
            ),
        ];
        for (what, frame, action, reason) in cases {
            let r = run_counted(dp, c0, &frame, reason);
            expect_run(&r, action, &frame, &what);
        }
        assert!(
            flows6(c).get(&syn.flow_key(), 0).is_err(),
            "no flow recorded"
        );
    });
}
