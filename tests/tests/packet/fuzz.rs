//! Packet fuzzing through BPF_PROG_TEST_RUN: seeded random and mutated frames (100,000
//! per run; `LB_FUZZ_SEED` and `LB_FUZZ_PACKETS` to reproduce or extend). For every frame
//! the oracle derives from the rig's config, independently of the data path's code, the
//! action it must get (see [`expected_action`]) and, for a rewritten frame, every output
//! byte but the choice of backend (or of VIP, for a reply), which must be one the config
//! allows: the MACs of the next hop and of the egress NIC, TTL minus one, the NAT'd
//! address and port, and both checksums updated incrementally. Checksums must also be
//! exactly as valid as they were on input (an incremental update keeps a good checksum
//! good and a bad one bad). Which backend a flow takes and whether a reply belongs to a
//! flow depend on the flow state the run builds up; the packet tests pin those.
use std::net::Ipv4Addr;

use lb_common::checksum::{internet_checksum, ipv4_l4_checksum};
use lb_tests::{
    frame::Frame,
    fuzz_oracle::{
        self, check_rewrite, martian, outcome_of_action, seed_and_count, Expected, Nics, Rng, L4,
    },
    packet_rig::*,
};

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
    payload.iter_mut().for_each(|b| *b = rng.next_u64() as u8);
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
                bytes.push(rng.next_u64() as u8);
            }
        }
        8 => {
            // A header field set to an arbitrary value: IHL/version, frags, proto,
            // TCP data offset, ethertype, total length.
            let (at, value) = match rng.below(6) {
                0 => (14, rng.next_u64() as u8),
                1 => (20, rng.next_u64() as u8),
                2 => (23, rng.next_u64() as u8),
                3 => (46, rng.next_u64() as u8),
                4 => (12, rng.next_u64() as u8),
                _ => (17, rng.next_u64() as u8),
            };
            if at < bytes.len() {
                bytes[at] = value;
            }
        }
        _ => {
            // Entirely random bytes.
            let len = 14 + rng.below(100) as usize;
            bytes = (0..len).map(|_| rng.next_u64() as u8).collect();
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

/// An address and port.
type Endpoint = (Ipv4Addr, u16);

/// The rig's services as the oracle sees them: VIP and port, and backends.
struct Services(Vec<(Endpoint, Vec<Endpoint>)>);

impl Services {
    fn of_rig() -> Self {
        let config = lb_userspace::model::config::parse(CONFIG).expect("rig config");
        Services(
            config
                .services
                .iter()
                .map(|s| {
                    let backends = s
                        .backends
                        .iter()
                        .map(|b| (ipv4(b.address), b.port))
                        .collect();
                    ((ipv4(s.vip), s.port), backends)
                })
                .collect(),
        )
    }

    fn at(&self, vip: Ipv4Addr, port: u16) -> Option<&[Endpoint]> {
        self.0
            .iter()
            .find(|(at, _)| *at == (vip, port))
            .map(|(_, b)| b.as_slice())
    }

    /// Whether `vip`:`port` is a service with backend `backend`:`bport`.
    fn serves(&self, vip: Ipv4Addr, port: u16, backend: Ipv4Addr, bport: u16) -> bool {
        self.at(vip, port)
            .is_some_and(|b| b.contains(&(backend, bport)))
    }
}

/// What a frame is, as the data path must parse it: an option-less, unfragmented IPv4
/// TCP segment whose headers fit in the frame and in the IP length (else `None`).
struct Parsed {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    ttl: u8,
    /// TCP data offset at least 20 bytes and within the segment.
    tcp_valid: bool,
}

fn parse(f: &[u8]) -> Option<Parsed> {
    if f.len() < 34 || f[12..14] != [0x08, 0x00] || f[14] != 0x45 {
        return None;
    }
    let tot = u16::from_be_bytes([f[16], f[17]]) as usize;
    let frags = u16::from_be_bytes([f[20], f[21]]) & 0x3fff;
    if frags != 0 || f[23] != 6 || f.len() < 54 || tot < 40 || 14 + tot > f.len() {
        return None;
    }
    let doff = (f[46] >> 4) as usize * 4;
    Some(Parsed {
        src: Ipv4Addr::new(f[26], f[27], f[28], f[29]),
        dst: Ipv4Addr::new(f[30], f[31], f[32], f[33]),
        sport: u16::from_be_bytes([f[34], f[35]]),
        dport: u16::from_be_bytes([f[36], f[37]]),
        ttl: f[22],
        tcp_valid: doff >= 20 && doff <= tot - 20,
    })
}

fn expected_action(services: &Services, p: Option<&Parsed>) -> Expected {
    let Some(p) = p else {
        return Expected::PassUnchanged;
    };
    if let Some(backends) = services.at(p.dst, p.dport) {
        return if martian(p.src) || p.src == p.dst || !p.tcp_valid {
            Expected::Drop
        } else if p.ttl <= 1 {
            Expected::PassUnchanged
        } else if backends.is_empty() {
            Expected::Drop
        } else {
            Expected::ToBackend
        };
    }
    let from_backend = services
        .0
        .iter()
        .any(|(_, b)| b.contains(&(p.src, p.sport)));
    if from_backend && p.ttl > 1 {
        Expected::ReplyOrUnchanged
    } else {
        Expected::PassUnchanged
    }
}

/// Checks one run against the oracle: `Ok(outcome)` or what is wrong.
fn check(
    services: &Services,
    nics: &Nics,
    ingress: u32,
    input: &[u8],
    action: u32,
    output: &[u8],
) -> Result<&'static str, String> {
    let parsed = parse(input);
    let expected = expected_action(services, parsed.as_ref());
    let unchanged = output == input;
    if let Some(outcome) = outcome_of_action(&expected, action, unchanged)? {
        return Ok(outcome);
    }
    let p = parsed.expect("only parsed frames are rewritten");
    if output.len() != input.len() {
        return Err(format!("length {} -> {}", input.len(), output.len()));
    }
    let out = parse(output).ok_or("the output does not parse")?;
    // Which address the rewrite gave, checked against the config; then every byte.
    let (towards, addr_at, port_at) = if expected == Expected::ToBackend {
        if !services.serves(p.dst, p.dport, out.dst, out.dport) {
            return Err(format!(
                "{}:{} is no backend of {}:{}",
                out.dst, out.dport, p.dst, p.dport
            ));
        }
        (out.dst, 30, 36)
    } else {
        if !services.serves(out.src, out.sport, p.src, p.sport) {
            return Err(format!(
                "{}:{} is no VIP of backend {}:{}",
                out.src, out.sport, p.src, p.sport
            ));
        }
        (p.dst, 26, 34)
    };
    let at = (addr_at, port_at);
    check_rewrite(nics, ingress, input, action, output, towards, at, L4::Tcp)?;
    if checksums(input) != checksums(output) {
        return Err(format!(
            "checksum validity changed: {:?} -> {:?}",
            checksums(input),
            checksums(output)
        ));
    }
    Ok(if action == XDP_PASS {
        "pass rewritten"
    } else {
        "sent rewritten"
    })
}

#[test]
fn every_fuzzed_frame_is_passed_dropped_or_correctly_rewritten() {
    let seeded = seed_and_count(0x5eed_f00d, 100_000);
    let services = Services::of_rig();
    let check = |nics: &Nics, ingress, input: &[u8], action, output: &[u8]| {
        check(&services, nics, ingress, input, action, output)
    };
    fuzz_oracle::run("fuzz", CONFIG, seeded, 100, frame, check);
}
