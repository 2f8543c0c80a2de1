//! Packet tests of edge protection (docs/edge-protection.md): per-service source rules
//! (each rule's verdict and exact hit count, the longest prefix wins, a prefix listed
//! both ways is denied, no match with an allow list is refused), rules only for packets
//! without a flow entry, SYN rate limits (exact token accounting on the kernel's
//! clock, the limited sources listed, a blocked source remembered), and packets for a VIP's unlisted ports passed or
//! dropped by config. The real XDP object, maps filled by the real controller, frames
//! through BPF_PROG_TEST_RUN; every verdict is checked against the reason counters.
use std::net::Ipv4Addr;

use aya::maps::{Map, ProgramArray};
use lb_common::{
    checksum::internet_checksum,
    counters::Reason,
    edge::{EDGE_ALLOW, EDGE_DENY},
    limits::{MAP_PROGRAMS, PROGRAMS_SLOT_EDGE},
};
use lb_tests::{
    frame::{Frame, PSH_ACK},
    packet_exchange::{self, run_counted},
    packet_rig::*,
};
use lb_userspace::{
    control::tables::Controller,
    dataplane::{Counters, Dataplane},
    kernel::KernelDataplane,
    model::{config, edge::EdgeRuleKey},
    ops::edge::bucket_clock_secs,
};

const GUARDED_VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 120);
const LIMITED_VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 121);

/// `guarded`: allow 10.10/16 but deny 10.10.5/24 except 10.10.5.8/30, and 10.10.9/24
/// both ways. `limited`: 2 SYNs a second per source, bursts of 3.
const CONFIG: &str = lb_tests::rig_config_with!(
    r#"  - name: guarded
    vip: 10.0.0.120
    port: 80
    filter:
      allow: [10.10.0.0/16, 10.10.5.8/30, 10.10.9.0/24]
      deny: [10.10.5.0/24, 10.10.9.0/24]
    backends:
      - { address: 10.1.0.11, port: 8080, zone: az-a }
  - name: limited
    vip: 10.0.0.121
    port: 80
    rate_limit: { syns_per_second: 2, burst: 3 }
    backends:
      - { address: 10.1.0.12, port: 8080, zone: az-a }
"#
);

/// [`CONFIG`] with packets for unlisted ports dropped.
fn config_drop_unlisted() -> String {
    format!("{CONFIG}unlisted_ports: drop\n")
}

fn syn_from(src: Ipv4Addr, vip: Ipv4Addr, sport: u16) -> Frame {
    Frame {
        src,
        dst: vip,
        ..client_syn(sport)
    }
}

/// The hit counter of `guarded`'s rule for `net/len`, checking its verdict.
fn counter_of(c: &Controller<KernelDataplane>, net: [u8; 4], len: u8, verdict: u32) -> u32 {
    let net = Ipv4Addr::from(net).to_string();
    edge_rule_counter(c, "guarded", (&net, len), verdict)
}

#[test]
fn each_source_gets_the_verdict_of_its_most_specific_rule_counted_on_that_rule() {
    let rig = Rig::build();
    let c0 = rig.c0;
    rig.with_dataplane(CONFIG, |c| {
        let wide = counter_of(c, [10, 10, 0, 0], 16, EDGE_ALLOW);
        let denied = counter_of(c, [10, 10, 5, 0], 24, EDGE_DENY);
        let carved = counter_of(c, [10, 10, 5, 8], 30, EDGE_ALLOW);
        let both = counter_of(c, [10, 10, 9, 0], 24, EDGE_DENY);
        assert_eq!(
            c.edge_tables().rules.len(),
            4,
            "10.10.9.0/24 is one deny rule"
        );
        let dp = c.dataplane();
        let cases: [([u8; 4], Reason); 6] = [
            ([10, 10, 0, 2], Reason::RedirectInterface),
            ([10, 10, 6, 1], Reason::RedirectInterface),
            ([10, 10, 5, 3], Reason::DropEdgeDenied),
            ([10, 10, 5, 9], Reason::RedirectInterface),
            ([10, 10, 9, 1], Reason::DropEdgeDenied),
            ([192, 0, 2, 1], Reason::DropEdgeNotAllowed),
        ];
        for (i, (src, reason)) in cases.into_iter().enumerate() {
            let syn = syn_from(Ipv4Addr::from(src), GUARDED_VIP, 41000 + i as u16);
            let r = run_counted(dp, c0, &syn.bytes(), reason);
            let want = if reason == Reason::RedirectInterface {
                XDP_REDIRECT
            } else {
                XDP_DROP
            };
            assert_eq!(r.action, want, "SYN from {src:?}");
        }
        let hits = |counter| dp.edge_rule_hits(counter).unwrap();
        assert_eq!(
            [hits(wide), hits(denied), hits(carved), hits(both)],
            [2, 1, 1, 1]
        );
        let id = service_id(c, "guarded");
        assert_eq!(dp.edge_counters(id).unwrap().not_allowed, 1);
        assert_eq!(dp.edge_counters(id).unwrap().rate_limited, 0);
    });
}

