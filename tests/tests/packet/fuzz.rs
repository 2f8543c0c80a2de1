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
use std::{collections::BTreeMap, net::Ipv4Addr};

use lb_common::checksum::{internet_checksum, ipv4_l4_checksum, replace2, replace4};
use lb_tests::{
    frame::{Frame, Mac},
    packet_rig::*,
};

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
                    let backends = s.backends.iter().map(|b| (b.address, b.port)).collect();
                    ((s.vip, s.port), backends)
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

/// Sources no router forwards from: 0/8, 127/8, 169.254/16, 224/4 and 240/4.
fn martian(a: Ipv4Addr) -> bool {
    let o = a.octets();
    o[0] == 0 || o[0] == 127 || o[0] >= 224 || (o[0] == 169 && o[1] == 254)
}

/// What must happen to a frame, as far as the config decides it.
#[derive(Debug, PartialEq)]
enum Expected {
    PassUnchanged,
    Drop,
    /// DNAT to a backend of the service, sent (XDP_TX for the backend behind the ingress
    /// NIC) or handed to the kernel rewritten (its neighbour is unresolved).
    ToBackend,
    /// From a backend: rewritten back to the VIP if it belongs to a flow the run built,
    /// unchanged otherwise.
    ReplyOrUnchanged,
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

fn get16(f: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([f[at], f[at + 1]])
}

fn get32(f: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([f[at], f[at + 1], f[at + 2], f[at + 3]])
}

/// `input` with the address at `addr_at` and the port at `port_at` replaced by the
/// output's, both checksums updated incrementally; and, if `hop` is given, the router
/// hop: TTL down (IP checksum updated) and the MACs set.
fn nat(
    input: &[u8],
    output: &[u8],
    addr_at: usize,
    port_at: usize,
    hop: Option<(Mac, Mac)>,
) -> Vec<u8> {
    let mut f = input.to_vec();
    let (old_addr, new_addr) = (get32(input, addr_at), get32(output, addr_at));
    let (old_port, new_port) = (get16(input, port_at), get16(output, port_at));
    f[addr_at..addr_at + 4].copy_from_slice(&output[addr_at..addr_at + 4]);
    f[port_at..port_at + 2].copy_from_slice(&output[port_at..port_at + 2]);
    let ip_check = replace4(get16(input, 24), old_addr, new_addr);
    let tcp_check = replace2(
        replace4(get16(input, 50), old_addr, new_addr),
        old_port,
        new_port,
    );
    f[50..52].copy_from_slice(&tcp_check.to_ne_bytes());
    f[24..26].copy_from_slice(&ip_check.to_ne_bytes());
    if let Some((dst_mac, src_mac)) = hop {
        let old = get16(&f, 22);
        f[22] -= 1;
        let check = replace2(get16(&f, 24), old, get16(&f, 22));
        f[24..26].copy_from_slice(&check.to_ne_bytes());
        f[0..6].copy_from_slice(&dst_mac);
        f[6..12].copy_from_slice(&src_mac);
    }
    f
}

/// The MAC the rig's permanent neighbour entries give `addr`, if any.
fn neighbour(addr: Ipv4Addr) -> Option<Mac> {
    match addr.octets() {
        [10, 10, 0, 2] => Some(CLIENT_MAC),
        [10, 10, 0, 77] => Some(backend_mac(77)),
        [10, 1, 0, last @ 11..=13] => Some(backend_mac(last)),
        _ => None,
    }
}

/// The rig's NICs: `c0` and its MAC, `b0` and its MAC.
struct Nics {
    c0: (u32, Mac),
    b0: (u32, Mac),
}

impl Nics {
    /// The NIC towards `addr`: `c0` for 10.10.0.0/24, `b0` for 10.1.0.0/24.
    fn towards(&self, addr: Ipv4Addr) -> (u32, Mac) {
        if addr.octets()[..3] == [10, 10, 0] {
            self.c0
        } else {
            self.b0
        }
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
    match (&expected, action) {
        (Expected::PassUnchanged | Expected::ReplyOrUnchanged, XDP_PASS) if unchanged => {
            return Ok("pass unchanged")
        }
        (Expected::Drop, XDP_DROP) => return Ok("drop"),
        (Expected::ToBackend | Expected::ReplyOrUnchanged, XDP_PASS | XDP_TX | XDP_REDIRECT)
            if !unchanged => {}
        _ => {
            return Err(format!(
                "expected {expected:?}, got action {action} (unchanged: {unchanged})"
            ))
        }
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
    let (egress, egress_mac) = nics.towards(towards);
    let (want_action, hop) = match neighbour(towards) {
        Some(mac) if egress == ingress => (XDP_TX, Some((mac, egress_mac))),
        Some(mac) => (XDP_REDIRECT, Some((mac, egress_mac))),
        None => (XDP_PASS, None),
    };
    if action != want_action {
        return Err(format!(
            "action {action}, expected {want_action} towards {towards}"
        ));
    }
    let want = nat(input, output, addr_at, port_at, hop);
    if output != want {
        let at = output
            .iter()
            .zip(&want)
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        return Err(format!(
            "byte {at}: {:#04x}, expected {:#04x}",
            output[at], want[at]
        ));
    }
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
    let nics = Nics {
        c0: (rig.c0, rig.c0_mac),
        b0: (rig.b0, rig.b0_mac),
    };
    let services = Services::of_rig();
    let outcomes = rig.with_dataplane(CONFIG, |c| {
        let program = c.dataplane().program();
        let mut rng = Rng(seed | 1);
        let mut outcomes: BTreeMap<&str, usize> = BTreeMap::new();
        for n in 0..count {
            let (input, from_backend) = frame(&mut rng);
            let ifindex = if from_backend { b0 } else { c0 };
            let r = run_once(program, ifindex, &input);
            match check(&services, &nics, ifindex, &input, r.action, &r.output) {
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
