//! Per-packet cost of direct server return for an IPv6 service (docs/dsr.md, "IPv6")
//! beside NAT66, measured like [`super::dsr`] (BPF_PROG_TEST_RUN single-run calls beside
//! the pass-everything floor): per mode, an established flow's pure ACK. Every call's
//! output is the first call's, and the first is checked against the exact frame of
//! `crate::dsr_frames6` (NAT66: a valid checksum to the backend's address).
use std::net::Ipv6Addr;

use lb_userspace::{control::tables::Controller, kernel::KernelDataplane};
use serde_json::{json, Value};

use super::{
    dsr::Options,
    stats::{per_call, pin_to_cpu, Stat},
    table::{net_row, Table},
};
use crate::{
    dsr_frames6::{gue6_header, wrapped6},
    frame::{ACK, ETH_LEN},
    frame6::{checksum_valid, Frame6},
    packet_rig::*,
    peer_xdp,
};

/// The rig's `web6` (NAT66, Maglev) and one Maglev IPv6 service per DSR mode.
const CONFIG: &str =
    crate::rig_config_with!(crate::rig_web6_service!(), crate::rig_dsr6_services!());

/// (service, its VIP's last group, its key in the report).
const SERVICES: [(&str, u16, &str); 4] = [
    ("web6", 0x100, "nat66"),
    ("l2v6", 0x120, "dsr_l2"),
    ("ipip6", 0x121, "ipip"),
    ("gue6", 0x122, "gue"),
];

/// The backend `service`'s Maglev table gives `f`.
fn table_backend6(c: &Controller<KernelDataplane>, service: &str, f: &Frame6) -> Ipv6Addr {
    let ring = &planned_service(c, service).ring;
    let h = lb_common::hash::flow_hash6(&f.flow_key(), HASH_SEED);
    let id = ring[(h % ring.len() as u32) as usize];
    let plan = c.plan().expect("a plan was applied");
    let b = plan.backends.iter().find(|b| b.id == id).expect("ring id");
    b.at.address.to_string().parse().expect("an IPv6 backend")
}

/// What `key`'s first output must be, exactly (NAT66 is checked by its checksum).
fn check(key: &str, b0_mac: [u8; 6], backend: Ipv6Addr, sent: &Frame6, out: &[u8]) {
    let bytes = sent.bytes();
    let inner = &bytes[ETH_LEN..];
    let want = match key {
        "nat66" => {
            assert_eq!(
                out[ETH_LEN + 24..ETH_LEN + 40],
                backend.octets(),
                "{sent:?}"
            );
            assert!(checksum_valid(out), "NAT66 checksum: {sent:?}");
            return;
        }
        "dsr_l2" => {
            let mut f = bytes.clone();
            f[0..6].copy_from_slice(&backend_mac(backend.octets()[15]));
            f[6..12].copy_from_slice(&b0_mac);
            f
        }
        "ipip" => wrapped6(b0_mac, backend, 41, &[], inner),
        _ => {
            let udp = gue6_header(&sent.flow_key(), HASH_SEED, 6080, backend, inner);
            wrapped6(b0_mac, backend, 17, &udp[..8], inner)
        }
    };
    assert_eq!(out, want, "{key}: {sent:?}");
}

fn measure(
    c: &mut Controller<KernelDataplane>,
    (c0, b0_mac): (u32, [u8; 6]),
    o: &Options,
) -> Vec<(String, String, Stat)> {
    pin_to_cpu(0);
    c.dataplane_mut().set_clock(1).expect("clock");
    let mut floor_obj = peer_xdp::load_pass_program();
    let floor = peer_xdp::pass_program(&mut floor_obj);
    let (rounds, calls) = (o.rounds, o.calls);
    let lb = c.dataplane().program();
    let syn = |last: u16, sport: u16| Frame6 {
        src_mac: CLIENT_MAC,
        src: CLIENT6,
        dst: Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, last),
        sport,
        ..Frame6::default()
    };
    let floor_stat = per_call(rounds, calls, |_| {
        let r = run_once(floor, c0, &syn(0x100, 40000).bytes());
        assert_eq!(r.action, XDP_PASS);
        r.nanos
    });
    let mut rows = vec![(
        "empty XDP_PASS program (floor)".to_string(),
        "floor".to_string(),
        floor_stat,
    )];
    for (n, (name, last, key)) in SERVICES.iter().enumerate() {
        // Established: the SYN records the flow (untimed), then its pure ACKs.
        let open = syn(*last, 30_000 + n as u16);
        let backend = table_backend6(c, name, &open);
        let first = run_once(lb, c0, &open.bytes());
        assert_eq!(first.action, XDP_REDIRECT, "{name}: SYN");
        let ack = Frame6 {
            flags: ACK,
            seq: open.seq + 1,
            ack: 1,
            ..open.clone()
        };
        let r = run_once(lb, c0, &ack.bytes());
        check(key, b0_mac, backend, &ack, &r.output);
        let want = r.output;
        let ack_bytes = ack.bytes();
        let established = per_call(rounds, calls, |_| {
            let r = run_once(lb, c0, &ack_bytes);
            assert_eq!(r.action, XDP_REDIRECT);
            assert_eq!(r.output, want, "{name}: established ACK");
            r.nanos
        });
        rows.push((
            format!("{key} (IPv6): established pure ACK"),
            format!("{key}_established"),
            established,
        ));
    }
    rows
}

pub fn run(opts: &Options) -> Value {
    let rig = Rig::build();
    let ends = (rig.c0, rig.b0_mac);
    let rows = rig.with_dataplane(CONFIG, |c| measure(c, ends, opts));
    let floor = rows[0].2;
    let mut table = Table::new(
        format!(
            "IPv6 direct server return per packet, BPF_PROG_TEST_RUN, {} rounds x {} \
             single-run calls, pinned to CPU 0",
            opts.rounds, opts.calls
        ),
        &["path", "min ns", "med ns", "net min", "net med"],
    );
    let mut paths = serde_json::Map::new();
    for (name, key, stat) in &rows {
        let net = Stat {
            min: stat.min.saturating_sub(floor.min),
            median: stat.median.saturating_sub(floor.median),
        };
        net_row(&mut table, &mut paths, (name, key), *stat, net);
    }
    table.note("min/med: over rounds, of each round's median call; net: minus the floor");
    table.note(
        "an IPv6 DSR packet: lb_xdp's screen and tail call to lb_v6, its parse and flow \
         lookup, the tail call to lb_dsr6, its parse, the cached route and the header \
         writes (gue: the UDP checksum from the inner header's words)",
    );
    table.print();
    json!({ "rounds": opts.rounds, "calls_per_round": opts.calls, "paths": paths })
}
