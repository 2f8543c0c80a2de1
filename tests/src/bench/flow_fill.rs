//! How per-packet cost grows with the flow table's fill and the number of backends.
//!
//! One data path (in the packet rig's namespace) with a flow table of
//! [`FLOW_TABLE_SIZE`] entries per direction is filled from userspace through the real
//! maps (`KernelDataplane::flows` / `return_flows`), level by level (1k, 100k, 1M
//! entries); at each level the controller re-applies the service with 10, 1,000 and
//! 10,000 backends, and these paths are timed with BPF_PROG_TEST_RUN as in
//! [`super::packet`]:
//!
//! - established: each call an ACK of a different, randomly chosen pre-filled flow, so
//!   lookups miss the CPU caches as they would with many live connections;
//! - established, one hot flow: every call an ACK of the same pre-filled flow, as in the
//!   per-packet table: what the table's size costs once its memory is not the question;
//! - new flow: each call a SYN of a tuple never seen, which takes the Maglev path and
//!   records no flow (see `lb_common::syn_cache`);
//! - SYN-ACK: each first ACK's handshake answer from its backend, run between the SYN and
//!   the ACK and timed on its own (not by the rounds), whose reply lookup meets the
//!   connection's slots first; with the SYN and the first ACK, a whole handshake;
//! - first ACK: the same tuples' next client packet, each right after its SYN and SYN-ACK,
//!   which records the connection (one slot, or an entry in each LRU map); those are
//!   deleted after each round (untimed), with the counts they left in their homes (lbd's
//!   sweep), so the fill stays at its level. Its calls are also told apart by where the
//!   connection landed (its home slot, a buddy, the LRU maps), each with its share and
//!   median, since the column's median is that mixture's;
//! - lookup only: pre-filled flows' packets (drawn independently of the established
//!   column's) through `lb_flow_probe`, which parses and looks the tuple up in the same
//!   flow table and does nothing else: the table's own cost, measured as the whole path
//!   is;
//! - home read: pre-filled flows' packets (drawn independently again) through
//!   `lb_slot_read_probe`, which parses and reads the tuple's home slot's tag (XDP_PASS
//!   when it holds a connection) and does nothing else: the one read of the table's
//!   memory every lookup makes, measured as the whole path is, the floor under the
//!   random-flow column (a path that reads one line of the table per packet costs this
//!   plus what it does in the caches).
//!
//! These three random-flow columns run in alternating blocks of a few dozen calls, so
//! that the machine's state at each moment weighs on them alike and their ratios hold
//! within a round.
//!
//! Beside them, [`super::memory`] times one dependent random read in regions as large as
//! the caches and as the flow maps, in a loop of reads (no syscall between them).
//!
//! Backends are `10.1.0.{11,12,13}` with distinct ports (`10000 + i`), so that every
//! backend has a neighbour in the rig and every packet is redirected: the path stays the
//! same and only the table sizes change.
use std::{cell::RefCell, net::Ipv4Addr};

use aya::programs::Xdp;
use lb_common::{
    flow::{FlowKey, FlowTarget, NatReturn, FLOW_F_COUNTED},
    flow_slots::ConnSlot,
    limits::{PROGRAM_FLOW_PROBE, PROGRAM_SLOT_READ_PROBE},
    net::{ipv4_wire, port_wire, FAMILY_IPV4, PROTO_TCP},
};
use lb_userspace::{control::tables::Controller, kernel::KernelDataplane, model::config};
use serde_json::{json, Value};

use super::{
    memory::{self, Pages},
    stats::{calls, interleaved, median_u64, pin_to_cpu, timed, Round},
    table::{fixed, percent, Table},
};
use crate::{
    frame::{Frame, Mac},
    netns,
    packet_rig::{
        as_from_vip, as_to_backend, backend_mac, expect_run, run_once, Rig, TablePick, BACKEND_ISN,
        CLIENT_MAC, VIP, XDP_PASS, XDP_REDIRECT,
    },
    peer_xdp,
};

/// Flow entries per direction: room for the largest fill plus the new flows of a round,
/// so that the LRU never evicts and only the fill varies.
pub const FLOW_TABLE_SIZE: u32 = 1 << 21;
const RING_SIZE: u32 = 65_537;
/// Pre-filled flows point at backend ids below this, which exist at every backend count.
const FILL_BACKENDS: u32 = 10;

pub struct Options {
    pub rounds: usize,
    pub calls: usize,
    pub fills: Vec<usize>,
    pub backends: Vec<usize>,
}

