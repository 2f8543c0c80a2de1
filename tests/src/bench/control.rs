//! Control-plane costs:
//!
//! - Maglev table build time (`lb_userspace::model::maglev::build`, the function `lbd` uses)
//!   for 10 / 1,000 / 10,000 equally weighted backends at 65537 slots and at a larger
//!   prime ring;
//! - change-to-live: the time `Controller::apply` takes from a new config with one
//!   backend's weight changed to the new table being live in the kernel (plan and
//!   Maglev build, the differing entries written into the idle ring slot, then the
//!   service flipped), through the real `KernelDataplane` in the packet rig's
//!   namespace. After each change a SYN of a flow whose ring slot moved is run through
//!   the program, and it must reach the backend of the new table, so "live" is checked,
//!   not assumed.
//!
//! Health probes per second are measured by [`super::probes`].
use std::{net::Ipv4Addr, time::Instant};

use lb_common::hash::flow_hash;
use lb_userspace::{
    control::tables::Controller,
    kernel::KernelDataplane,
    model::config,
    model::maglev::{self, MaglevBackend},
};
use serde_json::{json, Value};

use super::{
    stats::{median_f64, timed},
    table::{fixed, Table},
};
use crate::{
    frame::{dst_ip, dst_port, Frame},
    packet_rig::{run_once, Rig, CLIENT_MAC, VIP},
};

pub struct Options {
    pub backends: Vec<usize>,
    pub rings: Vec<u32>,
    /// Weight changes timed per (backends, ring) pair.
    pub changes: usize,
}

const HASH_SEED: u32 = 42;
/// Build repetitions stop at this many, or after a second once three are done.
const MAX_BUILD_REPS: usize = 7;

pub fn run(opts: &Options) -> Value {
    let build = build_times(opts);
    let live = change_to_live(opts);
    json!({
        "maglev_build": build,
        "change_to_live": live,
    })
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn build_times(opts: &Options) -> Vec<Value> {
    let mut table = Table::new(
        "Maglev table build (lb_userspace::model::maglev::build), equal weights",
        &["backends", "ring", "min ms", "median ms", "builds"],
    );
    let mut out = Vec::new();
    for &n in &opts.backends {
        let backends: Vec<MaglevBackend> = (0..n)
            .map(|i| MaglevBackend {
                identity: format!(
                    "10.{}.{}.{}:8080",
                    1 + i / 62_500,
                    i / 250 % 250,
                    i % 250 + 1
                ),
                weight: 1,
                id: i as u32,
            })
            .collect();
        for &ring in &opts.rings {
            let started = Instant::now();
            let mut times = Vec::new();
            while times.len() < MAX_BUILD_REPS
                && (times.len() < 3 || started.elapsed().as_secs_f64() < 1.0)
            {
                let (took, table) = timed(|| maglev::build(&backends, ring));
                assert_eq!(table.len(), ring as usize);
                times.push(ms(took));
            }
            let min = times.iter().copied().fold(f64::INFINITY, f64::min);
            let median = median_f64(&times);
            table.row(vec![
                n.to_string(),
                ring.to_string(),
                fixed(min, 2),
                fixed(median, 2),
                times.len().to_string(),
            ]);
            out.push(json!({
                "backends": n, "ring_size": ring, "min_ms": min, "median_ms": median,
                "builds": times.len(),
            }));
        }
    }
    table.print();
    out
}

fn backend_addr(id: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 1, 0, 11 + (id % 3) as u8)
}

fn backend_port(id: usize) -> u16 {
    10_000 + id as u16
}

/// The rig's interfaces and one service with `n` backends; the first `heavier` of the
/// backends in `order` have weight 2, the rest 1.
fn config_text(n: usize, ring: u32, order: &[usize], heavier: usize) -> String {
    let mut yaml = format!(
        "node: {{ zone: az-a }}\ninterfaces: [c0, b0]\n\
         cluster: {{ ring_size: {ring}, hash_seed: {HASH_SEED} }}\n\
         limits: {{ flow_table_size: 65536, max_services: 1, max_backends: 16384 }}\n\
         services:\n  - name: web\n    vip: {VIP}\n    port: 80\n    backends:\n"
    );
    let heavy: std::collections::BTreeSet<usize> = order[..heavier].iter().copied().collect();
    for id in 0..n {
        yaml.push_str(&format!(
            "      - {{ address: {}, port: {}, zone: az-a, weight: {} }}\n",
            backend_addr(id),
            backend_port(id),
            if heavy.contains(&id) { 2 } else { 1 }
        ));
    }
    yaml
}

