//! Per-packet cost at either hook: the same IPv4 TCP NAT paths through `lb_xdp` and
//! through `lb_tc`, on one data path (the rig's NICs in `tc_interfaces`, so both programs
//! share its maps), each hook's rows interleaved round by round with its own empty
//! program (`lb_pass`, `lb_pass_tc`). A tc test run builds an skb for every call, as the
//! kernel has by the time tc ingress runs, and an XDP one does not, so the floors differ
//! and the net columns are what each program adds. Every call's action and whole output
//! frame are checked, the same frame at both hooks. Each hook has its own clients, so
//! neither finds the other's flows.
use std::net::Ipv4Addr;

use aya::programs::{SchedClassifier, Xdp};
use lb_common::limits::PROGRAM_PASS_TC;
use lb_userspace::{control::tables::Controller, kernel::KernelDataplane};
use serde_json::{json, Value};

use super::{
    stats::{interleaved, median_u64, pin_to_cpu, Net, Round, Stat},
    table::Table,
};
use crate::{frame::Frame, packet_rig::*, peer_xdp};

pub struct Options {
    pub rounds: usize,
    pub calls: usize,
}

/// As the per-packet part's rig: a table as a large deployment would size it.
const FLOW_TABLE_SIZE: u32 = 1 << 20;
/// Client ports of the established rows: one connection per hook.
const ESTABLISHED_PORT: [u16; 2] = [33333, 33433];

/// The rows, in order: name and JSON key.
const ROWS: [(&str, &str); 5] = [
    ("established flow, pure ACK, to backend", "established"),
    (
        "established flow, data segment, to backend",
        "established_data",
    ),
    ("return path, to client", "return_path"),
    (
        "SYN to VIP, new flow (Maglev, no flow recorded)",
        "new_flow_maglev",
    ),
    ("first ACK, records the flow (Maglev)", "first_ack_maglev"),
];

#[derive(Clone, Copy)]
enum Hook {
    Xdp,
    Tc,
}

impl Hook {
    fn index(self) -> usize {
        match self {
            Hook::Xdp => 0,
            Hook::Tc => 1,
        }
    }

    /// The verdict of the hook's empty program.
    fn pass(self) -> u32 {
        match self {
            Hook::Xdp => XDP_PASS,
            Hook::Tc => TC_ACT_OK,
        }
    }

    fn redirect(self) -> u32 {
        match self {
            Hook::Xdp => XDP_REDIRECT,
            Hook::Tc => TC_ACT_REDIRECT,
        }
    }
}

/// The data path's two programs and the two floors.
struct Programs<'a> {
    xdp: &'a Xdp,
    tc: &'a SchedClassifier,
    xdp_floor: &'a Xdp,
    tc_floor: &'a SchedClassifier,
}

impl Programs<'_> {
    fn run(&self, hook: Hook, ifindex: u32, frame: &[u8]) -> RunResult {
        match hook {
            Hook::Xdp => run_once(self.xdp, ifindex, frame),
            Hook::Tc => run_tc_once(self.tc, ifindex, frame),
        }
    }

    fn floor(&self, hook: Hook, ifindex: u32, frame: &[u8]) -> RunResult {
        match hook {
            Hook::Xdp => run_once(self.xdp_floor, ifindex, frame),
            Hook::Tc => run_tc_once(self.tc_floor, ifindex, frame),
        }
    }
}

/// The `i`-th never-seen client of `hook`'s row `row`: a new port every call, a new
/// address every 50,000, in 10.(20 + 2 x hook + row).0.0/16.
fn new_client(hook: Hook, row: u8, i: usize, nics: Nics) -> Frame {
    let net = Ipv4Addr::new(10, 20 + 2 * hook.index() as u8 + row, 0, 2);
    Frame {
        src: Ipv4Addr::from(u32::from(net) + (i / 50_000) as u32 * 256),
        dst_mac: nics.c0_mac,
        ..client_syn(1024 + (i % 50_000) as u16)
    }
}