fn backend_addr(id: u32) -> Ipv4Addr {
    Ipv4Addr::new(10, 1, 0, 11 + (id % 3) as u8)
}

fn backend_port(id: u32) -> u16 {
    10_000 + id as u16
}

/// The rig's interfaces, one service on the VIP with `n` backends.
fn config_text(n: usize) -> String {
    let mut yaml = format!(
        "node: {{ zone: az-a }}\ninterfaces: [c0, b0]\n\
         cluster: {{ ring_size: {RING_SIZE}, hash_seed: 42 }}\n\
         limits: {{ flow_table_size: {FLOW_TABLE_SIZE}, max_services: 1, max_backends: 16384 }}\n\
         services:\n  - name: web\n    vip: {VIP}\n    port: 80\n    backends:\n"
    );
    for id in 0..n as u32 {
        yaml.push_str(&format!(
            "      - {{ address: {}, port: {}, zone: az-a }}\n",
            backend_addr(id),
            backend_port(id)
        ));
    }
    yaml
}

/// Client side of pre-filled flow `i`: 172.16.0.0/12 sources, 60,000 ports each.
fn filled_client(i: usize) -> (Ipv4Addr, u16) {
    let src = Ipv4Addr::from(u32::from(Ipv4Addr::new(172, 16, 0, 0)) + (i / 60_000) as u32);
    (src, 1024 + (i % 60_000) as u16)
}

/// Client side of the `i`-th new flow of a round: 192.168.0.0/16, never pre-filled.
fn new_client(i: usize) -> (Ipv4Addr, u16) {
    let src = Ipv4Addr::from(u32::from(Ipv4Addr::new(192, 168, 0, 0)) + (i / 60_000) as u32);
    (src, 1024 + (i % 60_000) as u16)
}

