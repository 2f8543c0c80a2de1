//! The backends' decap program (`lb_decap_tc`, `lb_decap_xdp`) under BPF_PROG_TEST_RUN:
//! IPIP and GUE from the LB tier come out as the client's own frame, byte for byte; from
//! outside the tier they are dropped and counted; anything else passes untouched.
use std::net::Ipv4Addr;

use aya::programs::{TestRun, TestRunOptions, TestRunResult};
use lb_common::decap::DecapCounter;
use lb_tests::{
    decap_frames::{encapsulate, Encap},
    frame::Frame,
};
use lb_userspace::decap::{program::DecapProgram, settings::Settings};

const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

const LB: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 5);
const OUTSIDER: Ipv4Addr = Ipv4Addr::new(10, 9, 9, 9);
const BACKEND: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 11);
const GUE: Encap = Encap::Gue {
    port: 6080,
    sport: 51234,
};

fn loaded() -> DecapProgram {
    lb_tests::needs::packet();
    let settings = Settings::parse(
        "interfaces: [eth0]\nvips: [10.0.0.100]\nlb_prefixes: [10.1.0.0/24, 192.168.50.7/32]\n",
    )
    .unwrap();
    let mut prog =
        DecapProgram::load().unwrap_or_else(|e| panic!("loading the decap object: {e:?}"));
    prog.configure(&settings.program_config()).unwrap();
    prog
}

/// The client's SYN to the VIP, with some payload so the frame is longer than the head
/// the program reads.
fn inner() -> Vec<u8> {
    Frame {
        payload: b"hello through the tunnel".to_vec(),
        ..Frame::default()
    }
    .bytes()
}

/// (return value, output frame) of the tc program.
fn run_tc(prog: &DecapProgram, frame: &[u8]) -> (u32, Vec<u8>) {
    run(prog.tc(), frame)
}

fn run_xdp(prog: &DecapProgram, frame: &[u8]) -> (u32, Vec<u8>) {
    run(prog.xdp(), frame)
}

/// (return value, output frame) of one BPF_PROG_TEST_RUN of `program`.
fn run<P>(program: &P, frame: &[u8]) -> (u32, Vec<u8>)
where
    P: for<'a> TestRun<Opts<'a> = TestRunOptions<'a>, Result = TestRunResult>,
{
    let mut out = vec![0u8; frame.len() + 64];
    let result = program
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..TestRunOptions::default()
        })
        .expect("BPF_PROG_TEST_RUN");
    out.truncate(result.data_size_out as usize);
    (result.return_value, out)
}

/// The counters that are not zero.
fn counted(prog: &DecapProgram) -> Vec<(DecapCounter, u64)> {
    prog.counters()
        .unwrap()
        .into_iter()
        .filter(|(_, v)| *v != 0)
        .collect()
}

#[test]
fn tc_ipip_from_the_lb_tier_comes_out_as_the_clients_frame() {
    let prog = loaded();
    let inner = inner();
    let frame = encapsulate(Encap::Ipip, LB, BACKEND, &inner);
    assert_eq!(frame.len(), inner.len() + 20);
    assert_eq!(run_tc(&prog, &frame), (TC_ACT_OK, inner));
    assert_eq!(counted(&prog), [(DecapCounter::DecapIpip, 1)]);
}

#[test]
fn tc_gue_from_the_lb_tier_comes_out_as_the_clients_frame() {
    let prog = loaded();
    let inner = inner();
    let frame = encapsulate(GUE, Ipv4Addr::new(192, 168, 50, 7), BACKEND, &inner);
    assert_eq!(frame.len(), inner.len() + 28);
    assert_eq!(run_tc(&prog, &frame), (TC_ACT_OK, inner));
    assert_eq!(counted(&prog), [(DecapCounter::DecapGue, 1)]);
}

#[test]
fn tc_encapsulated_packets_from_outside_the_lb_tier_are_dropped_and_counted() {
    let prog = loaded();
    let inner = inner();
    for encap in [Encap::Ipip, GUE] {
        let frame = encapsulate(encap, OUTSIDER, BACKEND, &inner);
        assert_eq!(run_tc(&prog, &frame).0, TC_ACT_SHOT, "{encap:?}");
    }
    // Next to the LB's /32, not in it.
    let frame = encapsulate(Encap::Ipip, Ipv4Addr::new(192, 168, 50, 8), BACKEND, &inner);
    assert_eq!(run_tc(&prog, &frame).0, TC_ACT_SHOT);
    assert_eq!(counted(&prog), [(DecapCounter::DropOutsidePrefix, 3)]);
}

#[test]
fn tc_traffic_that_is_not_encapsulated_passes_untouched() {
    let prog = loaded();
    // Plain TCP, UDP to another port (from the LB tier, too), an ARP frame, and an IPv4
    // frame too short for a UDP header.
    let tcp = inner();
    let mut udp_elsewhere = encapsulate(
        Encap::Gue {
            port: 53,
            sport: 5353,
        },
        LB,
        BACKEND,
        &tcp,
    );
    // Not encapsulated by this port: the same bytes arrive.
    udp_elsewhere[14 + 20 + 6..14 + 20 + 8].copy_from_slice(&[0, 0]);
    let mut arp = tcp[..42].to_vec();
    arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    let mut short_udp = udp_elsewhere[..14 + 20 + 4].to_vec();
    short_udp[14 + 2..14 + 4].copy_from_slice(&24u16.to_be_bytes());
    for frame in [&tcp, &udp_elsewhere, &arp, &short_udp] {
        assert_eq!(run_tc(&prog, frame), (TC_ACT_OK, frame.clone()));
    }
    assert_eq!(counted(&prog), [(DecapCounter::PassNotEncapsulated, 4)]);
}

#[test]
fn tc_an_inner_packet_that_is_not_ipv4_is_dropped_as_malformed() {
    let prog = loaded();
    let mut frame = encapsulate(Encap::Ipip, LB, BACKEND, &inner());
    frame[14 + 20] = 0x60; // an IPv6 version nibble where the inner IPv4 header starts
    assert_eq!(run_tc(&prog, &frame).0, TC_ACT_SHOT);
    // A fragment of an outer packet cannot be undone either.
    let mut fragment = encapsulate(Encap::Ipip, LB, BACKEND, &inner());
    fragment[14 + 6] = 0x20; // MF
    assert_eq!(run_tc(&prog, &fragment).0, TC_ACT_SHOT);
    assert_eq!(counted(&prog), [(DecapCounter::DropMalformed, 2)]);
}

#[test]
fn xdp_decapsulates_drops_and_passes_like_tc() {
    let prog = loaded();
    let inner = inner();
    for encap in [Encap::Ipip, GUE] {
        let frame = encapsulate(encap, LB, BACKEND, &inner);
        assert_eq!(
            run_xdp(&prog, &frame),
            (XDP_PASS, inner.clone()),
            "{encap:?}"
        );
    }
    let outsider = encapsulate(Encap::Ipip, OUTSIDER, BACKEND, &inner);
    assert_eq!(run_xdp(&prog, &outsider).0, XDP_DROP);
    assert_eq!(run_xdp(&prog, &inner), (XDP_PASS, inner.clone()));
    assert_eq!(
        counted(&prog),
        [
            (DecapCounter::DecapIpip, 1),
            (DecapCounter::DecapGue, 1),
            (DecapCounter::DropOutsidePrefix, 1),
            (DecapCounter::PassNotEncapsulated, 1),
        ]
    );
}
