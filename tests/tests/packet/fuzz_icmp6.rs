//! ICMPv6 error fuzzing through BPF_PROG_TEST_RUN, beside `fuzz_ipv6`: seeded random
//! errors (3,000 per run; `LB_FUZZ_SEED` and `LB_FUZZ_PACKETS` to reproduce or extend)
//! to the VIP about replies and from the backends about clients' packets, on tuples the
//! run placed (handshakes and datagrams interleaved with the errors) and on others, of every
//! ICMPv6 error type and a few other types, quoting 8 bytes of the transport header, all
//! of it, or the whole packet, with hop limits 1 and 64, from the backend the quoted
//! packet went to or another, some cut short. The oracle derives each error's outcome
//! from the config and the tuples placed, and for a translated one every output byte: the
//! error the other end would have got without NAT, built from scratch by `icmp6_frame`
//! (only the backend of a tuple never placed is the data path's choice, one of the
//! three). The backends' UDP port unreachables counted must be exactly those translated,
//! and TCP's none.
use std::{
    collections::{BTreeMap, HashMap},
    net::Ipv6Addr,
};

use lb_tests::{
    frame::PSH_ACK,
    frame6::{Frame6, IP6_LEN, PROTO_TCP, PROTO_UDP, TCP_LEN, UDP_LEN},
    fuzz_oracle::{seed_and_count, Rng},
    icmp6_frame::Icmp6Error,
    packet_rig::*,
};
use lb_userspace::dataplane::Dataplane;

use crate::{
    icmp6_nat::{dst6, CONFIG, VIP6},
    ipv6::backend_id6,
    stateless_syn6::handshake6,
};

/// A router on the clients' side.
const ROUTER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x10, 0, 0, 0, 0, 0xfe);

/// One random error and what the oracle needs of it.
struct Case {
    error: Icmp6Error,
    /// The packet it quotes (whole; the error quotes `quoted_l4` bytes after its IPv6
    /// header).
    about: Frame6,
    quoted_l4: usize,
    /// From the backends' side (arrives on `b0`), about a client's packet.
    from_backend: bool,
    /// The frame is cut short of what its IPv6 header says.
    cut: Option<usize>,
}

/// What a case must get.
#[derive(Debug, PartialEq)]
enum Expected {
    Unchanged,
    /// Passed because its hop limit would expire.
    Expiring,
    /// Sent to the backend of the quoted reply's flow: the one placed, if it was.
    ToBackend(Option<Ipv6Addr>),
    ToClient,
}

/// The service port and the backends' port of `proto`.
fn ports(proto: u8) -> (u16, u16) {
    if proto == PROTO_TCP {
        (80, 8080)
    } else {
        (53, 5353)
    }
}

fn case(rng: &mut Rng) -> Case {
    let from_backend = rng.below(2) == 0;
    let proto = rng.pick(&[PROTO_TCP, PROTO_UDP]);
    let client_port = 1024 + rng.below(16) as u16;
    let (vport, bport) = ports(proto);
    let about = Frame6 {
        proto,
        flags: PSH_ACK,
        payload: vec![0x5a; rng.below(40) as usize],
        hop_limit: 63,
        ..Frame6::default()
    };
    let (about, from, to) = if from_backend {
        let backend = backend6(rng.pick(&[11, 12, 13]));
        let from = if rng.below(6) == 0 {
            backend6(rng.pick(&[11, 12, 13]))
        } else {
            backend
        };
        let about = Frame6 {
            src: CLIENT6,
            dst: backend,
            sport: client_port,
            dport: rng.pick(&[bport, bport, bport, 9999]),
            ..about
        };
        (about, from, CLIENT6)
    } else {
        let about = Frame6 {
            src: VIP6,
            dst: CLIENT6,
            sport: rng.pick(&[vport, vport, vport, 81]),
            dport: client_port,
            ..about
        };
        (about, rng.pick(&[ROUTER6, ROUTER6, CLIENT6]), VIP6)
    };
    let header = if proto == PROTO_TCP { TCP_LEN } else { UDP_LEN };
    let quoted_l4 = rng.pick(&[8, header, header + about.payload.len()]);
    let (src_mac, dst_mac) = if from_backend {
        (backend_mac(from.octets()[15]), [0x02, 0, 0, 0, 0xee, 0x03])
    } else {
        ([0x02, 0, 0, 0, 0x0a, 0xfe], [0x02, 0, 0, 0, 0xee, 0x01])
    };
    let error = Icmp6Error {
        dst_mac,
        src_mac,
        from,
        to,
        hop_limit: rng.pick(&[64, 64, 64, 1]),
        icmp_type: rng.pick(&[1, 1, 2, 3, 4, 0, 128, 135]),
        code: rng.pick(&[0, 3, 4]),
        rest: [0, 0, 0x05, 0x00],
        quoted: Icmp6Error::quote(&about.bytes(), IP6_LEN + quoted_l4),
    };
    let cut =
        (rng.below(10) == 0).then(|| 14 + rng.below(error.bytes().len() as u64 - 14) as usize);
    Case {
        error,
        about,
        quoted_l4,
        from_backend,
        cut,
    }
}

