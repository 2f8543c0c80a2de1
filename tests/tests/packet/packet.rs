//! Packet tests: the real XDP object, loaded with real maps filled by the controller,
//! fed crafted frames through BPF_PROG_TEST_RUN in a [`Rig`] namespace. Every test
//! asserts the action, every byte of the output, and which reason counter moved.
use std::net::Ipv4Addr;

use lb_common::{counters::Reason, flow::FlowKey};
use lb_tests::{
    frame::{checksums_valid, dst_ip, Frame, ETH_LEN},
    packet_exchange,
    packet_rig::*,
};
use lb_userspace::{control::tables::Controller, kernel::KernelDataplane};

const RING: u32 = 1009;

fn with_dataplane<T: Send>(
    rig: &Rig,
    f: impl FnOnce(&mut Controller<KernelDataplane>) -> T + Send,
) -> T {
    rig.with_dataplane(CONFIG, f)
}

/// Runs one frame through the program as if received on `ifindex`.
fn run(dp: &KernelDataplane, ifindex: u32, frame: &[u8]) -> (u32, Vec<u8>) {
    let r = run_once(dp.program(), ifindex, frame);
    (r.action, r.output)
}

/// [`packet_exchange::run_counted`] as (action, output).
fn run_counted(dp: &KernelDataplane, ifindex: u32, frame: &[u8], reason: Reason) -> (u32, Vec<u8>) {
    let r = packet_exchange::run_counted(dp, ifindex, frame, reason);
    (r.action, r.output)
}

fn web_flow(sport: u16) -> FlowKey {
    client_syn(sport).flow_key()
}

/// The backend address userspace's own copy of the Maglev table predicts for a flow.
fn predicted_backend(c: &Controller<KernelDataplane>, sport: u16) -> Ipv4Addr {
    table_backend(c, "web", sport)
}
#[test]
fn syn_to_vip_is_rewritten_to_the_predicted_backend_and_redirected() {
    let rig = Rig::build();
    let (c0_mac, b0_mac) = (rig.c0_mac, rig.b0_mac);
    with_dataplane(&rig, |c| {
        let syn = Frame {
            dst_mac: c0_mac,
            ..client_syn(40000)
        };
        let (action, out) = run_counted(
            c.dataplane(),
            rig.c0,
            &syn.bytes(),
            Reason::RedirectInterface,
        );
        assert_eq!(action, XDP_REDIRECT);
        let backend = predicted_backend(c, 40000);
        assert_eq!(
            dst_ip(&out),
            backend,
            "kernel and userspace disagree on the Maglev pick"
        );
        let expected = Frame {
            dst_mac: backend_mac(backend.octets()[3]),
            src_mac: b0_mac,
            dst: backend,
            dport: 8080,
            ttl: 63,
            ..syn.clone()
        };
        assert_eq!(out, expected.bytes(), "every byte of the rewritten SYN");
        assert!(checksums_valid(&out));
        // `web` takes SYNs without recording them: the flow is new when the client's
        // next packet records it.
        let counters = c.dataplane().service_counters(0).unwrap();
        assert_eq!((counters.new_flows, counters.packets_to_backend), (0, 1));
        assert_eq!(counters.bytes_to_backend, out.len() as u64);
    });
}

#[test]
fn later_packets_of_a_flow_stay_on_its_backend_and_replies_come_back_from_the_vip() {
    let rig = Rig::build();
    let (c0_mac, b0_mac) = (rig.c0_mac, rig.b0_mac);
    with_dataplane(&rig, |c| {
        let dp = c.dataplane();
        let (_, first) = run(dp, rig.c0, &client_syn(40001).bytes());
        let backend = dst_ip(&first);
        syn_ack_passes(dp, rig.b0, &client_syn(40001), backend);
        let ack = Frame {
            flags: 0x10,
            seq: 1001,
            ack: BACKEND_ISN + 1,
            payload: b"GET / HTTP/1.0\r\n\r\n".to_vec(),
            ..client_syn(40001)
        };
        for _ in 0..5 {
            let (action, out) = run(dp, rig.c0, &ack.bytes());
            assert_eq!(action, XDP_REDIRECT);
            assert_eq!(dst_ip(&out), backend);
            assert!(checksums_valid(&out));
        }
        let reply = Frame {
            dst_mac: b0_mac,
            src_mac: backend_mac(backend.octets()[3]),
            src: backend,
            dst: CLIENT,
            sport: 8080,
            dport: 40001,
            flags: 0x18,
            payload: b"HTTP/1.0 200 OK\r\n\r\n".to_vec(),
            ..Frame::default()
        };
        let (action, out) = run_counted(dp, rig.b0, &reply.bytes(), Reason::RedirectInterface);
        assert_eq!(action, XDP_REDIRECT);
        let expected = as_from_vip(&reply, c0_mac);
        assert_eq!(out, expected.bytes(), "every byte of the reply");
        let s = dp.service_counters(0).unwrap();
        assert_eq!(
            (s.new_flows, s.packets_to_backend, s.packets_to_client),
            (1, 6, 2)
        );
    });
}