fn tcp_key(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> FlowKey {
    FlowKey {
        src_addr: ipv4_wire(src.octets()),
        dst_addr: ipv4_wire(dst.octets()),
        src_port: port_wire(sport),
        dst_port: port_wire(dport),
        proto: PROTO_TCP,
        family: FAMILY_IPV4,
        _pad: [0; 2],
    }
}

fn client_frame(src: Ipv4Addr, sport: u16, flags: u8) -> Frame {
    Frame {
        src_mac: CLIENT_MAC,
        src,
        dst: VIP,
        sport,
        dport: 80,
        flags,
        ..Frame::default()
    }
}

/// The client's ACK of the SYN-ACK ([`syn_ack_from`]) answering its SYN.
fn client_ack(src: Ipv4Addr, sport: u16) -> Frame {
    Frame {
        ack: BACKEND_ISN + 1,
        ..client_frame(src, sport, 0x10)
    }
}

/// The SYN-ACK of `backend`:`bport` to the client `src`:`sport`.
fn syn_ack_from(backend: Ipv4Addr, bport: u16, src: Ipv4Addr, sport: u16) -> Frame {
    Frame {
        src_mac: backend_mac(backend.octets()[3]),
        src: backend,
        dst: src,
        sport: bport,
        dport: sport,
        flags: 0x12,
        seq: BACKEND_ISN,
        ..Frame::default()
    }
}

/// Inserts pre-filled flows `from..to`, as the data path would (a reply entry of its own
/// only for a connection left to the LRU maps).
fn fill(dp: &mut KernelDataplane, service: u32, from: usize, to: usize) {
    for i in from..to {
        let (src, sport) = filled_client(i);
        let backend = (i as u32) % FILL_BACKENDS;
        let (addr, port) = (backend_addr(backend), backend_port(backend));
        dp.flows
            .insert(
                tcp_key(src, sport, VIP, 80),
                FlowTarget {
                    backend,
                    service,
                    state: FLOW_F_COUNTED,
                    last_seen: 0,
                    _pad: 0,
                },
                0,
            )
            .unwrap_or_else(|e| panic!("FLOWS insert #{i}: {e}"));
        let nat = NatReturn {
            vip: ipv4_wire(VIP.octets()),
            vport: port_wire(80),
            flags: 0,
            service,
            backend,
            nexthop: Default::default(),
        };
        dp.return_flows
            .insert(tcp_key(addr, port, src, sport), nat, 0)
            .unwrap_or_else(|e| panic!("RETURN_FLOWS insert #{i}: {e}"));
    }
}

/// xorshift64: a cheap, seeded, reproducible choice of which flow each call hits.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

struct Cell {
    fill: usize,
    backends: usize,
    established: u64,
    established_hot: u64,
    new_flow: u64,
    first_ack: u64,
    lookup_only: u64,
    home_read: u64,
    first_ack_landed: [Landed; 3],
    handshake: Handshake,
}

/// The first ACKs' handshakes, each packet timed on its own (not by the rounds), minus the
/// floor's median.
#[derive(Clone, Copy)]
struct Handshake {
    /// The SYN-ACKs' median: their reply lookup is the first to read the connection's
    /// slots.
    syn_ack: u64,
    /// The means of the SYN, the SYN-ACK and the first ACK: what a connection's opening
    /// costs the node on average, by packet (the first ACK's median, of a mixture of
    /// where its connection landed, does not show it).
    means: [u64; 3],
}

impl Handshake {
    /// From each first ACK's (SYN ns, SYN-ACK ns) and its (where, ns).
    fn of(openings: &[(u64, u64)], first_acks: &[(usize, u64)], floor: u64) -> Handshake {
        let syn_acks: Vec<u64> = openings.iter().map(|o| o.1).collect();
        Handshake {
            syn_ack: median_u64(&syn_acks).saturating_sub(floor),
            means: [
                net_mean_of(openings.iter().map(|o| o.0), floor),
                net_mean_of(syn_acks.iter().copied(), floor),
                net_mean(first_acks, floor),
            ],
        }
    }
}

/// Calls of each random-flow column in a row before the next column's: few enough that
/// the machine's state changes little from one block to the next, enough that each
/// program's code and branches stay warm as they do in a data path that runs one program
/// for every packet (the three programs called in turn, one call each, the established
/// column measured 140-190 ns at 1k flows, where everything is in the caches, against
/// 90-140 in blocks).
const RANDOM_FLOW_BLOCK: usize = 50;

/// Where a first ACK's connection landed.
const LANDED: [&str; 3] = ["its home", "a buddy", "the LRU maps"];

/// The first ACKs whose connections landed in one of [`LANDED`]: their share of the calls
/// and their median minus the floor's.
#[derive(Clone, Copy, Default)]
struct Landed {
    share: f64,
    net_median: u64,
}

/// The mean of first ACKs (`(where, ns)`) minus `floor`.
fn net_mean(calls: &[(usize, u64)], floor: u64) -> u64 {
    net_mean_of(calls.iter().map(|c| c.1), floor)
}

/// The mean of `ns` minus `floor`.
fn net_mean_of(ns: impl Iterator<Item = u64>, floor: u64) -> u64 {
    let (sum, count) = ns.fold((0, 0), |(s, c), x| (s + x, c + 1));
    (sum / u64::max(count, 1)).saturating_sub(floor)
}

/// Splits first ACKs (`(where, ns)`, `where` an index of [`LANDED`]) by where they
/// landed.
fn landed(calls: &[(usize, u64)], floor: u64) -> [Landed; 3] {
    std::array::from_fn(|w| {
        let times: Vec<u64> = calls.iter().filter(|c| c.0 == w).map(|c| c.1).collect();
        Landed {
            share: times.len() as f64 / calls.len().max(1) as f64,
            net_median: if times.is_empty() {
                0
            } else {
                median_u64(&times).saturating_sub(floor)
            },
        }
    })
}

/// The six paths at one fill level, interleaved round by round with the floor
/// (`floor`); every call's action and whole output frame checked. Returns the floor's
/// median, each path's net median (per round, minus that round's floor), and the first
/// ACKs by where they landed, with their handshakes.
fn measure_level(
    c: &mut Controller<KernelDataplane>,
    opts: &Options,
    fill_level: usize,
    (c0, b0, c0_mac, b0_mac): (u32, u32, Mac, Mac),
    floor: &Xdp,
) -> (u64, [u64; 6], [Landed; 3], Handshake) {
    let (rounds, n) = (opts.rounds, opts.calls);
    let web = TablePick::new(c, "web");
    // The controller is borrowed by every row, and mutably by the first ACK's cleanup.
    let c = RefCell::new(c);
    let run =
        |ifindex: u32, frame: &[u8]| run_once(c.borrow().dataplane().program(), ifindex, frame);
    let filled_to = |i: usize| {
        let backend = (i as u32) % FILL_BACKENDS;
        (backend_addr(backend), backend_port(backend))
    };
    let floor_frame = client_frame(Ipv4Addr::new(10, 10, 0, 2), 40000, 0x02).bytes();
    let floor_round = calls(n, |i| {
        let r = run_once(floor, c0, &floor_frame);
        expect_run(&r, XDP_PASS, &floor_frame, &format_args!("floor #{i}"));
        r.nanos
    });
    // The random-flow columns, block by block ([`RANDOM_FLOW_BLOCK`]): established calls,
    // lookups, home reads, and again, each on flows drawn independently (so that, but at
    // 1k flows, none finds the lines another has just brought in), so that whatever the
    // machine does to memory meanwhile (a neighbour's burst, the page walks' cached
    // entries cooling after the first ACK's sweep streamed 128 MiB) weighs on all three
    // alike. Timed one column after the other, the lookup, run right after that sweep,
    // came out 40-120 ns dearer than the home read at the median, where both read the
    // same one line.
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ fill_level as u64);
    let mut lookup_rng = Rng(0x2545_f491_4f6c_dd1d ^ fill_level as u64);
    let mut home_rng = Rng(0x6a09_e667_f3bc_c908 ^ fill_level as u64);
    // Each round's lookup-only and home-read medians, taken with its established calls.
    let probe_medians = RefCell::new(Vec::with_capacity(rounds));
    // A pre-filled flow's packet through a probe program of the object, which must pass
    // the frame (`what` names the call).
    let probe = |program: &'static str, i: usize, what: &str| {
        let (src, sport) = filled_client(i);
        let frame = client_frame(src, sport, 0x10).bytes();
        let r = {
            let mut c = c.borrow_mut();
            let probe = c
                .dataplane_mut()
                .extra_xdp(program)
                .unwrap_or_else(|e| panic!("loading {program}: {e:#}"));
            run_once(probe, c0, &frame)
        };
        expect_run(
            &r,
            XDP_PASS,
            &frame,
            &format_args!("{what} of pre-filled flow #{i}"),
        );
        r.nanos
    };
    let established: Round = Box::new(|round| {
        let mut times: [Vec<u64>; 3] = std::array::from_fn(|_| Vec::with_capacity(n));
        for block in 0..n.div_ceil(RANDOM_FLOW_BLOCK) {
            let calls = RANDOM_FLOW_BLOCK.min(n - block * RANDOM_FLOW_BLOCK);
            // Each column leads in turn, from round to round too, so that none always
            // runs first after what came before the round (the last round's first-ACK
            // sweep) or always after the same other column.
            for k in 0..3 {
                let column = (round + block + k) % 3;
                for _ in 0..calls {
                    let ns = match column {
                        0 => {
                            let i = rng.below(fill_level);
                            let (src, sport) = filled_client(i);
                            let frame = client_frame(src, sport, 0x10);
                            let r = run(c0, &frame.bytes());
                            let want = as_to_backend(&frame, filled_to(i), b0_mac).bytes();
                            expect_run(
                                &r,
                                XDP_REDIRECT,
                                &want,
                                &format_args!("pre-filled flow #{i}"),
                            );
                            r.nanos
                        }
                        // `lb_flow_probe` passes only when it found the entry (XDP_DROP
                        // when not); `lb_slot_read_probe` only when the home holds a
                        // connection, as every pre-filled flow's does: its own, or the
                        // one that sent it to a buddy or the LRU maps.
                        1 => probe(PROGRAM_FLOW_PROBE, lookup_rng.below(fill_level), "lookup"),
                        _ => probe(
                            PROGRAM_SLOT_READ_PROBE,
                            home_rng.below(fill_level),
                            "home read",
                        ),
                    };
                    times[column].push(ns);
                }
            }
        }
        let [established, lookup, home] = times.map(|t| median_u64(&t));
        probe_medians.borrow_mut().push([lookup, home]);
        established
    });
    // Round `r`'s figures, which the established row (run before these in each round, see
    // the rows below) took with its own.
    let probes = &probe_medians;
    let lookup_only: Round = Box::new(move |r| probes.borrow()[r][0]);
    let home_read: Round = Box::new(move |r| probes.borrow()[r][1]);
    let hot = fill_level / 2;
    let (src, sport) = filled_client(hot);
    let hot_frame = client_frame(src, sport, 0x10);
    let hot_bytes = hot_frame.bytes();
    let hot_want = as_to_backend(&hot_frame, filled_to(hot), b0_mac).bytes();
    let established_hot = calls(n, |_| {
        let r = run(c0, &hot_bytes);
        expect_run(
            &r,
            XDP_REDIRECT,
            &hot_want,
            &format_args!("pre-filled flow #{hot}"),
        );
        r.nanos
    });
    let new_flow = calls(n, |i| {
        let (src, sport) = new_client(i % n);
        let frame = client_frame(src, sport, 0x02);
        let r = run(c0, &frame.bytes());
        let want = as_to_backend(&frame, web.pick(&frame.flow_key()), b0_mac).bytes();
        expect_run(&r, XDP_REDIRECT, &want, &format_args!("new flow #{i}"));
        r.nanos
    });
    let first_acks = RefCell::new(Vec::with_capacity(n * rounds));
    // Each first ACK's SYN and SYN-ACK, timed on their own: (SYN ns, SYN-ACK ns).
    let openings = RefCell::new(Vec::with_capacity(n * rounds));
    let first_ack: Round = Box::new(|_| {
        let mut times = Vec::with_capacity(n);
        let mut created = Vec::with_capacity(n);
        for i in 0..n {
            let (src, sport) = new_client(i);
            // Its SYN and the backend's SYN-ACK again (timed apart from the rounds'
            // medians, for the handshake's figures): only the ACK of a handshake whose
            // SYN left a slot, acknowledging the SYN-ACK that passed, records a flow,
            // and the last round's ACK spent the slot.
            let syn_frame = client_frame(src, sport, 0x02);
            let syn = run(c0, &syn_frame.bytes());
            let (backend, bport) = web.pick(&syn_frame.flow_key());
            let want = as_to_backend(&syn_frame, (backend, bport), b0_mac);
            expect_run(
                &syn,
                XDP_REDIRECT,
                &want.bytes(),
                &format_args!("SYN before first ACK #{i}"),
            );
            let syn_ack = syn_ack_from(backend, bport, src, sport);
            let answer = run(b0, &syn_ack.bytes());
            expect_run(
                &answer,
                XDP_REDIRECT,
                &as_from_vip(&syn_ack, c0_mac).bytes(),
                &format_args!("SYN-ACK before first ACK #{i}"),
            );
            openings.borrow_mut().push((syn.nanos, answer.nanos));
            let ack = client_ack(src, sport);
            let r = run(c0, &ack.bytes());
            let to = web.pick(&ack.flow_key());
            let want = as_to_backend(&ack, to, b0_mac).bytes();
            expect_run(&r, XDP_REDIRECT, &want, &format_args!("first ACK #{i}"));
            times.push(r.nanos);
            let (forward, reverse) = (
                tcp_key(src, sport, VIP, 80),
                tcp_key(to.0, to.1, src, sport),
            );
            let c = c.borrow();
            let dp = c.dataplane();
            let at = |slot: Option<u32>, home: u32| match slot {
                Some(s) if s == home => 0,
                Some(_) => 1,
                None => 2,
            };
            let class = at(dp.flows.slot_of(&forward), dp.flows.home_of(&forward));
            assert_eq!(
                dp.return_flows.slot_of(&reverse),
                dp.flows.slot_of(&forward),
                "first ACK #{i}: its replies are served where it lives"
            );
            first_acks.borrow_mut().push((class, r.nanos));
            created.push((forward, reverse, class == 2));
        }
        let mut c = c.borrow_mut();
        let dp = c.dataplane_mut();
        for (forward, reverse, in_lru) in &created {
            dp.flows.remove(forward).expect("the new flow was recorded");
            if *in_lru {
                dp.return_flows
                    .remove(reverse)
                    .expect("the new flow's return entry was recorded");
            }
        }
        // And the counts they left in their homes, as lbd's sweep clears them, so that
        // every round starts from the fill level's own state (else the next round's
        // tuples find their homes counting their own removed entries and read every
        // buddy and the LRU map).
        dp.sweep_slots().expect("the slots' sweep");
        median_u64(&times)
    });
    let (floor_stat, nets) = interleaved(
        rounds,
        floor_round,
        // `established` before `lookup_only` and `home_read`, whose figures it takes.
        vec![
            established,
            established_hot,
            new_flow,
            first_ack,
            lookup_only,
            home_read,
        ],
    );
    let net = |k: usize| nets[k].net.median;
    let first_acks = first_acks.borrow();
    let handshake = Handshake::of(&openings.borrow(), &first_acks, floor_stat.median);
    (
        floor_stat.median,
        [net(0), net(1), net(2), net(3), net(4), net(5)],
        landed(&first_acks, floor_stat.median),
        handshake,
    )
}

