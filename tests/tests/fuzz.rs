//! Packet fuzzing through BPF_PROG_TEST_RUN: seeded random and mutated frames (100,000
//! per run; `LB_FUZZ_SEED` and `LB_FUZZ_PACKETS` to reproduce or extend). Every frame
//! must come out in one of three ways:
//! - passed unchanged, or passed after a correct rewrite (handed to the kernel to finish
//!   forwarding);
//! - dropped;
//! - rewritten and sent (XDP_TX / XDP_REDIRECT) with only the fields a NAT hop changes
//!   changed, and checksums exactly as valid as they were on input (an incremental update
//!   keeps a good checksum good and a bad one bad).
use std::{collections::BTreeMap, net::Ipv4Addr};

use lb_common::checksum::{internet_checksum, ipv4_l4_checksum};
use lb_tests::{frame::Frame, packet_rig::*};

/// xorshift64*: small, seedable, and the same sequence everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

const VIPS: [Ipv4Addr; 6] = [
    Ipv4Addr::new(10, 0, 0, 100),
    Ipv4Addr::new(10, 0, 0, 101),
    Ipv4Addr::new(10, 0, 0, 102),
    Ipv4Addr::new(10, 0, 0, 103),
    Ipv4Addr::new(10, 0, 0, 110),
    Ipv4Addr::new(10, 0, 0, 111),
];
const BACKENDS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(10, 1, 0, 11),
    Ipv4Addr::new(10, 1, 0, 12),
    Ipv4Addr::new(10, 1, 0, 13),
];

/// A plausible frame: client to a VIP or elsewhere, or a backend reply; then maybe
/// mutated at the byte level.
fn frame(rng: &mut Rng) -> (Vec<u8>, bool) {
    let client = Ipv4Addr::new(10, 10, rng.below(4) as u8, 1 + rng.below(250) as u8);
    let from_backend = rng.below(4) == 0;
    let base = if from_backend {
        Frame {
            src: rng.pick(&BACKENDS),
            dst: client,
            sport: rng.pick(&[8080, 8080, 80, 1234]),
            dport: 1024 + rng.below(2000) as u16,
            flags: rng.pick(&[0x10, 0x12, 0x11, 0x04, 0x18]),
            ..Frame::default()
        }
    } else {
        let dst = if rng.below(5) == 0 {
            Ipv4Addr::new(10, 10, 0, 50)
        } else {
            rng.pick(&VIPS)
        };
        Frame {
            src: client,
            dst,
            sport: 1024 + rng.below(2000) as u16,
            dport: rng.pick(&[80, 80, 80, 443]),
            flags: rng.pick(&[0x02, 0x10, 0x18, 0x11, 0x04, 0x02]),
            ttl: rng.pick(&[64, 64, 2, 1, 0]),
            ..Frame::default()
        }
    };
    let mut payload = vec![0u8; rng.below(64) as usize];
    payload.iter_mut().for_each(|b| *b = rng.next() as u8);
    let mut bytes = Frame { payload, ..base }.bytes();
    match rng.below(10) {
        0..=3 => {} // well-formed
        4 | 5 => {
            // Flip a few random bytes anywhere.
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(bytes.len() as u64) as usize;
                bytes[at] ^= 1 << rng.below(8);
            }
        }
        6 => {
            // Truncate (never below an Ethernet header: the kernel refuses those).
            let len = 14 + rng.below(bytes.len() as u64 - 13) as usize;
            bytes.truncate(len);
        }
        7 => {
            // Trailing garbage beyond the IP total length (link padding).
            for _ in 0..rng.below(40) {
                bytes.push(rng.next() as u8);
            }
        }
        8 => {
            // A header field set to an arbitrary value: IHL/version, frags, proto,
            // TCP data offset, ethertype, total length.
            let (at, value) = match rng.below(6) {
                0 => (14, rng.next() as u8),
                1 => (20, rng.next() as u8),
                2 => (23, rng.next() as u8),
                3 => (46, rng.next() as u8),
                4 => (12, rng.next() as u8),
                _ => (17, rng.next() as u8),
            };
            if at < bytes.len() {
                bytes[at] = value;
            }
        }
        _ => {
            // Entirely random bytes.
            let len = 14 + rng.below(100) as usize;
            bytes = (0..len).map(|_| rng.next() as u8).collect();
        }
    }
    (bytes, from_backend)
}

