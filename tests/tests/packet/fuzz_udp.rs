//! UDP packet fuzzing through BPF_PROG_TEST_RUN, as `fuzz` does for TCP: seeded random
//! and mutated UDP frames (20,000 per run; `LB_FUZZ_SEED` and `LB_FUZZ_PACKETS` to
//! reproduce or extend) to UDP services, elsewhere, and from their backends. For every
//! frame the oracle derives from the config, independently of the data path's code, the
//! action it must get and, for a rewritten frame, every output byte but the choice of
//! backend (or, for a reply, of VIP), which must be one the config allows: the MACs, TTL
//! minus one, the NAT'd address and port, the IPv4 checksum and the UDP checksum updated
//! (a zero one kept zero, an update to zero sent as 0xffff). A checksum that held must
//! still hold after the rewrite.
use std::net::Ipv4Addr;

use lb_common::checksum::{internet_checksum, ipv4_l4_checksum};
use lb_tests::{
    fuzz_oracle::{
        self, check_rewrite, get16, martian, outcome_of_action, seed_and_count, Expected, Nics,
        Rng, L4,
    },
    packet_rig::*,
    rig_config_with,
    udp_frame::Datagram,
};

/// The rig's services and two UDP ones: `dns` with three backends, `none` with none.
const CONFIG: &str = rig_config_with!(
    lb_tests::rig_dns_service!(),
    r#"  - name: none
    vip: 10.0.0.121
    port: 53
    protocol: udp
    backends: []
"#
);

const DNS: (Ipv4Addr, u16) = (Ipv4Addr::new(10, 0, 0, 120), 53);
const NONE: (Ipv4Addr, u16) = (Ipv4Addr::new(10, 0, 0, 121), 53);
const BACKENDS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(10, 1, 0, 11),
    Ipv4Addr::new(10, 1, 0, 12),
    Ipv4Addr::new(10, 1, 0, 13),
];

/// A plausible UDP frame (client to a UDP service, to a TCP VIP or elsewhere, or a
/// backend's reply), then maybe mutated; and whether it comes from the backends' side.
fn frame(rng: &mut Rng) -> (Vec<u8>, bool) {
    // Few client ports, so that later frames find the flows earlier ones recorded.
    let client = Ipv4Addr::new(10, 10, rng.below(2) as u8, 1 + rng.below(4) as u8);
    let port = 1024 + rng.below(8) as u16;
    let from_backend = rng.below(3) == 0;
    let base = if from_backend {
        Datagram {
            src: rng.pick(&BACKENDS),
            dst: client,
            sport: rng.pick(&[5353, 5353, 8080, 53]),
            dport: port,
            ..Datagram::default()
        }
    } else {
        let (dst, dport) = match rng.below(8) {
            0 => (Ipv4Addr::new(10, 10, 0, 50), 53),
            1 => NONE,
            2 => (DNS.0, 54),
            3 => (Ipv4Addr::new(10, 0, 0, 100), 80),
            4 => (rng.pick(&[Ipv4Addr::new(0, 1, 2, 3), DNS.0]), 53),
            _ => DNS,
        };
        Datagram {
            src: if dport == 53 && rng.below(10) == 0 {
                Ipv4Addr::new(0, 1, 2, 3)
            } else {
                client
            },
            dst,
            sport: port,
            dport,
            ttl: rng.pick(&[64, 64, 64, 2, 1, 0]),
            ..Datagram::default()
        }
    };
    let mut payload = vec![0u8; rng.below(48) as usize];
    payload.iter_mut().for_each(|b| *b = rng.next_u64() as u8);
    let no_checksum = rng.below(4) == 0;
    let mut bytes = Datagram {
        payload,
        no_checksum,
        ..base
    }
    .bytes();
    match rng.below(10) {
        0..=4 => {} // well-formed
        5 => {
            for _ in 0..1 + rng.below(3) {
                let at = rng.below(bytes.len() as u64) as usize;
                bytes[at] ^= 1 << rng.below(8);
            }
        }
        6 => {
            let len = 14 + rng.below(bytes.len() as u64 - 13) as usize;
            bytes.truncate(len);
        }
        7 => {
            for _ in 0..rng.below(40) {
                bytes.push(rng.next_u64() as u8);
            }
        }
        _ => {
            // A length or header field set to an arbitrary value: the UDP length (both
            // bytes), the IP total length, IHL/version, frags.
            let (at, value) = match rng.below(5) {
                0 => (38, rng.next_u64() as u8),
                1 => (39, rng.next_u64() as u8),
                2 => (17, rng.next_u64() as u8),
                3 => (14, rng.next_u64() as u8),
                _ => (20, rng.next_u64() as u8),
            };
            if at < bytes.len() {
                bytes[at] = value;
            }
        }
    }
    (bytes, from_backend)
}