/// The slots' array at [`FLOW_TABLE_SIZE`] connections, whose random read is also timed
/// in 2 MiB pages: the page walk's share of the home read.
const SLOTS_BYTES: usize = FLOW_TABLE_SIZE as usize * core::mem::size_of::<ConnSlot>();

/// Regions whose random reads bound the fill figures: within this CPU's L1 data cache
/// (48 KiB a core), its L2's size (1 MiB a core), half its L3 (shared with other
/// tenants), the slots' array at [`FLOW_TABLE_SIZE`] connections (64 bytes each, 128
/// MiB: what the home read reads), and about what one LRU hash map of that many flows
/// took before the slots (104 bytes an entry, 208 MiB, `bpftool map show`).
const MEMORY_REGIONS: [(usize, &str); 5] = [
    (32 << 10, "32 KiB"),
    (1 << 20, "1 MiB"),
    (16 << 20, "16 MiB"),
    (SLOTS_BYTES, "128 MiB"),
    (256 << 20, "256 MiB"),
];

pub fn run(opts: &Options) -> Value {
    let rig = Rig::build();
    let (c0, b0, c0_mac, b0_mac) = (rig.c0, rig.b0, rig.c0_mac, rig.b0_mac);
    // The new flows' clients sit behind the client-side neighbour, as a gateway's
    // clients do: their SYN-ACKs are routed back (the FIB decides where a SYN-ACK that
    // found no return entry goes), so each handshake completes and its ACK records.
    netns::ns_ip(
        &rig.ns,
        &["route", "add", "192.168.0.0/16", "via", "10.10.0.2"],
    );
    let first_backends = opts.backends[0];
    let mut fill_seconds = Vec::new();
    let mut placements = Vec::new();
    let mut walks = Vec::new();
    let (floor, cells) = rig.with_dataplane(&config_text(first_backends), |c| {
        pin_to_cpu(0);
        let mut floor_obj = peer_xdp::load_pass_program();
        let floor_prog = peer_xdp::pass_program(&mut floor_obj);
        let mut floors = Vec::new();
        let service = c.plan().expect("applied").services[0].id;
        let mut cells = Vec::new();
        let mut filled = 0;
        for &level in &opts.fills {
            let (took, ()) = timed(|| fill(c.dataplane_mut(), service, filled, level));
            fill_seconds.push((level, took.as_secs_f64()));
            placements.push((level, placement(c.dataplane(), level)));
            filled = level;
            walks.push((level, time_walks(c)));
            for &n in &opts.backends {
                let cfg = config::parse(&config_text(n)).expect("bench config is valid");
                c.apply(&cfg).expect("re-applying the service");
                let (
                    floor,
                    [established, established_hot, new_flow, first_ack, lookup_only, home_read],
                    first_ack_landed,
                    handshake,
                ) = measure_level(c, opts, level, (c0, b0, c0_mac, b0_mac), floor_prog);
                floors.push(floor);
                cells.push(Cell {
                    fill: level,
                    backends: n,
                    established,
                    established_hot,
                    new_flow,
                    first_ack,
                    lookup_only,
                    home_read,
                    first_ack_landed,
                    handshake,
                });
            }
        }
        (median_u64(&floors), cells)
    });
    let reads: Vec<(usize, &str, f64)> = MEMORY_REGIONS
        .iter()
        .map(|&(bytes, label)| (bytes, label, memory::random_read_ns(bytes, 5, 1_000_000)))
        .collect();
    let huge_read = memory::random_read_in(SLOTS_BYTES, Pages::Huge, 5, 1_000_000);
    report(
        opts,
        floor,
        &cells,
        &Levels {
            fill_seconds: &fill_seconds,
            placements: &placements,
            walks: &walks,
        },
        &reads,
        huge_read,
    )
}

