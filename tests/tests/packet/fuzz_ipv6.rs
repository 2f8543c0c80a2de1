//! IPv6 packet fuzzing through BPF_PROG_TEST_RUN, as `fuzz` and `fuzz_udp` do for IPv4:
//! seeded random and mutated IPv6 frames (5,000 per run; `LB_FUZZ_SEED` and
//! `LB_FUZZ_PACKETS` to reproduce or extend): TCP and UDP to the rig's IPv6 services and
//! to ports none has, the backends' replies, other next headers, cut and lying lengths,
//! hop limits 0 to 2, zero UDP checksums. For every frame the oracle derives from the
//! config and the flows earlier frames recorded, independently of the data path's code,
//! the action it must get; for a rewritten frame every output byte but the backend's
//! choice (one the config allows, whose MAC the frame must carry): the MACs, hop limit
//! minus one, the NAT'd address and port, and an L4 checksum that verifies from scratch
//! exactly when the input's did, never zero for UDP.
use std::{collections::HashSet, net::Ipv6Addr};

use lb_tests::{
    frame::Mac,
    frame6::{l4_checksum, Frame6, IP6_LEN, PROTO_TCP, PROTO_UDP},
    fuzz_oracle::{seed_and_count, Rng},
    packet_rig::*,
    rig_config_with,
};

const CONFIG: &str = rig_config_with!(lb_tests::rig_web6_service!(), lb_tests::rig_dns6_service!());

const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x100);
const L4_AT: usize = 14 + IP6_LEN;

/// A plausible frame, maybe mutated, and whether it comes from the backends' side.
fn frame(rng: &mut Rng) -> (Vec<u8>, bool) {
    let from_backend = rng.below(3) == 0;
    let proto = rng.pick(&[PROTO_TCP, PROTO_UDP]);
    let port = 1024 + rng.below(6) as u16;
    let mut f = Frame6 {
        proto,
        flags: rng.pick(&[0x02, 0x02, 0x10, 0x18, 0x11, 0x14, 0x12, 0x04]),
        hop_limit: rng.pick(&[64, 64, 64, 2, 1, 0]),
        payload: vec![0x61; rng.below(40) as usize],
        zero_checksum: rng.below(8) == 0,
        ..Frame6::default()
    };
    if from_backend {
        let b = backend6(rng.pick(&[11, 12, 13]));
        f.src_mac = backend_mac(b.octets()[15]);
        f.src = b;
        f.dst = CLIENT6;
        f.sport = rng.pick(&[8080, 5353, 80, 53]);
        f.dport = port;
    } else {
        f.src_mac = CLIENT_MAC;
        f.src = CLIENT6;
        f.dst = VIP6;
        f.sport = port;
        f.dport = rng.pick(&[80, 80, 53, 53, 81]);
    }
    let mut bytes = f.bytes();
    match rng.below(10) {
        0 => bytes[14 + 6] = rng.pick(&[0, 43, 44, 58, 60, 59, 132]),
        1 => {
            // BPF_PROG_TEST_RUN takes no frame shorter than an Ethernet header.
            let len = 14 + rng.below(bytes.len() as u64 - 14) as usize;
            bytes.truncate(len);
        }
        2 => {
            let lie = rng.below(90) as u16;
            bytes[14 + 4..14 + 6].copy_from_slice(&lie.to_be_bytes());
        }
        3 if proto == PROTO_TCP && bytes.len() > L4_AT + 12 => {
            bytes[L4_AT + 12] = (rng.below(16) as u8) << 4
        }
        4 if proto == PROTO_UDP && bytes.len() > L4_AT + 6 => {
            let lie = rng.below(80) as u16;
            bytes[L4_AT + 4..L4_AT + 6].copy_from_slice(&lie.to_be_bytes());
        }
        _ => {}
    }
    (bytes, from_backend)
}

/// What the frame must get.
#[derive(Debug, PartialEq)]
enum Expected {
    Unchanged,
    Drop,
    /// Rewritten towards a backend of the service on `port`.
    ToBackend(u16),
    /// Rewritten back to the client from the VIP's `port`.
    ToClient(u16),
}

/// A flow's reply direction the data path recorded: protocol, backend address, backend
/// port, client port.
type ReplyKey = (u8, Ipv6Addr, u16, u16);

fn addr(f: &[u8], at: usize) -> Ipv6Addr {
    Ipv6Addr::from(<[u8; 16]>::try_from(&f[14 + at..14 + at + 16]).unwrap())
}

fn be16(f: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([f[at], f[at + 1]])
}

/// The oracle, from the frame and the reply directions recorded so far.
fn expected(f: &[u8], from_backend: bool, replies: &HashSet<ReplyKey>) -> Expected {
    if f.len() < L4_AT {
        return Expected::Unchanged;
    }
    let (payload_len, next, hop) = (be16(f, 14 + 4) as usize, f[14 + 6], f[14 + 7]);
    let l4_len = match next {
        PROTO_TCP => 20,
        PROTO_UDP => 8,
        _ => return Expected::Unchanged,
    };
    if f.len() < L4_AT + l4_len || payload_len < l4_len || L4_AT + payload_len > f.len() {
        return Expected::Unchanged;
    }
    let (sport, dport) = (be16(f, L4_AT), be16(f, L4_AT + 2));
    let valid = if next == PROTO_TCP {
        let doff = (f[L4_AT + 12] >> 4) as usize * 4;
        doff >= 20 && doff <= payload_len
    } else {
        let len = be16(f, L4_AT + 4) as usize;
        len >= 8 && len <= payload_len
    };
    let zero_udp = next == PROTO_UDP && be16(f, L4_AT + 6) == 0;
    if from_backend {
        let key = (next, addr(f, 8), sport, dport);
        if !replies.contains(&key) {
            return Expected::Unchanged;
        }
        return match () {
            _ if next == PROTO_UDP && !valid => Expected::Unchanged,
            _ if zero_udp => Expected::Drop,
            _ if hop <= 1 => Expected::Unchanged,
            _ => Expected::ToClient(if next == PROTO_TCP { 80 } else { 53 }),
        };
    }
    let served = matches!((next, dport), (PROTO_TCP, 80) | (PROTO_UDP, 53));
    if !served {
        return Expected::Unchanged;
    }
    match () {
        _ if !valid => Expected::Drop,
        _ if zero_udp => Expected::Drop,
        _ if hop <= 1 => Expected::Unchanged,
        _ => Expected::ToBackend(if next == PROTO_TCP { 8080 } else { 5353 }),
    }
}

