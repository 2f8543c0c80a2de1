//! The service index (see `lb_common::service_index`) as the real XDP program reads it: a
//! full index finds every service and no other, removal and re-adding through the
//! controller take effect at once, and the controller reads back what it published.
//! Real object, BPF_PROG_TEST_RUN (see `lb_tests::packet_rig`).
use std::net::Ipv4Addr;

use lb_tests::{
    frame::{dst_ip, dst_port, Frame},
    packet_rig::*,
};
use lb_userspace::{control::tables::Controller, kernel::KernelDataplane, model::config};

const SERVICES: u32 = 64;

fn vip(i: u32) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 1, i as u8)
}

/// `SERVICES` services on 10.0.1.0/24 port 80 (every `keep`-th one only), each with one
/// backend on its own port.
fn config_text(keep: impl Fn(u32) -> bool) -> String {
    let mut yaml = format!(
        "node: {{ zone: az-a }}\ninterfaces: [c0, b0]\n\
         limits: {{ flow_table_size: 4096, max_services: {SERVICES}, max_backends: 128 }}\n\
         services:\n"
    );
    for i in (0..SERVICES).filter(|i| keep(*i)) {
        yaml.push_str(&format!(
            "  - {{ name: s{i}, vip: {}, port: 80, backends: [{{ address: 10.1.0.11, port: {}, zone: az-a }}] }}\n",
            vip(i),
            10_000 + i
        ));
    }
    yaml
}

/// Where a SYN to service `i` goes: its backend's port, or `None` if passed untouched.
fn syn_to(c: &Controller<KernelDataplane>, c0: u32, i: u32) -> Option<u16> {
    let syn = Frame {
        dst: vip(i),
        ..client_syn(40_000 + i as u16)
    };
    let r = run_once(c.dataplane().program(), c0, &syn.bytes());
    match r.action {
        XDP_REDIRECT => {
            assert_eq!(dst_ip(&r.output), Ipv4Addr::new(10, 1, 0, 11));
            Some(dst_port(&r.output))
        }
        XDP_PASS => {
            assert_eq!(r.output, syn.bytes(), "passed untouched");
            None
        }
        other => panic!("service {i}: action {other}"),
    }
}

#[test]
fn a_full_index_finds_every_service_and_follows_removals_and_additions() {
    let rig = Rig::build();
    let c0 = rig.c0;
    let all = config_text(|_| true);
    rig.with_dataplane(&all, |c| {
        for i in 0..SERVICES {
            assert_eq!(syn_to(c, c0, i), Some(10_000 + i as u16), "service {i}");
        }
        assert_eq!(
            c.dataplane().live_state().unwrap().services.len(),
            SERVICES as usize
        );
        // Not a service: an address in the same /24, and a service's VIP on another port.
        assert_eq!(syn_to(c, c0, 200), None);
        let other_port = Frame {
            dst: vip(3),
            dport: 81,
            ..client_syn(41_000)
        };
        assert_eq!(
            run_once(c.dataplane().program(), c0, &other_port.bytes()).action,
            XDP_PASS
        );

        let odd = config::parse(&config_text(|i| i % 2 == 1)).unwrap();
        c.apply(&odd).unwrap();
        for i in 0..SERVICES {
            let want = (i % 2 == 1).then_some(10_000 + i as u16);
            assert_eq!(
                syn_to(c, c0, i),
                want,
                "service {i} after removing the even ones"
            );
        }
        let live = c.dataplane().live_state().unwrap().services;
        assert_eq!(live.len(), SERVICES as usize / 2);

        // Back again: removed slots and empty ones are both reused.
        c.apply(&config::parse(&all).unwrap()).unwrap();
        for i in 0..SERVICES {
            assert_eq!(
                syn_to(c, c0, i),
                Some(10_000 + i as u16),
                "service {i} re-added"
            );
        }
    });
}
