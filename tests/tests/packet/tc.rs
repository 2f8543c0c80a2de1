//! `lb_tc`, the tc ingress program, under BPF_PROG_TEST_RUN with the maps the controller
//! filled: a connection's frames come out exactly as `lb_xdp` sends them (the same
//! rewrite, TTL and MACs, every checksum whole), with tc's actions; what the tc path does
//! not carry is passed to the kernel untouched, and a packet for a program only XDP has
//! is dropped and counted. A test run's skb has no checksum offload state, as from a NIC
//! without offloads; a veth's partial checksums are exercised end to end by the lab's tc
//! test (`lab::tc_hook`).
use lb_common::counters::Reason;
use lb_tests::{
    frame::{checksums_valid, Frame},
    frame6::Frame6,
    netns, packet_exchange,
    packet_rig::*,
    rig_config_with, rig_dsr_services,
    udp_frame::Datagram,
};
use lb_userspace::kernel::KernelDataplane;

/// Runs a frame through `lb_tc` as received on `ifindex` and checks that exactly one
/// reason counter moved, by one.
fn run_counted(dp: &KernelDataplane, ifindex: u32, frame: &[u8], reason: Reason) -> RunResult {
    packet_exchange::counted(dp, reason, || run_tc_once(dp.tc_program(), ifindex, frame))
}

#[test]
fn a_connection_through_tc_gets_exactly_the_frames_xdp_sends() {
    let rig = Rig::build();
    let (c0_mac, b0_mac) = (rig.c0_mac, rig.b0_mac);
    rig.with_dataplane_at_tc(CONFIG, |c| {
        let web = service_id(c, "web");
        // The same connection through each program, from its own client port; `lb_xdp`'s
        // frames are the reference the expected frames are checked against too.
        for (sport, tc) in [(41000u16, true), (41001, false)] {
            let dp = c.dataplane();
            let run = |ifindex: u32, frame: &Frame| {
                let r = if tc {
                    run_counted(dp, ifindex, &frame.bytes(), Reason::RedirectInterface)
                } else {
                    run_once(dp.program(), ifindex, &frame.bytes())
                };
                let action = if tc { TC_ACT_REDIRECT } else { XDP_REDIRECT };
                (r, action)
            };
            let syn = Frame {
                dst_mac: c0_mac,
                ..client_syn(sport)
            };
            let backend = table_backend(c, "web", sport);
            let (r, action) = run(rig.c0, &syn);
            let to_backend = |f: &Frame| as_to_backend(f, (backend, 8080), b0_mac).bytes();
            expect_run(&r, action, &to_backend(&syn), &format!("SYN, tc {tc}"));
            let syn_ack = Frame {
                dst_mac: b0_mac,
                ..syn_ack_of(&syn, backend)
            };
            let (r, action) = run(rig.b0, &syn_ack);
            let to_client = as_from_vip(&syn_ack, c0_mac).bytes();
            expect_run(&r, action, &to_client, &format!("SYN-ACK, tc {tc}"));
            let request = Frame {
                payload: b"GET / HTTP/1.0\r\n\r\n".to_vec(),
                flags: 0x18,
                ..ack_of(&syn)
            };
            let (r, action) = run(rig.c0, &request);
            expect_run(
                &r,
                action,
                &to_backend(&request),
                &format!("request, tc {tc}"),
            );
            let response = Frame {
                flags: 0x18,
                seq: BACKEND_ISN + 1,
                ack: request.seq + request.payload.len() as u32,
                payload: b"HTTP/1.0 200 OK\r\n\r\nhello".to_vec(),
                ..syn_ack.clone()
            };
            let (r, action) = run(rig.b0, &response);
            let to_client = as_from_vip(&response, c0_mac).bytes();
            expect_run(&r, action, &to_client, &format!("response, tc {tc}"));
            assert!(checksums_valid(&r.output));
            let fin = Frame {
                flags: 0x11,
                seq: request.seq + request.payload.len() as u32,
                payload: Vec::new(),
                ..request.clone()
            };
            let (r, action) = run(rig.c0, &fin);
            expect_run(&r, action, &to_backend(&fin), &format!("FIN, tc {tc}"));
        }
        // Both connections recorded by their ACK, counted alike.
        let s = c.dataplane().service_counters(web).unwrap();
        assert_eq!(
            (s.new_flows, s.packets_to_backend, s.packets_to_client),
            (2, 6, 4)
        );
    });
}