/// What a frame is, as the data path must parse it: an option-less, unfragmented IPv4
/// UDP datagram whose 8-byte header is in the frame (else `None`).
struct Parsed {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    ttl: u8,
    /// The UDP length covers the header, stays in the IP packet, which stays in the
    /// frame.
    valid: bool,
}

fn parse(f: &[u8]) -> Option<Parsed> {
    if f.len() < 42 || f[12..14] != [0x08, 0x00] || f[14] != 0x45 || f[23] != 17 {
        return None;
    }
    let tot = u16::from_be_bytes([f[16], f[17]]) as usize;
    let frags = u16::from_be_bytes([f[20], f[21]]) & 0x3fff;
    if frags != 0 || tot < 20 {
        return None;
    }
    let udp_len = u16::from_be_bytes([f[38], f[39]]) as usize;
    Some(Parsed {
        src: Ipv4Addr::new(f[26], f[27], f[28], f[29]),
        dst: Ipv4Addr::new(f[30], f[31], f[32], f[33]),
        sport: u16::from_be_bytes([f[34], f[35]]),
        dport: u16::from_be_bytes([f[36], f[37]]),
        ttl: f[22],
        valid: udp_len >= 8 && 20 + udp_len <= tot && 14 + tot <= f.len(),
    })
}

fn expected_action(p: Option<&Parsed>) -> Expected {
    let Some(p) = p else {
        return Expected::PassUnchanged;
    };
    let service = (p.dst, p.dport);
    if service == DNS || service == NONE {
        // A martian source, or the VIP itself, never records a flow: its placement drops
        // it, after the TTL check.
        return if !p.valid {
            Expected::Drop
        } else if p.ttl <= 1 {
            Expected::PassUnchanged
        } else if martian(p.src) || p.src == p.dst || service == NONE {
            Expected::Drop
        } else {
            Expected::ToBackend
        };
    }
    if BACKENDS.contains(&p.src) && p.sport == 5353 && p.valid && p.ttl > 1 {
        Expected::ReplyOrUnchanged
    } else {
        Expected::PassUnchanged
    }
}

/// (IPv4 checksum holds, UDP checksum holds or is zero).
fn checksums(f: &[u8]) -> (bool, bool) {
    let tot = u16::from_be_bytes([f[16], f[17]]) as usize;
    let src: [u8; 4] = f[26..30].try_into().unwrap();
    let dst: [u8; 4] = f[30..34].try_into().unwrap();
    let udp_len = u16::from_be_bytes([f[38], f[39]]) as usize;
    let sum = ipv4_l4_checksum(src, dst, 17, &f[34..34 + udp_len.min(tot - 20)]);
    (
        internet_checksum(&f[14..34], 0) == 0,
        get16(f, 40) == 0 || sum == 0 || sum == 0xffff,
    )
}

fn check(
    nics: &Nics,
    ingress: u32,
    input: &[u8],
    action: u32,
    output: &[u8],
) -> Result<&'static str, String> {
    let parsed = parse(input);
    let expected = expected_action(parsed.as_ref());
    let unchanged = output == input;
    if let Some(outcome) = outcome_of_action(&expected, action, unchanged)? {
        return Ok(outcome);
    }
    let p = parsed.expect("only parsed frames are rewritten");
    let out = parse(output).ok_or("the output does not parse")?;
    let (towards, addr_at, port_at) = if expected == Expected::ToBackend {
        if !(BACKENDS.contains(&out.dst) && out.dport == 5353) {
            return Err(format!("{}:{} is no backend of dns", out.dst, out.dport));
        }
        (out.dst, 30, 36)
    } else {
        if (out.src, out.sport) != DNS {
            return Err(format!("{}:{} is not dns's VIP:port", out.src, out.sport));
        }
        (p.dst, 26, 34)
    };
    let at = (addr_at, port_at);
    check_rewrite(nics, ingress, input, action, output, towards, at, L4::Udp)?;
    let (before, after) = (checksums(input), checksums(output));
    if (before.0 && !after.0) || (before.1 && !after.1) {
        return Err(format!(
            "a checksum that held broke: {before:?} -> {after:?}"
        ));
    }
    Ok(if action == XDP_PASS {
        "pass rewritten"
    } else {
        "sent rewritten"
    })
}

#[test]
fn every_fuzzed_udp_frame_is_passed_dropped_or_correctly_rewritten() {
    let seeded = seed_and_count(0x0dd_5eed, 20_000);
    fuzz_oracle::run("UDP fuzz", CONFIG, seeded, 50, frame, check);
}