#[test]
fn a_source_denied_later_keeps_its_established_flow_but_opens_no_new_one() {
    let rig = Rig::build();
    let (c0, b0) = (rig.c0, rig.b0);
    rig.with_dataplane(CONFIG, |c| {
        let syn = syn_from(CLIENT, GUARDED_VIP, 42000);
        let backend = packet_exchange::handshake(c.dataplane(), (c0, b0), &syn);
        assert_eq!(backend, Ipv4Addr::new(10, 1, 0, 11));
        let mut denied = config::parse(CONFIG).unwrap();
        let guarded = denied
            .services
            .iter_mut()
            .find(|s| s.name == "guarded")
            .unwrap();
        guarded.filter.deny.push("10.10.0.2/32".parse().unwrap());
        c.apply(&denied).unwrap();
        let dp = c.dataplane();
        let data = Frame {
            flags: PSH_ACK,
            payload: b"GET /".to_vec(),
            ..ack_of(&syn)
        };
        let r = run_counted(dp, c0, &data.bytes(), Reason::RedirectInterface);
        assert_eq!(r.action, XDP_REDIRECT, "the established flow carries on");
        let again = syn_from(CLIENT, GUARDED_VIP, 42001);
        let r = run_counted(dp, c0, &again.bytes(), Reason::DropEdgeDenied);
        assert_eq!(r.action, XDP_DROP, "a new connection is refused");
    });
}