#[test]
fn tc_sends_a_frame_back_out_of_its_own_nic_and_records_a_round_robin_syn() {
    let rig = Rig::build();
    let c0_mac = rig.c0_mac;
    rig.with_dataplane_at_tc(CONFIG, |c| {
        let dp = c.dataplane();
        let syn = Frame {
            dst_mac: c0_mac,
            dst: vip_of(c, "same-nic"),
            ..client_syn(42000)
        };
        let r = run_counted(dp, rig.c0, &syn.bytes(), Reason::TxSameInterface);
        let backend = "10.10.0.77".parse().unwrap();
        let expected = as_to_backend(&syn, (backend, 8080), c0_mac).bytes();
        expect_run(&r, TC_ACT_REDIRECT, &expected, &"same-NIC SYN");
        // Round robin records the flow on the SYN: the retransmitted SYN follows it.
        let rr = service_id(c, "rr");
        let syn = Frame {
            dst_mac: c0_mac,
            dst: vip_of(c, "rr"),
            ..client_syn(42001)
        };
        let first = run_counted(dp, rig.c0, &syn.bytes(), Reason::RedirectInterface);
        assert_eq!(first.action, TC_ACT_REDIRECT);
        let again = run_counted(dp, rig.c0, &syn.bytes(), Reason::RedirectInterface);
        expect_run(&again, TC_ACT_REDIRECT, &first.output, &"retransmitted SYN");
        let s = dp.service_counters(rr).unwrap();
        assert_eq!((s.new_flows, s.packets_to_backend), (1, 2));
    });
}

#[test]
fn what_the_tc_path_does_not_carry_is_passed_untouched_or_dropped_and_counted() {
    let rig = Rig::build();
    let config = rig_config_with!(
        r#"  - name: guarded
    vip: 10.0.0.130
    port: 80
    filter: { deny: [10.10.0.0/24] }
    backends:
      - { address: 10.1.0.11, port: 8080, zone: az-a }
"#,
        rig_dsr_services!()
    );
    rig.with_dataplane_at_tc(config, |c| {
        let dp = c.dataplane();
        let passes = |frame: &[u8], reason: Reason| {
            let r = run_counted(dp, rig.c0, frame, reason);
            expect_run(&r, TC_ACT_UNSPEC, frame, &format!("{reason:?}"));
        };
        let not_a_vip = Frame {
            dst: "10.99.0.1".parse().unwrap(),
            ..client_syn(43000)
        };
        passes(&not_a_vip.bytes(), Reason::PassNoService);
        // UDP and IPv6 are `lb_xdp`'s hand-overs; at tc they are the kernel's.
        let datagram = Datagram {
            dst: vip_of(c, "web"),
            ..Datagram::default()
        };
        passes(&datagram.bytes(), Reason::PassNotTcp);
        passes(&Frame6::default().bytes(), Reason::PassNotIpv4);
        // Edge protection and direct server return are programs of `lb_xdp`'s own:
        // dropped, never forwarded unchecked or unwrapped.
        for (service, reason) in [
            ("guarded", Reason::DropEdgeDenied),
            ("ipip", Reason::DropDsrUnavailable),
        ] {
            let syn = Frame {
                dst: vip_of(c, service),
                ..client_syn(43001)
            };
            let r = run_counted(dp, rig.c0, &syn.bytes(), reason);
            assert_eq!(r.action, TC_ACT_SHOT, "{service}");
        }
    });
}

#[test]
fn a_packet_too_big_for_the_backends_nic_goes_to_the_kernel_with_only_its_addresses_rewritten() {
    let rig = Rig::build();
    netns::ns_ip(&rig.ns, &["link", "set", "b0", "mtu", "1280"]);
    let c0_mac = rig.c0_mac;
    rig.with_dataplane_at_tc(CONFIG, |c| {
        let dp = c.dataplane();
        let web = service_id(c, "web");
        // A segment of 1,400 bytes of data: a 1,440-byte IPv4 packet, over b0's 1,280.
        let big = Frame {
            dst_mac: c0_mac,
            flags: 0x18,
            payload: vec![b'x'; 1400],
            ..client_syn(44000)
        };
        // A small one first: its route to the backend is cached, so the big one meets no
        // FIB lookup (which would refuse it too) but the MTU check before the hop.
        let small = Frame {
            payload: b"hi".to_vec(),
            ..big.clone()
        };
        let r = run_counted(dp, rig.c0, &small.bytes(), Reason::RedirectInterface);
        assert_eq!(r.action, TC_ACT_REDIRECT);
        let r = run_counted(dp, rig.c0, &big.bytes(), Reason::PassFibFailed);
        let backend = table_backend(c, "web", 44000);
        // The kernel gets it as it would route it: the TTL and MACs of the client's hop.
        let expected = Frame {
            dst: backend,
            dport: 8080,
            ..big.clone()
        };
        expect_run(&r, TC_ACT_UNSPEC, &expected.bytes(), &"too big");
        assert!(checksums_valid(&r.output));
        let s = dp.service_counters(web).unwrap();
        assert_eq!(s.packets_to_backend, 2);
    });
}