/// The oracle, from the case and the backends the run's tuples were placed on (by
/// protocol and client port).
fn expected(c: &Case, placed: &HashMap<(u8, u16), Ipv6Addr>) -> Expected {
    let e = &c.error;
    if c.cut.is_some() || !(1..=4).contains(&e.icmp_type) {
        return Expected::Unchanged;
    }
    let proto = c.about.proto;
    let (vport, bport) = ports(proto);
    let translated = if c.from_backend {
        let sent_there = placed.get(&(proto, c.about.sport)) == Some(&c.about.dst);
        if e.from != c.about.dst || !sent_there || c.about.dport != bport {
            return Expected::Unchanged;
        }
        Expected::ToClient
    } else {
        if c.about.sport != vport {
            return Expected::Unchanged;
        }
        Expected::ToBackend(placed.get(&(proto, c.about.dport)).copied())
    };
    if e.hop_limit <= 1 {
        return Expected::Expiring;
    }
    translated
}

/// The error the other end must get for a translated case, `backend` the one it went to
/// (for an error towards a backend).
fn translated(
    c: &Case,
    backend: Ipv6Addr,
    macs: (lb_tests::frame::Mac, lb_tests::frame::Mac),
) -> Vec<u8> {
    let (c0_mac, b0_mac) = macs;
    let (vport, bport) = ports(c.about.proto);
    let e = &c.error;
    let (error, about) = if c.from_backend {
        let error = Icmp6Error {
            dst_mac: CLIENT_MAC,
            src_mac: c0_mac,
            from: VIP6,
            ..e.clone()
        };
        let about = Frame6 {
            dst: VIP6,
            dport: vport,
            ..c.about.clone()
        };
        (error, about)
    } else {
        let error = Icmp6Error {
            dst_mac: backend_mac(backend.octets()[15]),
            src_mac: b0_mac,
            to: backend,
            ..e.clone()
        };
        let about = Frame6 {
            src: backend,
            sport: bport,
            ..c.about.clone()
        };
        (error, about)
    };
    Icmp6Error {
        hop_limit: e.hop_limit - 1,
        quoted: Icmp6Error::quote(&about.bytes(), IP6_LEN + c.quoted_l4),
        ..error
    }
    .bytes()
}

