//! IPv6 packet fuzzing through BPF_PROG_TEST_RUN, as `fuzz` and `fuzz_udp` do for IPv4:
//! seeded random and mutated IPv6 frames (5,000 per run; `LB_FUZZ_SEED` and
//! `LB_FUZZ_PACKETS` to reproduce or extend): TCP and UDP to the rig's IPv6 services and
//! to ports none has, the backends' replies, other next headers, cut and lying lengths,
//! hop limits 0 to 2, zero UDP checksums, acknowledgment numbers that prove a SYN-ACK or
//! do not. For every frame the oracle derives from the config and from the state earlier
//! frames left (flow entries and their FIN/RST state, SYN-cache slots and their SYN-ACK
//! proofs), independently of the data path's code, the action it must get; for a rewritten frame every output byte but the backend's
//! choice (one the config allows, whose MAC the frame must carry): the MACs, hop limit
//! minus one, the NAT'd address and port, and an L4 checksum that verifies from scratch
//! exactly when the input's did, never zero for UDP.
use std::{
    collections::{HashMap, HashSet},
    net::Ipv6Addr,
};

use lb_common::{ipv6::addr6_wire, limits::syn_cache_sets, syn_cache6::syn_set6};
use lb_tests::{
    frame::Mac,
    frame6::{l4_checksum, Frame6, IP6_LEN, PROTO_TCP, PROTO_UDP},
    fuzz_oracle::{seed_and_count, Rng},
    packet_rig::*,
    rig_config_with,
};