#[test]
fn many_flows_reach_every_backend_exactly_where_userspace_predicts() {
    let rig = Rig::build();
    with_dataplane(&rig, |c| {
        let mut per_backend = std::collections::BTreeMap::new();
        for sport in 20000..20300u16 {
            let (action, out) = run(c.dataplane(), rig.c0, &client_syn(sport).bytes());
            assert_eq!(action, XDP_REDIRECT);
            assert_eq!(dst_ip(&out), predicted_backend(c, sport), "port {sport}");
            *per_backend.entry(dst_ip(&out)).or_insert(0) += 1;
        }
        assert_eq!(per_backend.len(), 3, "{per_backend:?}");
        assert!(per_backend.values().all(|n| *n >= 60), "{per_backend:?}");
    });
}

#[test]
fn a_non_syn_packet_without_a_flow_is_placed_by_maglev_and_records_nothing() {
    let rig = Rig::build();
    with_dataplane(&rig, |c| {
        let ack = Frame {
            flags: 0x10,
            ..client_syn(40002)
        };
        let (action, out) = run(c.dataplane(), rig.c0, &ack.bytes());
        assert_eq!(action, XDP_REDIRECT);
        assert_eq!(dst_ip(&out), predicted_backend(c, 40002));
        assert!(
            c.dataplane().flows.get(&web_flow(40002), 0).is_err(),
            "no flow recorded: only the backend's answer records it"
        );
        let web = c.dataplane().service_counters(0).unwrap();
        assert_eq!((web.new_flows, web.stateless_forwards), (0, 1));
    });
}

#[test]
fn a_backend_behind_the_ingress_nic_gets_xdp_tx() {
    let rig = Rig::build();
    let c0_mac = rig.c0_mac;
    with_dataplane(&rig, |c| {
        let syn = Frame {
            dst: Ipv4Addr::new(10, 0, 0, 101),
            ..client_syn(40003)
        };
        let (action, out) =
            run_counted(c.dataplane(), rig.c0, &syn.bytes(), Reason::TxSameInterface);
        assert_eq!(action, XDP_TX);
        let expected = Frame {
            dst_mac: backend_mac(77),
            src_mac: c0_mac,
            dst: Ipv4Addr::new(10, 10, 0, 77),
            dport: 8080,
            ttl: 63,
            ..syn
        };
        assert_eq!(out, expected.bytes());
    });
}

#[test]
fn an_unresolved_neighbour_hands_the_rewritten_packet_to_the_kernel() {
    let rig = Rig::build();
    with_dataplane(&rig, |c| {
        let syn = Frame {
            dst: Ipv4Addr::new(10, 0, 0, 102),
            ..client_syn(40004)
        };
        let (action, out) =
            run_counted(c.dataplane(), rig.c0, &syn.bytes(), Reason::PassNoNeighbour);
        assert_eq!(action, XDP_PASS);
        // Rewritten, but MACs and TTL left for the kernel's forwarding path.
        let expected = Frame {
            dst: Ipv4Addr::new(10, 1, 0, 99),
            dport: 8080,
            ..syn
        };
        assert_eq!(out, expected.bytes());
    });
}

#[test]
fn a_service_without_backends_drops() {
    let rig = Rig::build();
    with_dataplane(&rig, |c| {
        let syn = Frame {
            dst: Ipv4Addr::new(10, 0, 0, 103),
            ..client_syn(40005)
        };
        let (action, _) = run_counted(c.dataplane(), rig.c0, &syn.bytes(), Reason::DropNoBackend);
        assert_eq!(action, XDP_DROP);
    });
}