/// Waits (at most 2 s) until the buckets' clock has just ticked to a new second, and
/// returns that second.
pub(crate) fn fresh_second() -> u32 {
    let start = bucket_clock_secs();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while bucket_clock_secs() == start {
        assert!(
            std::time::Instant::now() < deadline,
            "the clock stands still"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    bucket_clock_secs()
}

/// Waits (at most 5 s) until the buckets' clock reads `second`.
fn until_second(second: u32) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while bucket_clock_secs() < second {
        assert!(
            std::time::Instant::now() < deadline,
            "second {second} never came"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// The limit refills from the kernel's clock, which the data path reads itself: nothing
/// here writes the controller's clock map, as nothing does while `lbd` is away. Each
/// burst runs within one second of that clock (checked after, and the whole run repeated
/// on a fresh data path, at most 3 times, if a second ended inside one).
#[test]
fn a_source_passes_its_burst_of_syns_then_one_per_token_refilled_each_second() {
    for attempt in 0..3 {
        if burst_then_refill_by_the_kernel_clock() {
            return;
        }
        eprintln!("attempt {attempt}: a second ended inside a burst; again");
    }
    panic!("3 attempts, each with a second ending inside a burst");
}

/// One run of the test above; false if a burst did not fit in its second.
fn burst_then_refill_by_the_kernel_clock() -> bool {
    let rig = Rig::build();
    let c0 = rig.c0;
    rig.with_dataplane(CONFIG, |c| {
        let flood = Ipv4Addr::new(10, 10, 7, 7);
        let mut sport = 43000;
        let mut burst = |c: &mut Controller<KernelDataplane>, n: usize| -> Vec<u32> {
            (0..n)
                .map(|_| {
                    sport += 1;
                    let syn = syn_from(flood, LIMITED_VIP, sport);
                    run_once(c.dataplane().program(), c0, &syn.bytes()).action
                })
                .collect()
        };
        let (p, d) = (XDP_REDIRECT, XDP_DROP);
        let first = fresh_second();
        let full = burst(c, 5);
        let next = first + 1;
        if bucket_clock_secs() != first {
            return false;
        }
        assert_eq!(full, [p, p, p, d, d], "the burst of 3");
        until_second(next);
        let refilled = burst(c, 3);
        if bucket_clock_secs() != next {
            return false;
        }
        assert_eq!(refilled, [p, p, d], "2 tokens a second");
        let later = next + 2;
        until_second(later);
        let capped = burst(c, 4);
        // A retransmitted SYN (the same tuple) takes a token each time too.
        let again = |c: &mut Controller<KernelDataplane>| {
            let syn = syn_from(Ipv4Addr::new(10, 10, 7, 8), LIMITED_VIP, 43300);
            run_once(c.dataplane().program(), c0, &syn.bytes()).action
        };
        let same: Vec<u32> = (0..5).map(|_| again(c)).collect();
        if bucket_clock_secs() != later {
            return false;
        }
        assert_eq!(capped, [p, p, p, d], "refilled up to the burst only");
        assert_eq!(same, [p, p, p, d, d], "the same tuple again");

        // Another source has its own bucket; a data packet takes no token.
        let other = syn_from(CLIENT, LIMITED_VIP, 43100);
        let dp = c.dataplane();
        assert_eq!(run_once(dp.program(), c0, &other.bytes()).action, p);
        let data = Frame {
            flags: PSH_ACK,
            ..syn_from(flood, LIMITED_VIP, 43200)
        };
        let r = run_counted(dp, c0, &data.bytes(), Reason::RedirectInterface);
        assert_eq!(r.action, p, "a packet without SYN takes no token");
        let syn = syn_from(flood, LIMITED_VIP, 43201);
        // The flood source's bucket is empty and its next refill a second away at least.
        let r = run_counted(dp, c0, &syn.bytes(), Reason::DropRateLimited);
        if bucket_clock_secs() != later {
            return false;
        }
        assert_eq!(r.action, d);

        let id = service_id(c, "limited");
        assert_eq!(dp.edge_counters(id).unwrap().rate_limited, 7);
        let limited = dp.limited_sources(10).unwrap();
        assert_eq!(limited.len(), 2, "{limited:?}");
        assert_eq!((limited[0].service, limited[0].source), (id, flood.into()));
        assert_eq!(limited[0].bucket.dropped, 5);
        assert_eq!(limited[0].bucket.tokens, 0);
        true
    })
}

/// A source a rule refused is remembered (the drop memo), and its next packets are
/// dropped by `lb_xdp` itself: counted exactly as the full check counts them (the rule's
/// matches, the service's refusals, the reason). A rule change forgets what was
/// remembered: a source no longer denied gets in with its very next SYN.
#[test]
fn remembered_drops_are_counted_like_checked_ones_and_forgotten_when_the_rules_change() {
    let rig = Rig::build();
    let c0 = rig.c0;
    rig.with_dataplane(CONFIG, |c| {
        let denied = counter_of(c, [10, 10, 5, 0], 24, EDGE_DENY);
        let id = service_id(c, "guarded");
        let (source, stranger) = (Ipv4Addr::new(10, 10, 5, 3), Ipv4Addr::new(192, 0, 2, 1));
        let dp = c.dataplane();
        for i in 0..5 {
            let syn = syn_from(source, GUARDED_VIP, 45000 + i);
            let r = run_counted(dp, c0, &syn.bytes(), Reason::DropEdgeDenied);
            assert_eq!(r.action, XDP_DROP);
            let other = syn_from(stranger, GUARDED_VIP, 45000 + i);
            let r = run_counted(dp, c0, &other.bytes(), Reason::DropEdgeNotAllowed);
            assert_eq!(r.action, XDP_DROP);
        }
        assert_eq!(dp.edge_rule_hits(denied).unwrap(), 5);
        assert_eq!(dp.edge_counters(id).unwrap().not_allowed, 5);

        // The deny rule taken off: the next SYN of the source it denied is admitted.
        let lifted = CONFIG.replace("deny: [10.10.5.0/24, 10.10.9.0/24]", "deny: [10.10.9.0/24]");
        assert_ne!(lifted, CONFIG);
        c.apply(&config::parse(&lifted).unwrap()).unwrap();
        let dp = c.dataplane();
        let syn = syn_from(source, GUARDED_VIP, 45100);
        let r = run_counted(dp, c0, &syn.bytes(), Reason::RedirectInterface);
        assert_eq!(r.action, XDP_REDIRECT, "no longer denied, at once");
    });
}

/// The drop memo is keyed by VIP, port and source (so `lb_xdp` reads it before the
/// service lookup): a refusal remembered on one VIP:port drops nothing elsewhere, and is
/// forgotten when the protected service moves and an unprotected one takes its VIP:port,
/// a change that touches no rule.
#[test]
fn a_remembered_drop_stands_for_its_vip_and_port_only_and_goes_when_another_service_takes_them() {
    let rig = Rig::build();
    let (c0, b0_mac) = (rig.c0, rig.b0_mac);
    rig.with_dataplane(CONFIG, |c| {
        let source = Ipv4Addr::new(10, 10, 5, 3);
        let dp = c.dataplane();
        for i in 0..3 {
            let syn = syn_from(source, GUARDED_VIP, 46000 + i);
            let r = run_counted(dp, c0, &syn.bytes(), Reason::DropEdgeDenied);
            assert_eq!(r.action, XDP_DROP);
        }
        // The same source to the unprotected `web`: placed.
        let syn = syn_from(source, VIP, 46010);
        let r = run_counted(dp, c0, &syn.bytes(), Reason::RedirectInterface);
        assert_eq!(r.action, XDP_REDIRECT);

        // `guarded` moves to port 81 with its rules; `open`, without rules, takes port 80.
        let moved = CONFIG.replace(
            "  - name: guarded\n    vip: 10.0.0.120\n    port: 80\n",
            "  - name: guarded\n    vip: 10.0.0.120\n    port: 81\n",
        ) + "  - { name: open, vip: 10.0.0.120, port: 80, backends: [{ address: 10.1.0.12, port: 8080, zone: az-a }] }\n";
        assert!(moved.contains("port: 81"));
        c.apply(&config::parse(&moved).unwrap()).unwrap();
        let dp = c.dataplane();
        let syn = syn_from(source, GUARDED_VIP, 46020);
        let r = run_counted(dp, c0, &syn.bytes(), Reason::RedirectInterface);
        let expected = as_to_backend(&syn, (Ipv4Addr::new(10, 1, 0, 12), 8080), b0_mac);
        expect_run(&r, XDP_REDIRECT, &expected.bytes(), &"port 80 is open's now");
        let mut at_81 = syn_from(source, GUARDED_VIP, 46021);
        at_81.dport = 81;
        let r = run_counted(dp, c0, &at_81.bytes(), Reason::DropEdgeDenied);
        assert_eq!(r.action, XDP_DROP, "guarded still denies it on port 81");
    });
}

/// `walled`: an allow rule and a rate limit that blocks a source for an hour once its
/// burst of 2 is spent; `blocking`: the same limit without rules.
const BLOCKING_CONFIG: &str = lb_tests::rig_config_with!(
    r#"  - name: walled
    vip: 10.0.0.122
    port: 80
    filter: { allow: [10.10.0.0/16] }
    rate_limit: { syns_per_second: 1, burst: 2, block: 1h }
    backends:
      - { address: 10.1.0.11, port: 8080, zone: az-a }
  - name: blocking
    vip: 10.0.0.123
    port: 80
    rate_limit: { syns_per_second: 1, burst: 2, block: 1h }
    backends:
      - { address: 10.1.0.12, port: 8080, zone: az-a }
"#
);

/// A source its rate limit blocks is remembered (the drop memo) like a refused one: its
/// next SYNs are dropped by `lb_xdp` itself, without `lb_edge` (taken out of the program
/// array here, so that a SYN handed over would be dropped as `drop_edge_denied`
/// instead), and counted as `lb_edge` counts them: in its bucket, on the service, on the
/// rule that admitted it, as `drop_rate_limited`. Its packets without SYN are not the
/// limit's: still handed to `lb_edge` (and so refused without it).
#[test]
fn a_blocked_sources_next_syns_are_dropped_by_lb_xdp_and_counted_as_lb_edge_counts_them() {
    let rig = Rig::build();
    let c0 = rig.c0;
    rig.with_dataplane(BLOCKING_CONFIG, |c| {
        let source = Ipv4Addr::new(10, 10, 8, 8);
        let admitting = c.edge_tables().rules[&EdgeRuleKey {
            service: service_id(c, "walled"),
            net: Ipv4Addr::new(10, 10, 0, 0).into(),
            len: 16,
        }]
            .counter;
        let services = [
            ("walled", Ipv4Addr::new(10, 0, 0, 122)),
            ("blocking", Ipv4Addr::new(10, 0, 0, 123)),
        ];
        let dp = c.dataplane();
        let syn = |vip, sport| syn_from(source, vip, sport).bytes();
        for (name, vip) in services {
            for sport in [46000, 46001] {
                let r = run_counted(dp, c0, &syn(vip, sport), Reason::RedirectInterface);
                assert_eq!(r.action, XDP_REDIRECT, "{name}: the burst");
            }
            // Checked by `lb_edge`: no token left, blocked, remembered.
            let r = run_counted(dp, c0, &syn(vip, 46002), Reason::DropRateLimited);
            assert_eq!(r.action, XDP_DROP, "{name}: blocked");
        }
        let programs = map_of(dp.program(), MAP_PROGRAMS);
        let mut programs = ProgramArray::try_from(Map::ProgramArray(programs)).unwrap();
        programs.clear_index(&PROGRAMS_SLOT_EDGE).unwrap();
        for (name, vip) in services {
            for sport in 46003..46008 {
                let r = run_counted(dp, c0, &syn(vip, sport), Reason::DropRateLimited);
                assert_eq!(r.action, XDP_DROP, "{name}: remembered");
            }
            let data = Frame {
                flags: PSH_ACK,
                ..syn_from(source, vip, 46100)
            };
            let r = run_counted(dp, c0, &data.bytes(), Reason::DropEdgeDenied);
            assert_eq!(r.action, XDP_DROP, "{name}: no SYN, handed over");

            let id = service_id(c, name);
            assert_eq!(dp.edge_counters(id).unwrap().rate_limited, 6, "{name}");
            let limited = dp.limited_sources(10).unwrap();
            let bucket = limited
                .iter()
                .find(|l| (l.service, l.source) == (id, source.into()))
                .unwrap_or_else(|| panic!("{name}: {limited:?}"))
                .bucket;
            assert_eq!((bucket.dropped, bucket.tokens), (6, 0), "{name}");
        }
        // The allow rule counts every SYN it admitted to the limit: 2 passed, 6 dropped.
        assert_eq!(dp.edge_rule_hits(admitting).unwrap(), 8);
    });
}

/// A removed service's edge counters and buckets are gone from the kernel maps before
/// its id serves another service (which would otherwise start with its drops and its
/// sources' empty buckets).
#[test]
fn a_service_id_taken_again_starts_without_the_old_services_counters_and_buckets() {
    let rig = Rig::build();
    let c0 = rig.c0;
    rig.with_dataplane(CONFIG, |c| {
        let id = service_id(c, "limited");
        let flood = Ipv4Addr::new(10, 10, 7, 9);
        for sport in 44000..44010 {
            let syn = syn_from(flood, LIMITED_VIP, sport);
            run_once(c.dataplane().program(), c0, &syn.bytes());
        }
        let dp = c.dataplane();
        assert!(dp.edge_counters(id).unwrap().rate_limited > 0);
        assert_eq!(dp.limited_sources(10).unwrap().len(), 1);

        let without = CONFIG.replace("  - name: limited\n", "  - name: later\n");
        let only_guarded = without
            .split("  - name: later\n")
            .next()
            .unwrap()
            .to_string();
        c.apply(&config::parse(&only_guarded).unwrap()).unwrap();
        c.apply(&config::parse(&without).unwrap()).unwrap();
        assert_eq!(service_id(c, "later"), id, "the id is taken again");
        let dp = c.dataplane();
        assert_eq!(dp.edge_counters(id).unwrap().rate_limited, 0);
        assert_eq!(dp.limited_sources(10).unwrap(), []);
    });
}

/// `frame` as another IP protocol (the IP checksum fixed; the data path reads no L4
/// header of a protocol that is not TCP).
fn as_protocol(frame: &Frame, proto: u8) -> Vec<u8> {
    let mut bytes = frame.bytes();
    bytes[14 + 9] = proto;
    bytes[14 + 10..14 + 12].copy_from_slice(&[0, 0]);
    let sum = internet_checksum(&bytes[14..34], 0);
    bytes[14 + 10..14 + 12].copy_from_slice(&sum.to_be_bytes());
    bytes
}

#[test]
fn unlisted_ports_and_protocols_of_a_vip_are_passed_by_default_and_dropped_if_asked() {
    let rig = Rig::build();
    let c0 = rig.c0;
    let unlisted = syn_from(CLIENT, GUARDED_VIP, 44000);
    let unlisted = Frame {
        dport: 81,
        ..unlisted
    };
    let listed = syn_from(CLIENT, GUARDED_VIP, 44001);
    rig.with_dataplane(CONFIG, |c| {
        let dp = c.dataplane();
        let r = run_counted(dp, c0, &unlisted.bytes(), Reason::PassNoService);
        assert_eq!(r.action, XDP_PASS);
        let r = run_counted(dp, c0, &as_protocol(&unlisted, 17), Reason::PassNotTcp);
        assert_eq!(r.action, XDP_PASS);
        let mut options = unlisted.bytes();
        options[14] = 0x46;
        let r = run_counted(dp, c0, &options, Reason::PassIpOptions);
        assert_eq!(r.action, XDP_PASS);
    });
    rig.with_dataplane(&config_drop_unlisted(), |c| {
        let dp = c.dataplane();
        let r = run_counted(dp, c0, &unlisted.bytes(), Reason::DropUnlistedPort);
        assert_eq!(r.action, XDP_DROP, "TCP to an unlisted port");
        let r = run_counted(
            dp,
            c0,
            &as_protocol(&unlisted, 17),
            Reason::DropUnlistedPort,
        );
        assert_eq!(r.action, XDP_DROP, "UDP to the VIP");
        let r = run_counted(dp, c0, &as_protocol(&unlisted, 1), Reason::PassNotTcp);
        assert_eq!(r.action, XDP_PASS, "ICMP stays the kernel's");
        // Nor do IP options or fragments get round it (the data path places neither;
        // the kernel would deliver them to the node's own sockets on the VIP).
        for (what, edit) in [
            ("ip options", (0usize, 0x46u8)),
            ("a first fragment", (6, 0x20)),
            ("a later fragment", (7, 0x10)),
        ] {
            let mut bytes = unlisted.bytes();
            bytes[14 + edit.0] = edit.1;
            let r = run_counted(dp, c0, &bytes, Reason::DropUnlistedPort);
            assert_eq!(r.action, XDP_DROP, "{what} to the VIP");
        }
        let r = run_counted(dp, c0, &listed.bytes(), Reason::RedirectInterface);
        assert_eq!(r.action, XDP_REDIRECT, "the service's own port");
        let elsewhere = Frame {
            dst: Ipv4Addr::new(10, 9, 9, 9),
            ..unlisted.clone()
        };
        let r = run_counted(dp, c0, &elsewhere.bytes(), Reason::PassNoService);
        assert_eq!(r.action, XDP_PASS, "not a VIP");
    });
}