/// A round of `n` calls of `one`, each given a number never given before (so that every
/// call of every round can use a tuple of its own); the round's median.
fn fresh_calls<'a>(n: usize, mut one: impl FnMut(usize) -> u64 + 'a) -> Round<'a> {
    let mut next = 0;
    Box::new(move |_| {
        let mut times = Vec::with_capacity(n);
        for _ in 0..n {
            times.push(one(next));
            next += 1;
        }
        median_u64(&times)
    })
}

/// The same frame run again and again at `hook`, each call's action and output checked.
fn repeated<'a>(
    p: &'a Programs<'a>,
    hook: Hook,
    n: usize,
    (ifindex, frame): (u32, Vec<u8>),
    expected: Vec<u8>,
    what: &'static str,
) -> Round<'a> {
    fresh_calls(n, move |i| {
        let r = p.run(hook, ifindex, &frame);
        expect_run(
            &r,
            hook.redirect(),
            &expected,
            &format_args!("{what}, call #{i}"),
        );
        r.nanos
    })
}

/// `hook`'s rows ([`ROWS`]), after opening its established connection (untimed).
fn rows<'a>(
    c: &'a Controller<KernelDataplane>,
    p: &'a Programs<'a>,
    hook: Hook,
    nics: Nics,
    n: usize,
) -> Vec<Round<'a>> {
    let Nics {
        c0,
        b0,
        c0_mac,
        b0_mac,
    } = nics;
    let redirect = hook.redirect();
    let sport = ESTABLISHED_PORT[hook.index()];
    let syn = Frame {
        dst_mac: c0_mac,
        ..client_syn(sport)
    };
    let backend = table_backend(c, "web", sport);
    let to_web = (backend, 8080);
    assert_eq!(p.run(hook, c0, &syn.bytes()).action, redirect, "SYN");
    let syn_ack = Frame {
        dst_mac: b0_mac,
        ..syn_ack_of(&syn, backend)
    };
    assert_eq!(
        p.run(hook, b0, &syn_ack.bytes()).action,
        redirect,
        "SYN-ACK"
    );
    let ack = ack_of(&syn);
    assert_eq!(p.run(hook, c0, &ack.bytes()).action, redirect, "ACK");
    assert!(
        c.dataplane().flows.get(&syn.flow_key(), 0).is_ok(),
        "the established rows' flow is recorded"
    );
    let data = Frame {
        flags: 0x18,
        payload: vec![0x61; 100],
        ..ack.clone()
    };
    let reply = Frame {
        flags: 0x10,
        seq: BACKEND_ISN + 1,
        ack: ack.seq,
        ..syn_ack.clone()
    };
    let web = TablePick::new(c, "web");
    let new_flow = fresh_calls(n, {
        let web = web.clone();
        move |i| {
            let frame = new_client(hook, 0, i, nics);
            let r = p.run(hook, c0, &frame.bytes());
            let expected = as_to_backend(&frame, web.pick(&frame.flow_key()), b0_mac).bytes();
            expect_run(&r, redirect, &expected, &format_args!("new flow #{i}"));
            r.nanos
        }
    });
    let first_ack = fresh_calls(n, move |i| {
        let run = |ifindex, frame: &[u8]| p.run(hook, ifindex, frame);
        let client = new_client(hook, 1, i, nics);
        let what = format_args!("first ACK #{i}");
        first_ack((c.dataplane(), run), nics, &client, (redirect, &web), &what).nanos
    });
    vec![
        repeated(
            p,
            hook,
            n,
            (c0, ack.bytes()),
            as_to_backend(&ack, to_web, b0_mac).bytes(),
            "established",
        ),
        repeated(
            p,
            hook,
            n,
            (c0, data.bytes()),
            as_to_backend(&data, to_web, b0_mac).bytes(),
            "established, data",
        ),
        repeated(
            p,
            hook,
            n,
            (b0, reply.bytes()),
            as_from_vip(&reply, c0_mac).bytes(),
            "return path",
        ),
        new_flow,
        first_ack,
    ]
}