/// Whether the L4 checksum of a frame (over its payload length) verifies from scratch.
fn verifies(f: &[u8]) -> bool {
    let len = be16(f, 14 + 4) as usize;
    let sum = l4_checksum(addr(f, 8), addr(f, 24), f[14 + 6], &f[L4_AT..L4_AT + len]);
    sum == 0 || sum == 0xffff
}

/// Checks a rewritten `output` of `input`; the address now at `addr_at` must be `want`
/// or, for a frame towards a backend, one of the three.
fn check_rewrite(
    input: &[u8],
    output: &[u8],
    e: &Expected,
    macs: (Mac, Mac),
) -> Result<(), String> {
    let (c0_mac, b0_mac) = macs;
    let mut want = input.to_vec();
    let (addr_at, port_at, port, dst_mac, src_mac) = match *e {
        Expected::ToBackend(port) => {
            let b = addr(output, 24);
            if ![11, 12, 13].map(backend6).contains(&b) {
                return Err(format!("sent to {b}, not a backend"));
            }
            (24, L4_AT + 2, port, backend_mac(b.octets()[15]), b0_mac)
        }
        Expected::ToClient(port) => (8, L4_AT, port, CLIENT_MAC, c0_mac),
        _ => unreachable!(),
    };
    let new_addr = if addr_at == 24 {
        addr(output, 24)
    } else {
        VIP6
    };
    want[0..6].copy_from_slice(&dst_mac);
    want[6..12].copy_from_slice(&src_mac);
    want[14 + 7] -= 1;
    want[14 + addr_at..14 + addr_at + 16].copy_from_slice(&new_addr.octets());
    want[port_at..port_at + 2].copy_from_slice(&port.to_be_bytes());
    let check_at = L4_AT + if input[14 + 6] == PROTO_TCP { 16 } else { 6 };
    want[check_at..check_at + 2].copy_from_slice(&output[check_at..check_at + 2]);
    if output != want.as_slice() {
        return Err(format!("output\n got  {output:02x?}\n want {want:02x?}"));
    }
    if verifies(input) != verifies(output) {
        return Err("the checksum's validity changed".into());
    }
    if input[14 + 6] == PROTO_UDP && output[check_at..check_at + 2] == [0, 0] {
        return Err("a UDP checksum of zero sent".into());
    }
    Ok(())
}

#[test]
fn random_ipv6_frames_get_exactly_what_the_oracle_derives() {
    let (seed, count) = seed_and_count(0x6_5eed, 5_000);
    let rig = Rig::build();
    let (c0, b0, c0_mac, b0_mac) = (rig.c0, rig.b0, rig.c0_mac, rig.b0_mac);
    rig.with_dataplane(CONFIG, |c| {
        let dp = c.dataplane();
        let mut rng = Rng(seed);
        let mut replies: HashSet<ReplyKey> = HashSet::new();
        let mut seen = std::collections::BTreeMap::new();
        for i in 0..count {
            let (input, from_backend) = frame(&mut rng);
            let e = expected(&input, from_backend, &replies);
            let ingress = if from_backend { b0 } else { c0 };
            let r = run_once(dp.program(), ingress, &input);
            let what = format!("frame #{i} of seed {seed:#x} ({e:?}): {input:02x?}");
            match (&e, r.action) {
                (Expected::Unchanged, XDP_PASS) | (Expected::Drop, XDP_DROP) => {
                    assert_eq!(r.output, input, "{what}: changed");
                }
                (Expected::ToBackend(_) | Expected::ToClient(_), XDP_REDIRECT) => {
                    check_rewrite(&input, &r.output, &e, (c0_mac, b0_mac))
                        .unwrap_or_else(|err| panic!("{what}: {err}"));
                    if let Expected::ToBackend(port) = e {
                        let proto = input[14 + 6];
                        let tcp_syn = proto == PROTO_TCP && input[L4_AT + 13] & 0x12 == 0x02;
                        if proto == PROTO_UDP || tcp_syn {
                            replies.insert((proto, addr(&r.output, 24), port, be16(&input, L4_AT)));
                        }
                    }
                }
                _ => panic!("{what}: action {}", r.action),
            }
            *seen.entry(format!("{e:?}")).or_insert(0u32) += 1;
        }
        // Every kind of outcome came up, so none of the checks above was vacuous.
        for kind in [
            "Unchanged",
            "Drop",
            "ToBackend(8080)",
            "ToBackend(5353)",
            "ToClient(80)",
            "ToClient(53)",
        ] {
            assert!(
                seen.get(kind).copied().unwrap_or(0) > 10,
                "{kind}: {seen:?}"
            );
        }
    });
}