const CONFIG: &str = rig_config_with!(lb_tests::rig_web6_service!(), lb_tests::rig_dns6_service!());

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
        f.seq = BACKEND_ISN;
    } else {
        f.src_mac = CLIENT_MAC;
        f.src = CLIENT6;
        f.dst = VIP6;
        f.sport = port;
        f.dport = rng.pick(&[80, 80, 53, 53, 81]);
        // Half of them acknowledge the backends' SYN-ACK, proving the handshake.
        f.ack = rng.pick(&[0, BACKEND_ISN + 1]);
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

/// What earlier frames left for the TCP service `web6` (the fuzz's only client address),
/// by client port: the flow entry (its backend, a FIN from the client, closed) and the
/// SYN-cache slot (the SYN's backend, the proof its SYN-ACK left).
#[derive(Default)]
struct Tcp {
    entries: HashMap<u16, Entry>,
    slots: HashMap<u16, (Ipv6Addr, Option<u32>)>,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    backend: Ipv6Addr,
    fin_client: bool,
    fin_backend: bool,
    closed: bool,
}

impl Entry {
    fn new(backend: Ipv6Addr) -> Entry {
        Entry {
            backend,
            fin_client: false,
            fin_backend: false,
            closed: false,
        }
    }

    /// `flow::observe`: a RST closes, a FIN from each side closes.
    fn observe(&mut self, flags: u8, client: bool) {
        if flags & 0x04 != 0 {
            self.closed = true;
        } else if flags & 0x01 != 0 {
            if client {
                self.fin_client = true;
            } else {
                self.fin_backend = true;
            }
            self.closed |= self.fin_client && self.fin_backend;
        }
    }
}

/// What a TCP frame does to the state, and where it must go: `Some(Some(b))` to backend
/// `b`, `Some(None)` to a backend the oracle does not know (the table's), `None`
/// unchanged. Only for a frame `expected` found TCP, whole, served and forwardable but for
/// its hop limit, which is checked here where the data path checks it.
fn tcp_client(tcp: &mut Tcp, f: &[u8], hop: u8) -> Option<Option<Ipv6Addr>> {
    let (port, flags) = (be16(f, L4_AT), f[L4_AT + 13]);
    let ack = u32::from_be_bytes(f[L4_AT + 8..L4_AT + 12].try_into().unwrap());
    let proven = |slot: &(Ipv6Addr, Option<u32>)| slot.1 == Some(ack | 1);
    if flags & 0x12 == 0x02 {
        // A SYN: its slot's backend if it retransmits, else the table's, which the caller
        // writes into the slot.
        if hop <= 1 {
            return None;
        }
        return Some(tcp.slots.get(&port).map(|s| s.0));
    }
    if let Some(e) = tcp.entries.get_mut(&port) {
        let reusable = e.closed || e.fin_client;
        let reopened = reusable && tcp.slots.get(&port).is_some_and(proven);
        if !reopened {
            e.observe(flags, true);
            return (hop > 1).then_some(Some(e.backend));
        }
        // Abandoned before the hop limit is checked; a recorded flow replaces it.
        e.closed = true;
    }
    if hop <= 1 {
        return None;
    }
    match tcp.slots.get(&port).copied() {
        Some(slot) if proven(&slot) => {
            tcp.slots.remove(&port);
            tcp.entries.insert(port, Entry::new(slot.0));
            Some(Some(slot.0))
        }
        Some(slot) => Some(Some(slot.0)),
        None => Some(None),
    }
}

/// A backend's TCP segment to the client's `port`: translated by its return entry, or,
/// as a SYN or RST without one, by a slot naming its handshake with this backend, where
/// a SYN-ACK leaves its proof. Whether it goes to the client.
fn tcp_backend(tcp: &mut Tcp, replies: &HashSet<ReplyKey>, f: &[u8], hop: u8) -> bool {
    let (backend, sport, port, flags) = (
        addr(f, 8),
        be16(f, L4_AT),
        be16(f, L4_AT + 2),
        f[L4_AT + 13],
    );
    let seq = u32::from_be_bytes(f[L4_AT + 4..L4_AT + 8].try_into().unwrap());
    let entry = replies.contains(&(PROTO_TCP, backend, sport, port));
    let handed_over = flags & 0x02 != 0 || (flags & 0x04 != 0 && !entry);
    let answers =
        handed_over && sport == 8080 && tcp.slots.get(&port).is_some_and(|s| s.0 == backend);
    if answers && flags & 0x16 == 0x12 {
        tcp.slots.get_mut(&port).unwrap().1 = Some(seq.wrapping_add(1) | 1);
    }
    if hop <= 1 {
        return false;
    }
    if entry && flags & 0x05 != 0 {
        if let Some(e) = tcp.entries.get_mut(&port) {
            e.observe(flags, false);
        }
    }
    entry || answers
}

fn addr(f: &[u8], at: usize) -> Ipv6Addr {
    Ipv6Addr::from(<[u8; 16]>::try_from(&f[14 + at..14 + at + 16]).unwrap())
}

fn be16(f: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([f[at], f[at + 1]])
}

/// The oracle, from the frame and what earlier frames recorded: the reply directions,
/// and for TCP the flow entries and SYN-cache slots (updated here as the data path
/// updates them). For a TCP frame to a backend, the backend it must go to when the
/// oracle knows it (the caller writes the backend it went to into a SYN's new slot).
fn expected(
    f: &[u8],
    from_backend: bool,
    replies: &HashSet<ReplyKey>,
    tcp: &mut Tcp,
) -> (Expected, Option<Ipv6Addr>) {
    let only = |e| (e, None);
    if f.len() < L4_AT {
        return only(Expected::Unchanged);
    }
    let (payload_len, next, hop) = (be16(f, 14 + 4) as usize, f[14 + 6], f[14 + 7]);
    let l4_len = match next {
        PROTO_TCP => 20,
        PROTO_UDP => 8,
        _ => return only(Expected::Unchanged),
    };
    if f.len() < L4_AT + l4_len || payload_len < l4_len || L4_AT + payload_len > f.len() {
        return only(Expected::Unchanged);
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
        if next == PROTO_TCP {
            return only(if tcp_backend(tcp, replies, f, hop) {
                Expected::ToClient(80)
            } else {
                Expected::Unchanged
            });
        }
        let key = (next, addr(f, 8), sport, dport);
        if !replies.contains(&key) {
            return only(Expected::Unchanged);
        }
        return only(match () {
            _ if !valid => Expected::Unchanged,
            _ if zero_udp => Expected::Drop,
            _ if hop <= 1 => Expected::Unchanged,
            _ => Expected::ToClient(53),
        });
    }
    let served = matches!((next, dport), (PROTO_TCP, 80) | (PROTO_UDP, 53));
    if !served {
        return only(Expected::Unchanged);
    }
    match () {
        _ if !valid => only(Expected::Drop),
        _ if zero_udp => only(Expected::Drop),
        _ if next == PROTO_TCP => match tcp_client(tcp, f, hop) {
            Some(backend) => (Expected::ToBackend(8080), backend),
            None => only(Expected::Unchanged),
        },
        _ if hop <= 1 => only(Expected::Unchanged),
        _ => only(Expected::ToBackend(5353)),
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
        let mut tcp = Tcp::default();
        // The oracle keeps a slot per client port: no two ports' handshakes may compete
        // for a way, so at most two of the six share a set.
        let mask = syn_cache_sets(4096) - 1;
        let mut per_set = HashMap::new();
        for port in 1024..1030u16 {
            let set = syn_set6(HASH_SEED, &addr6_wire(CLIENT6.octets()), port.to_be(), mask);
            *per_set.entry(set).or_insert(0) += 1;
        }
        assert!(per_set.values().all(|n| *n <= 2), "{per_set:?}");
        let mut seen = std::collections::BTreeMap::new();
        for i in 0..count {
            let (input, from_backend) = frame(&mut rng);
            let (e, backend) = expected(&input, from_backend, &replies, &mut tcp);
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
                        let (proto, sport) = (input[14 + 6], be16(&input, L4_AT));
                        let to = addr(&r.output, 24);
                        if let Some(want) = backend {
                            assert_eq!(to, want, "{what}: backend");
                        }
                        if proto == PROTO_UDP {
                            replies.insert((proto, to, port, sport));
                        } else if input[L4_AT + 13] & 0x12 == 0x02 {
                            tcp.slots.entry(sport).or_insert((to, None));
                        } else if let Some(e) = tcp.entries.get(&sport) {
                            // Every entry recorded its reply direction beside it.
                            replies.insert((proto, e.backend, port, sport));
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
