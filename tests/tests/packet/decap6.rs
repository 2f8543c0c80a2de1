//! The backends' decap program over IPv6 under BPF_PROG_TEST_RUN: IPv6-in-IPv6 and GUE
//! over IPv6 from the LB tier's IPv6 prefix (the frames `lb_dsr6` sends, built by
//! `lb_tests::dsr_frames6`) come out as the client's own IPv6 frame, byte for byte, on tc
//! and XDP; from outside the prefix they are dropped and counted, an inner packet that is
//! not IPv6 is dropped as malformed, and IPv6 that is not encapsulated passes untouched.
use std::net::Ipv6Addr;

use aya::programs::{TestRun, TestRunOptions, TestRunResult};
use lb_common::{decap::DecapCounter, ipv6::FlowKey6};
use lb_tests::{
    dsr_frames6::{gue6_header, wrapped6},
    frame::{Mac, ETH_LEN},
    frame6::Frame6,
    packet_rig::backend_mac,
};
use lb_userspace::decap::{program::DecapProgram, settings::Settings};

const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

/// The LB node's NIC (the outer frame's source MAC).
const NODE_MAC: Mac = [0x02, 0, 0, 0, 0x01, 0x01];
const BACKEND: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x11);

fn loaded() -> DecapProgram {
    lb_tests::needs::packet();
    // The LB's address 2001:db8:1::1 (`dsr_frames6::NODE_B0_6`) is in its /64.
    let settings = Settings::parse(
        "interfaces: [eth0]\nvips: [\"2001:db8:100::121\"]\nlb_prefixes: [10.1.0.0/24, \
         \"2001:db8:1::/64\"]\n",
    )
    .unwrap();
    let mut prog =
        DecapProgram::load().unwrap_or_else(|e| panic!("loading the decap object: {e:?}"));
    prog.configure(&settings.program_config()).unwrap();
    prog
}

/// The client's data segment to the VIP, as the backend must get it: the outer frame's
/// Ethernet header (to the backend's MAC from the node's) in front of the client's IPv6
/// packet.
fn inner() -> Frame6 {
    Frame6 {
        dst_mac: backend_mac(0x11),
        src_mac: NODE_MAC,
        dst: "2001:db8:100::121".parse().unwrap(),
        flags: 0x18,
        payload: b"hello through the IPv6 tunnel".to_vec(),
        ..Frame6::default()
    }
}

fn ip6ip6(inner: &[u8]) -> Vec<u8> {
    wrapped6(NODE_MAC, BACKEND, 41, &[], &inner[ETH_LEN..])
}

fn gue6(flow: &FlowKey6, inner: &[u8]) -> Vec<u8> {
    let udp = gue6_header(flow, 42, 6080, BACKEND, &inner[ETH_LEN..]);
    wrapped6(NODE_MAC, BACKEND, 17, &udp[..8], &inner[ETH_LEN..])
}

/// The same frame from 2001:db8:99::1, outside the LB tier's prefix.
fn from_outside(mut frame: Vec<u8>) -> Vec<u8> {
    let outsider: Ipv6Addr = "2001:db8:99::1".parse().unwrap();
    frame[ETH_LEN + 8..ETH_LEN + 24].copy_from_slice(&outsider.octets());
    frame
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
fn tc_ip6ip6_and_gue_over_ipv6_from_the_lb_tier_come_out_as_the_clients_frame() {
    let prog = loaded();
    let client = inner();
    let inner = client.bytes();
    let frame = ip6ip6(&inner);
    assert_eq!(frame.len(), inner.len() + 40);
    assert_eq!(run(prog.tc(), &frame), (TC_ACT_OK, inner.clone()));
    let frame = gue6(&client.flow_key(), &inner);
    assert_eq!(frame.len(), inner.len() + 48);
    assert_eq!(run(prog.tc(), &frame), (TC_ACT_OK, inner.clone()));
    assert_eq!(
        counted(&prog),
        [(DecapCounter::DecapIpip, 1), (DecapCounter::DecapGue, 1)]
    );
}

#[test]
fn tc_ipv6_from_outside_the_prefix_or_not_carrying_ipv6_is_dropped_and_plain_ipv6_passes() {
    let prog = loaded();
    let client = inner();
    let inner = client.bytes();
    for frame in [
        from_outside(ip6ip6(&inner)),
        from_outside(gue6(&client.flow_key(), &inner)),
    ] {
        assert_eq!(run(prog.tc(), &frame).0, TC_ACT_SHOT);
    }
    let mut not_ipv6 = ip6ip6(&inner);
    not_ipv6[ETH_LEN + 40] = 0x45; // an IPv4 version nibble where the inner header starts
    assert_eq!(run(prog.tc(), &not_ipv6).0, TC_ACT_SHOT);
    // Plain IPv6 TCP, and UDP from the LB tier to another port: the same bytes arrive.
    let mut udp_elsewhere = gue6(&client.flow_key(), &inner);
    udp_elsewhere[ETH_LEN + 42..ETH_LEN + 44].copy_from_slice(&53u16.to_be_bytes());
    for frame in [&inner, &udp_elsewhere] {
        assert_eq!(run(prog.tc(), frame), (TC_ACT_OK, frame.clone()));
    }
    assert_eq!(
        counted(&prog),
        [
            (DecapCounter::DropOutsidePrefix, 2),
            (DecapCounter::DropMalformed, 1),
            (DecapCounter::PassNotEncapsulated, 2),
        ]
    );
}

#[test]
fn xdp_decapsulates_ipv6_like_tc() {
    let prog = loaded();
    let client = inner();
    let inner = client.bytes();
    for frame in [ip6ip6(&inner), gue6(&client.flow_key(), &inner)] {
        assert_eq!(run(prog.xdp(), &frame), (XDP_PASS, inner.clone()));
    }
    assert_eq!(run(prog.xdp(), &from_outside(ip6ip6(&inner))).0, XDP_DROP);
    assert_eq!(run(prog.xdp(), &inner), (XDP_PASS, inner.clone()));
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