/// `hook`'s floor and rows, interleaved round by round.
fn measure(
    c: &Controller<KernelDataplane>,
    p: &Programs,
    hook: Hook,
    nics: Nics,
    (rounds, n): (usize, usize),
) -> (Stat, Vec<Net>) {
    let frame = Frame {
        dst_mac: nics.c0_mac,
        ..client_syn(40000)
    }
    .bytes();
    let floor = fresh_calls(n, |i| {
        let r = p.floor(hook, nics.c0, &frame);
        expect_run(&r, hook.pass(), &frame, &format_args!("floor #{i}"));
        r.nanos
    });
    interleaved(rounds, floor, rows(c, p, hook, nics, n))
}

pub fn run(opts: &Options) -> Value {
    let rig = Rig::build();
    let config = CONFIG.replace(
        "flow_table_size: 4096",
        &format!("flow_table_size: {FLOW_TABLE_SIZE}"),
    );
    assert_ne!(config, CONFIG, "the rig's limits line changed");
    let nics = rig.nics();
    let (rounds, n) = (opts.rounds, opts.calls);
    let [(xdp_floor, xdp), (tc_floor, tc)] = rig.with_dataplane_at_tc(&config, |c| {
        pin_to_cpu(0);
        let mut floor_obj = peer_xdp::load_object_small();
        peer_xdp::pass_program(&mut floor_obj)
            .load()
            .expect("loading lb_pass");
        let tc_floor: &mut SchedClassifier = floor_obj
            .program_mut(PROGRAM_PASS_TC)
            .expect("lb_pass_tc is in the object")
            .try_into()
            .expect("lb_pass_tc is a tc program");
        tc_floor.load().expect("loading lb_pass_tc");
        let floors = |name: &str| floor_obj.program(name).expect("loaded above");
        let p = Programs {
            xdp: c.dataplane().program(),
            tc: c.dataplane().tc_program(),
            xdp_floor: floors(lb_common::limits::PROGRAM_PASS)
                .try_into()
                .expect("lb_pass is an XDP program"),
            tc_floor: floors(PROGRAM_PASS_TC)
                .try_into()
                .expect("lb_pass_tc is a tc program"),
        };
        [Hook::Xdp, Hook::Tc].map(|hook| measure(c, &p, hook, nics, (rounds, n)))
    });
    let mut table = Table::new(
        format!(
            "per-packet cost at either hook, BPF_PROG_TEST_RUN, {rounds} rounds x {n} \
             single-run calls, pinned to CPU 0"
        ),
        &[
            "path",
            "XDP med ns",
            "XDP net med",
            "tc med ns",
            "tc net med",
        ],
    );
    table.row(vec![
        "empty program (floor: lb_pass, lb_pass_tc)".to_string(),
        xdp_floor.median.to_string(),
        "0".to_string(),
        tc_floor.median.to_string(),
        "0".to_string(),
    ]);
    let mut paths = serde_json::Map::new();
    for (((name, key), x), t) in ROWS.iter().zip(&xdp).zip(&tc) {
        table.row(vec![
            name.to_string(),
            x.gross.median.to_string(),
            x.net.median.to_string(),
            t.gross.median.to_string(),
            t.net.median.to_string(),
        ]);
        paths.insert(
            key.to_string(),
            json!({
                "name": name,
                "xdp_median_ns": x.gross.median,
                "xdp_net_median_ns": x.net.median,
                "tc_median_ns": t.gross.median,
                "tc_net_median_ns": t.net.median,
            }),
        );
    }
    table.note(
        "net: per round, minus the same hook's empty program in the same round, median over \
         rounds; every call's action and whole output frame checked, the same frame at both \
         hooks",
    );
    table.note(format!(
        "flow table {FLOW_TABLE_SIZE} entries; a tc test run's skb has no checksum offload \
         state, as from a NIC without offloads"
    ));
    table.print();
    json!({
        "rounds": rounds,
        "calls_per_round": n,
        "floor_xdp_median_ns": xdp_floor.median,
        "floor_tc_median_ns": tc_floor.median,
        "paths": paths,
    })
}