/// Whether the IPv4 and TCP checksums hold, for a frame the data path could rewrite.
fn checksums(frame: &[u8]) -> (bool, bool) {
    let ip = &frame[14..34];
    let tot = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    let src: [u8; 4] = ip[12..16].try_into().unwrap();
    let dst: [u8; 4] = ip[16..20].try_into().unwrap();
    (
        internet_checksum(ip, 0) == 0,
        ipv4_l4_checksum(src, dst, 6, &frame[34..14 + tot]) == 0,
    )
}

/// The bytes a NAT hop may change: MACs, TTL, IP checksum, one address, one port, and
/// the TCP checksum. Everything else must be identical.
fn only_nat_fields_changed(input: &[u8], output: &[u8]) -> Result<(), String> {
    if input.len() != output.len() {
        return Err(format!("length {} -> {}", input.len(), output.len()));
    }
    let allowed = |i: usize| {
        i < 12                       // MACs
            || i == 22                   // TTL
            || (24..26).contains(&i)     // IP checksum
            || (26..34).contains(&i)     // addresses
            || (34..38).contains(&i)     // ports
            || (50..52).contains(&i) // TCP checksum
    };
    for (i, (a, b)) in input.iter().zip(output).enumerate() {
        if a != b && !allowed(i) {
            return Err(format!("byte {i} changed {a:#04x} -> {b:#04x}"));
        }
    }
    let changed_src = input[26..30] != output[26..30] || input[34..36] != output[34..36];
    let changed_dst = input[30..34] != output[30..34] || input[36..38] != output[36..38];
    if changed_src && changed_dst {
        return Err("both source and destination rewritten".into());
    }
    if checksums(input) != checksums(output) {
        return Err(format!(
            "checksum validity changed: {:?} -> {:?}",
            checksums(input),
            checksums(output)
        ));
    }
    Ok(())
}

#[test]
fn every_fuzzed_frame_is_passed_dropped_or_correctly_rewritten() {
    let seed: u64 = std::env::var("LB_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_f00d);
    let count: usize = std::env::var("LB_FUZZ_PACKETS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let rig = Rig::build();
    let (c0, b0) = (rig.c0, rig.b0);
    let outcomes = rig.with_dataplane(CONFIG, |c| {
        let program = c.dataplane().program();
        let mut rng = Rng(seed | 1);
        let mut outcomes: BTreeMap<&str, usize> = BTreeMap::new();
        for n in 0..count {
            let (input, from_backend) = frame(&mut rng);
            let ifindex = if from_backend { b0 } else { c0 };
            let r = run_once(program, ifindex, &input);
            let verdict = match r.action {
                XDP_PASS if r.output == input => Ok("pass unchanged"),
                XDP_PASS => {
                    only_nat_fields_changed(&input, &r.output).map(|()| "pass rewritten")
                }
                XDP_DROP => Ok("drop"),
                XDP_TX | XDP_REDIRECT => {
                    only_nat_fields_changed(&input, &r.output).map(|()| "sent rewritten")
                }
                other => Err(format!("action {other}")),
            };
            match verdict {
                Ok(kind) => *outcomes.entry(kind).or_default() += 1,
                Err(e) => panic!(
                    "frame #{n} (seed {seed:#x}, LB_FUZZ_SEED={seed}): {e}\ninput  {input:02x?}\noutput {:02x?}",
                    r.output
                ),
            }
        }
        outcomes
    });
    println!("fuzz seed {seed:#x}, {count} frames: {outcomes:?}");
    assert_eq!(outcomes.values().sum::<usize>(), count);
    // The generator must reach every outcome, or the oracle proves little.
    for kind in ["pass unchanged", "pass rewritten", "drop", "sent rewritten"] {
        assert!(
            outcomes.get(kind).copied().unwrap_or(0) > 100,
            "{kind}: {outcomes:?}"
        );
    }
}