/// What each fill level was, beside the cells' timings.
struct Levels<'a> {
    /// Seconds the fill up to each level took.
    fill_seconds: &'a [(usize, f64)],
    /// Where the pre-filled flows live at each level (see [`placement`]).
    placements: &'a [(usize, [f64; 3])],
    /// lbd's walks at each level (see [`time_walks`]).
    walks: &'a [(usize, [f64; 3])],
}

/// The shares of the first `level` pre-filled flows held in their home slot, in a buddy,
/// and in the LRU maps: a lookup reads one line of the table for the first, two for the
/// second (the home's, then the buddy's in the same page) and the LRU hash map's bucket
/// and element besides for the third.
fn placement(dp: &KernelDataplane, level: usize) -> [f64; 3] {
    let mut counts = [0usize; 3];
    for i in 0..level {
        let (src, sport) = filled_client(i);
        let key = tcp_key(src, sport, VIP, 80);
        let class = match dp.flows.slot_of(&key) {
            Some(s) if s == dp.flows.home_of(&key) => 0,
            Some(_) => 1,
            None => {
                assert!(
                    matches!(dp.flows.in_overflow(&key), Ok(Some(_))),
                    "pre-filled flow #{i} is in no slot and not in FLOWS"
                );
                2
            }
        };
        counts[class] += 1;
    }
    counts.map(|n| n as f64 / level.max(1) as f64)
}