#[test]
fn random_icmpv6_errors_get_exactly_the_translation_the_oracle_derives() {
    let (seed, count) = seed_and_count(0x1c_6e44, 3_000);
    let rig = Rig::build();
    let (c0, b0, c0_mac, b0_mac) = (rig.c0, rig.b0, rig.c0_mac, rig.b0_mac);
    rig.with_dataplane(CONFIG, |c| {
        let dp = c.dataplane();
        let mut rng = Rng(seed);
        let mut placed: HashMap<(u8, u16), Ipv6Addr> = HashMap::new();
        let mut unreachables: HashMap<Ipv6Addr, u64> = HashMap::new();
        let mut seen = BTreeMap::new();
        for i in 0..count {
            if rng.below(4) == 0 {
                // A client's SYN or datagram places its tuple: from half the client
                // ports the errors quote, so that the other half stays the table's.
                let proto = rng.pick(&[PROTO_TCP, PROTO_UDP]);
                let sport = 1024 + rng.below(8) as u16;
                let f = Frame6 {
                    src_mac: CLIENT_MAC,
                    src: CLIENT6,
                    dst: VIP6,
                    sport,
                    dport: ports(proto).0,
                    proto,
                    flags: 0x02,
                    ..Frame6::default()
                };
                let backend = if proto == PROTO_TCP {
                    // Recorded by the ACK of its SYN-ACK.
                    handshake6(dp, c0, b0, &f)
                } else {
                    let r = run_once(dp.program(), c0, &f.bytes());
                    assert_eq!(r.action, XDP_REDIRECT, "placing {f:?}");
                    dst6(&r.output)
                };
                let was = placed.insert((proto, sport), backend);
                assert!(was.is_none() || was == Some(backend), "{f:?} moved");
                continue;
            }
            let case = case(&mut rng);
            let mut input = case.error.bytes();
            if let Some(len) = case.cut {
                input.truncate(len);
            }
            let e = expected(&case, &placed);
            let ingress = if case.from_backend { b0 } else { c0 };
            let r = run_once(dp.program(), ingress, &input);
            let what = format!("error #{i} of seed {seed:#x} ({e:?}): {input:02x?}");
            match (&e, r.action) {
                (Expected::Unchanged | Expected::Expiring, XDP_PASS) => {
                    assert_eq!(r.output, input, "{what}: changed");
                }
                (Expected::ToBackend(want), XDP_REDIRECT) => {
                    let backend = dst6(&r.output);
                    assert!(
                        [11, 12, 13].map(backend6).contains(&backend),
                        "{what}: to {backend}"
                    );
                    if let Some(want) = want {
                        assert_eq!(backend, *want, "{what}: not the flow's backend");
                    }
                    let want = translated(&case, backend, (c0_mac, b0_mac));
                    assert_eq!(r.output, want, "{what}: output");
                }
                (Expected::ToClient, XDP_REDIRECT) => {
                    let want = translated(&case, VIP6, (c0_mac, b0_mac));
                    assert_eq!(r.output, want, "{what}: output");
                    let e = &case.error;
                    if case.about.proto == PROTO_UDP && (e.icmp_type, e.code) == (1, 4) {
                        *unreachables.entry(case.about.dst).or_default() += 1;
                    }
                }
                _ => panic!("{what}: action {}", r.action),
            }
            let kind = match e {
                Expected::ToBackend(Some(_)) => "ToBackend(placed)".to_string(),
                Expected::ToBackend(None) => "ToBackend(table)".to_string(),
                other => format!("{other:?}"),
            };
            *seen.entry(kind).or_insert(0u32) += 1;
        }
        // Every kind of outcome came up, so none of the checks above was vacuous.
        for kind in [
            "Unchanged",
            "Expiring",
            "ToBackend(placed)",
            "ToBackend(table)",
            "ToClient",
        ] {
            assert!(
                seen.get(kind).copied().unwrap_or(0) > 10,
                "{kind}: {seen:?}"
            );
        }
        assert!(unreachables.values().sum::<u64>() > 0, "{unreachables:?}");
        for last in [11, 12, 13] {
            let addr = backend6(last);
            let id = backend_id6(c, "dns6", addr);
            let counted = dp.backend_signals(id).unwrap().unreachables;
            let want = unreachables.get(&addr).copied().unwrap_or(0);
            assert_eq!(counted, want, "port unreachables counted on {addr}");
            let tcp = dp.backend_signals(backend_id6(c, "web6", addr)).unwrap();
            assert_eq!(tcp.unreachables, 0, "TCP's counted on {addr}");
        }
    });
}