/// A client tuple whose ring slot holds a different backend in `after` than in
/// `before`, with the backend id it must now reach; `None` if no slot moved.
fn moved_flow(before: &[u32], after: &[u32], change: usize) -> Option<(Ipv4Addr, u16, u32)> {
    let src = Ipv4Addr::new(192, 168, (change / 250) as u8, (change % 250) as u8 + 1);
    (1024..=u16::MAX).find_map(|sport| {
        let key = lb_common::flow::FlowKey {
            src_addr: lb_common::net::ipv4_wire(src.octets()),
            dst_addr: lb_common::net::ipv4_wire(VIP.octets()),
            src_port: lb_common::net::port_wire(sport),
            dst_port: lb_common::net::port_wire(80),
            proto: lb_common::net::PROTO_TCP,
            family: lb_common::net::FAMILY_IPV4,
            _pad: [0; 2],
        };
        let slot = (flow_hash(&key, HASH_SEED) % before.len() as u32) as usize;
        (before[slot] != after[slot]).then_some((src, sport, after[slot]))
    })
}

struct Change {
    ms: f64,
    entries: usize,
    verified: bool,
}

fn timed_changes(
    c: &mut Controller<KernelDataplane>,
    n: usize,
    ring: u32,
    opts: &Options,
    c0: u32,
) -> Vec<Change> {
    // Backends whose weight goes 1 -> 2, one more per change, spread over the list.
    let order: Vec<usize> = (0..opts.changes).map(|k| (k * 7919 + 3) % n).collect();
    let mut changes = Vec::new();
    for k in 1..=opts.changes.min(n) {
        let cfg = config::parse(&config_text(n, ring, &order, k)).expect("bench config is valid");
        let before = c.plan().expect("applied").services[0].ring.clone();
        let (took, summary) = timed(|| c.apply(&cfg).expect("applying a weight change"));
        let after = &c.plan().expect("applied").services[0].ring;
        let verified = match moved_flow(&before, after, k) {
            Some((src, sport, id)) => {
                let frame = Frame {
                    src_mac: CLIENT_MAC,
                    src,
                    sport,
                    ..Frame::default()
                }
                .bytes();
                let r = run_once(c.dataplane().program(), c0, &frame);
                assert_eq!(
                    (dst_ip(&r.output), dst_port(&r.output)),
                    (backend_addr(id as usize), backend_port(id as usize)),
                    "after change {k} a moved flow must reach the new table's backend"
                );
                true
            }
            None => false,
        };
        changes.push(Change {
            ms: ms(took),
            entries: summary.ring_entries_written,
            verified,
        });
    }
    changes
}

fn change_to_live(opts: &Options) -> Vec<Value> {
    let rig = Rig::build();
    let c0 = rig.c0;
    let mut table = Table::new(
        "change-to-live: one more backend's weight 1 -> 2, Controller::apply on the real maps",
        &[
            "backends",
            "ring",
            "first ms",
            "entries",
            "later med ms",
            "later max ms",
            "entries med",
        ],
    );
    let mut out = Vec::new();
    for &n in &opts.backends {
        for &ring in &opts.rings {
            let initial = config_text(n, ring, &[], 0);
            let changes = rig.with_dataplane(&initial, |c| timed_changes(c, n, ring, opts, c0));
            let (first, later) = changes.split_first().expect("at least one change");
            let later_ms: Vec<f64> = later.iter().map(|c| c.ms).collect();
            let later_entries: Vec<u64> = later.iter().map(|c| c.entries as u64).collect();
            let later_median = median_f64(&later_ms);
            let later_max = later_ms.iter().copied().fold(f64::NAN, f64::max);
            let entries_median = super::stats::median_u64(&later_entries);
            let verified = changes.iter().filter(|c| c.verified).count();
            table.row(vec![
                n.to_string(),
                ring.to_string(),
                fixed(first.ms, 2),
                first.entries.to_string(),
                fixed(later_median, 2),
                fixed(later_max, 2),
                entries_median.to_string(),
            ]);
            out.push(json!({
                "backends": n, "ring_size": ring,
                "first_change_ms": first.ms, "first_change_entries_written": first.entries,
                "later_changes": later.len(), "later_median_ms": later_median,
                "later_max_ms": later_max, "later_median_entries_written": entries_median,
                "changes_verified_live": verified,
            }));
        }
    }
    table.note(
        "first: the idle slot was never written, so the whole ring is written before the flip",
    );
    table.note("later: the idle slot holds the table of two changes ago; only differing entries are written");
    table.note("each time includes the plan and Maglev build of the service, one map syscall per entry, and the flip");
    table.note("after each change a flow whose slot moved was run through the program and reached the new backend");
    table.print();
    out
}