/// Frames the data path must not rewrite: each gets the documented action and reason,
/// and a passed frame comes out byte for byte as it went in. (Frames shorter than an
/// Ethernet header cannot be tested: BPF_PROG_TEST_RUN rejects them with EINVAL, as no
/// driver delivers them; the program still checks for them.)
#[test]
fn malformed_and_foreign_frames_get_the_documented_action() {
    let rig = Rig::build();
    with_dataplane(&rig, |c| {
        let good = client_syn(40006).bytes();
        let edit = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut v = good.clone();
            f(&mut v);
            v
        };
        let ip = ETH_LEN;
        let tcp = ETH_LEN + 20;
        let cases: Vec<(&str, Vec<u8>, u32, Reason)> = vec![
            (
                "arp",
                edit(&|v| v[12..14].copy_from_slice(&[0x08, 0x06])),
                XDP_PASS,
                Reason::PassNotIpv4,
            ),
            (
                "ipv6 ethertype over an ipv4 header",
                edit(&|v| v[12..14].copy_from_slice(&[0x86, 0xdd])),
                XDP_PASS,
                Reason::PassMalformedIpv6,
            ),
            (
                "truncated ipv4",
                good[..ETH_LEN + 12].to_vec(),
                XDP_PASS,
                Reason::PassMalformedIpv4,
            ),
            (
                "ip version 6 in v4 ethertype",
                edit(&|v| v[ip] = 0x65),
                XDP_PASS,
                Reason::PassMalformedIpv4,
            ),
            (
                "ihl 4",
                edit(&|v| v[ip] = 0x44),
                XDP_PASS,
                Reason::PassMalformedIpv4,
            ),
            (
                "ip options (ihl 6)",
                edit(&|v| v[ip] = 0x46),
                XDP_PASS,
                Reason::PassIpOptions,
            ),
            (
                "total length beyond frame",
                edit(&|v| v[ip + 2..ip + 4].copy_from_slice(&200u16.to_be_bytes())),
                XDP_PASS,
                Reason::PassMalformedIpv4,
            ),
            (
                "total length below header",
                edit(&|v| v[ip + 2..ip + 4].copy_from_slice(&10u16.to_be_bytes())),
                XDP_PASS,
                Reason::PassMalformedIpv4,
            ),
            (
                "more fragments",
                edit(&|v| v[ip + 6] = 0x20),
                XDP_PASS,
                Reason::PassFragment,
            ),
            (
                "fragment offset",
                edit(&|v| v[ip + 7] = 0x10),
                XDP_PASS,
                Reason::PassFragment,
            ),
            (
                "udp",
                edit(&|v| v[ip + 9] = 17),
                XDP_PASS,
                Reason::PassNotTcp,
            ),
            (
                "frame cut inside the tcp header",
                good[..tcp + 10].to_vec(),
                XDP_PASS,
                Reason::PassMalformedIpv4,
            ),
            (
                "frame and ip length both cut tcp",
                edit(&|v| {
                    v.truncate(tcp + 10);
                    v[ip + 2..ip + 4].copy_from_slice(&30u16.to_be_bytes());
                }),
                XDP_PASS,
                Reason::PassMalformedTcp,
            ),
            (
                "ip length cuts tcp",
                edit(&|v| v[ip + 2..ip + 4].copy_from_slice(&30u16.to_be_bytes())),
                XDP_PASS,
                Reason::PassMalformedTcp,
            ),
            (
                "tcp data offset 2 to vip",
                edit(&|v| v[tcp + 12] = 2 << 4),
                XDP_DROP,
                Reason::DropMalformedTcp,
            ),
            (
                "tcp data offset past end to vip",
                edit(&|v| v[tcp + 12] = 15 << 4),
                XDP_DROP,
                Reason::DropMalformedTcp,
            ),
            (
                "ttl 1 to vip",
                Frame {
                    ttl: 1,
                    ..client_syn(40006)
                }
                .bytes(),
                XDP_PASS,
                Reason::PassTtlExpired,
            ),
            (
                "not a vip",
                Frame {
                    dst: Ipv4Addr::new(10, 10, 0, 50),
                    ..client_syn(40006)
                }
                .bytes(),
                XDP_PASS,
                Reason::PassNoService,
            ),
            (
                "vip on another port",
                Frame {
                    dport: 443,
                    ..client_syn(40006)
                }
                .bytes(),
                XDP_PASS,
                Reason::PassNoService,
            ),
        ];
        for (name, frame, action, reason) in cases {
            let (got, out) = run_counted(c.dataplane(), rig.c0, &frame, reason);
            assert_eq!(got, action, "{name}");
            if action == XDP_PASS {
                assert_eq!(out, frame, "{name}: a passed frame must be unchanged");
            }
        }
    });
}

/// The tables are written through a memory mapping; what the kernel's own map lookup
/// reads must be exactly what the controller planned, entry by entry.
#[test]
fn the_kernel_ring_holds_exactly_the_planned_table() {
    let rig = Rig::build();
    with_dataplane(&rig, |c| {
        let plan = c.plan().unwrap();
        let web = &plan.services[0];
        for sport in 0..2000u16 {
            let (action, out) = run(c.dataplane(), rig.c0, &client_syn(50000 + sport).bytes());
            assert_eq!(action, XDP_REDIRECT);
            assert_eq!(dst_ip(&out), predicted_backend(c, 50000 + sport));
        }
        assert_eq!(web.ring.len(), RING as usize);
    });
}