/// What `lbd`'s walks of the flow table take at this fill (milliseconds): every 2 s the
/// expiry of idle flows, which finds nothing to expire here (the clock stays at 0), and
/// the active-flow reconciliation; every 20 s the slots' sweep (orphaned reply entries,
/// LRU counts).
fn time_walks(c: &mut Controller<KernelDataplane>) -> [f64; 3] {
    let ids: Vec<u32> = c
        .plan()
        .expect("applied")
        .backends
        .iter()
        .map(|b| b.id)
        .collect();
    let dp = c.dataplane_mut();
    let timeouts = config::FlowTimeouts::default();
    // The first call of a data path also sweeps the slots: that one is timed apart.
    dp.expire_flows(0, &timeouts).expect("the ageing walk");
    let (expire, expired) = timed(|| dp.expire_flows(0, &timeouts));
    assert_eq!(expired.expect("the ageing walk"), 0, "nothing is idle at 0");
    let (sweep, swept) = timed(|| dp.sweep_slots());
    swept.expect("the slots' sweep");
    let (reconcile, fixed) = timed(|| dp.reconcile_active_flows(&ids));
    fixed.expect("the reconciliation walk");
    [expire, sweep, reconcile].map(|t| t.as_secs_f64() * 1e3)
}

fn report(
    opts: &Options,
    floor: u64,
    cells: &[Cell],
    levels: &Levels,
    reads: &[(usize, &str, f64)],
    (huge_read_ns, huge_share): (f64, f64),
) -> Value {
    let Levels {
        fill_seconds,
        placements,
        walks,
    } = levels;
    let mut table = Table::new(
        format!(
            "per-packet cost vs flow-table fill and backends, net median ns \
             ({} rounds x {} calls, floor {floor} ns, median of the cells' floors)",
            opts.rounds, opts.calls
        ),
        &[
            "fill",
            "backends",
            "established",
            "one hot flow",
            "new flow (SYN)",
            "SYN-ACK",
            "first ACK",
            "lookup only",
            "home read",
            "established / home read",
        ],
    );
    for c in cells {
        table.row(vec![
            c.fill.to_string(),
            c.backends.to_string(),
            c.established.to_string(),
            c.established_hot.to_string(),
            c.new_flow.to_string(),
            c.handshake.syn_ack.to_string(),
            c.first_ack.to_string(),
            c.lookup_only.to_string(),
            c.home_read.to_string(),
            if c.home_read == 0 {
                "-".to_string()
            } else {
                fixed(c.established as f64 / c.home_read as f64, 2)
            },
        ]);
    }
    // The target: from the smallest to the largest fill, at the same backend count.
    let (lo, hi) = (opts.fills[0], *opts.fills.last().unwrap());
    let mut growth = Vec::new();
    for &n in &opts.backends {
        let at = |fill: usize| cells.iter().find(|c| c.fill == fill && c.backends == n);
        if let (Some(a), Some(b)) = (at(lo), at(hi)) {
            let g = |x: u64, y: u64| y as f64 / x.max(1) as f64 - 1.0;
            growth.push(json!({
                "backends": n,
                "established_change": g(a.established, b.established),
                "established_hot_change": g(a.established_hot, b.established_hot),
                "new_flow_change": g(a.new_flow, b.new_flow),
                "syn_ack_change": g(a.handshake.syn_ack, b.handshake.syn_ack),
                "first_ack_change": g(a.first_ack, b.first_ack),
                "lookup_only_change": g(a.lookup_only, b.lookup_only),
                "home_read_change": g(a.home_read, b.home_read),
            }));
            table.note(format!(
                "fill {lo} -> {hi} at {n} backends: established {} (one hot flow {}), \
                 new flow {}, SYN-ACK {}, first ACK {}",
                percent(g(a.established, b.established)),
                percent(g(a.established_hot, b.established_hot)),
                percent(g(a.new_flow, b.new_flow)),
                percent(g(a.handshake.syn_ack, b.handshake.syn_ack)),
                percent(g(a.first_ack, b.first_ack))
            ));
        }
    }
    table.note(format!(
        "flow table: {FLOW_TABLE_SIZE} connections (as many slots, LRU maps of a fifth as \
         many entries behind them), ring {RING_SIZE}; established = a random pre-filled \
         flow per call; lookup only = other pre-filled flows' packets through lb_flow_probe \
         (parse and flow-table lookup, nothing else); home read = such packets through \
         lb_slot_read_probe (parse and the home slot's tag, nothing else); the three in \
         alternating blocks of {RANDOM_FLOW_BLOCK} calls"
    ));
    table.note(
        "net: per round, minus the floor measured in the same round of the same cell; \
         every call's action and whole output frame checked",
    );
    table.note(format!(
        "one dependent random read, 4 KiB pages: {}",
        reads
            .iter()
            .map(|(_, label, ns)| format!("{label} {ns:.1} ns"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    table.note(format!(
        "the same read in the slots' {} MiB mapped in 2 MiB pages ({} of it in huge pages, \
         as a BPF map's memory never is): {huge_read_ns:.1} ns",
        SLOTS_BYTES >> 20,
        percent(huge_share)
    ));
    for (level, [home, buddy, lru]) in placements.iter() {
        table.note(format!(
            "the {level} pre-filled flows (the established column's): in their home slot \
             {}, in a buddy {}, in the LRU maps {}",
            percent(*home),
            percent(*buddy),
            percent(*lru)
        ));
    }
    for c in cells {
        table.note(format!(
            "first ACK at {} flows, {} backends: net mean {} ns; by where its \
             connection landed: {}",
            c.fill,
            c.backends,
            c.handshake.means[2],
            LANDED
                .iter()
                .zip(&c.first_ack_landed)
                .map(|(w, l)| format!("{w} {} ({} ns)", percent(l.share), l.net_median))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    for c in cells {
        let [syn, syn_ack, ack] = c.handshake.means;
        table.note(format!(
            "a whole handshake at {} flows, {} backends (the first ACKs' own SYN, SYN-ACK \
             and ACK, net means): {syn} + {syn_ack} + {ack} = {} ns",
            c.fill,
            c.backends,
            syn + syn_ack + ack
        ));
    }
    for (level, secs) in fill_seconds.iter() {
        table.note(format!(
            "filling up to {level} flows (as the data path records them) \
             took {secs:.1} s"
        ));
    }
    for (level, [expire, sweep, reconcile]) in walks.iter() {
        table.note(format!(
            "lbd's walks at {level} flows: expiry {expire:.0} ms and reconciliation \
             {reconcile:.0} ms (every 2 s), the slots' sweep {sweep:.0} ms (every 20 s)"
        ));
    }
    table.print();
    json!({
        "rounds": opts.rounds,
        "calls_per_round": opts.calls,
        "flow_table_size": FLOW_TABLE_SIZE,
        "ring_size": RING_SIZE,
        "floor_median_ns": floor,
        "cells": cells.iter().map(|c| json!({
            "fill": c.fill,
            "backends": c.backends,
            "established_net_median_ns": c.established,
            "established_hot_net_median_ns": c.established_hot,
            "new_flow_net_median_ns": c.new_flow,
            "syn_ack_net_median_ns": c.handshake.syn_ack,
            "handshake_net_means_ns": c.handshake.means,
            "first_ack_net_median_ns": c.first_ack,
            "lookup_only_net_median_ns": c.lookup_only,
            "home_read_net_median_ns": c.home_read,
            "first_ack_net_mean_ns": c.handshake.means[2],
            "first_ack_landed": LANDED.iter().zip(&c.first_ack_landed).map(|(w, l)| json!({
                "where": w,
                "share": l.share,
                "net_median_ns": l.net_median,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "fill_growth": growth,
        "placements": placements.iter().map(|(fill, [home, buddy, lru])| json!({
            "fill": fill,
            "home": home,
            "buddy": buddy,
            "lru": lru,
        })).collect::<Vec<_>>(),
        "walks_ms": walks.iter().map(|(fill, [expire, sweep, reconcile])| json!({
            "fill": fill,
            "expiry": expire,
            "slot_sweep": sweep,
            "reconciliation": reconcile,
        })).collect::<Vec<_>>(),
        "random_read_ns": reads.iter().map(|(bytes, _, ns)| json!({
            "region_bytes": bytes,
            "ns": ns,
        })).collect::<Vec<_>>(),
        "random_read_huge_pages": {
            "region_bytes": SLOTS_BYTES,
            "ns": huge_read_ns,
            "huge_share": huge_share,
        },
    })
}
