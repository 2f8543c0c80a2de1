//! The loop's timer work driven against the in-memory data path.
use std::{collections::BTreeMap, time::Instant};

use lb_common::{
    flow::{FlowKey, FLOW_F_ESTABLISHED},
    net::FAMILY_IPV4,
};

use super::*;
use crate::{
    dataplane::{FakeDataplane, Lookups},
    model::config,
    ops::shared::SharedRuntime,
};

const RING: u32 = 1009;

fn runtime() -> Runtime<FakeDataplane> {
    let c = config::parse(&format!(
        "node: {{ zone: az-a }}\ninterfaces: [eth0]\ncluster: {{ ring_size: {RING} }}\n\
         services:\n  - name: web\n    vip: 10.0.0.100\n    port: 80\n    backends: \
         [{{ address: 10.1.0.1, port: 8080, zone: az-a }}, {{ address: 10.1.0.2, port: 8080, zone: az-a }}, {{ address: 10.1.0.3, port: 8080, zone: az-a }}]\n"
    ))
    .unwrap();
    let controller = Controller::new(FakeDataplane::new(RING, 7), RING);
    Runtime::start(c, controller, Instant::now()).unwrap().0
}

fn flow(port: u16) -> FlowKey {
    FlowKey {
        src_addr: u32::from_ne_bytes([10, 10, 0, 2]),
        dst_addr: u32::from_ne_bytes([10, 0, 0, 100]),
        src_port: port.to_be(),
        dst_port: 80u16.to_be(),
        proto: 6,
        family: FAMILY_IPV4,
        _pad: [0; 2],
    }
}

#[test]
fn the_route_timer_advances_the_flow_clock_and_expires_cached_routes() {
    let mut rt = runtime();
    on_routes_tick(&mut rt, 5_000).unwrap();
    on_routes_tick(&mut rt, 5_001).unwrap();
    let dp = rt.controller().dataplane();
    assert_eq!(dp.clock().unwrap(), 5_001);
    assert_eq!(dp.nexthop_generation, 2);
}

#[test]
fn the_reconcile_timer_expires_idle_flows_then_corrects_active_counts() {
    let mut rt = runtime();
    let now = 10_000;
    let established = rt.config().flow_timeouts.established.as_secs() as u32;
    let service = *rt.controller().plan().unwrap().services[0]
        .key
        .v4()
        .unwrap();
    let ids: Vec<u32> = rt
        .controller()
        .plan()
        .unwrap()
        .backends
        .iter()
        .map(|b| b.id)
        .collect();
    let dp = rt.controller_mut().dataplane_mut();
    // Ten established flows: the even ones seen exactly one timeout ago (kept), the odd
    // ones a second longer (expired).
    let mut landed = BTreeMap::new();
    for port in 0..10u16 {
        let id = dp.packet(&service, &flow(1000 + port), true).unwrap();
        let target = dp.flows.get_mut(&flow(1000 + port)).unwrap();
        target.state |= FLOW_F_ESTABLISHED;
        target.last_seen = now - established - u32::from(port % 2);
        landed.insert(port, id);
    }
    assert_eq!(dp.return_flows.len(), 10);
    // The data path counted every flow it opened, and one more per backend that ended
    // unseen.
    for id in &ids {
        let opened = landed.values().filter(|b| *b == id).count() as u64;
        dp.active.insert(*id, opened + 1);
    }

    on_reconcile_tick(&mut rt, now);

    let dp = rt.controller().dataplane();
    let kept: Vec<FlowKey> = (0..10u16)
        .filter(|p| p % 2 == 0)
        .map(|p| flow(1000 + p))
        .collect();
    let mut left: Vec<FlowKey> = dp.flows.keys().copied().collect();
    left.sort_by_key(|k| u16::from_be(k.src_port));
    assert_eq!(left, kept);
    assert_eq!(dp.return_flows.len(), 5, "both directions expired");
    for id in &ids {
        let open = landed
            .iter()
            .filter(|(port, b)| *port % 2 == 0 && *b == id)
            .count() as u64;
        assert_eq!(dp.active_flows_of(*id).unwrap(), open, "backend {id}");
    }

    // A second pass finds nothing more to do.
    let before = (dp.flows.len(), dp.active_adjust.clone());
    on_reconcile_tick(&mut rt, now);
    let dp = rt.controller().dataplane();
    assert_eq!((dp.flows.len(), dp.active_adjust.clone()), before);
}

#[test]
fn the_link_check_reports_a_lost_nic_and_readiness_follows_the_attached_ones() {
    let shared = std::sync::Arc::new(SharedRuntime::new(runtime()));
    let metrics = Metrics::new(shared.clone());
    shared.with(|rt| {
        let dp = rt.controller_mut().dataplane_mut();
        dp.interfaces = vec![("eth0".to_string(), false), ("eth1".to_string(), true)];
        dp.link_changes = vec![LinkChange::Lost {
            interface: "eth0".to_string(),
            ifindex: 7,
        }];
    });
    shared.set_ready(true);

    check_links(&shared, &metrics);

    assert!(!shared.is_ready(), "eth0 is not attached");
    let text = metrics.encode().unwrap();
    for line in [
        "lb_interface_attached{interface=\"eth0\"} 0\n",
        "lb_interface_attached{interface=\"eth1\"} 1\n",
        "lb_interface_events_total{interface=\"eth0\",event=\"lost\"} 1\n",
    ] {
        assert!(text.contains(line), "{line} in:\n{text}");
    }

    // eth0 back: ready again, and the event counted.
    shared.with(|rt| {
        let dp = rt.controller_mut().dataplane_mut();
        dp.interfaces[0].1 = true;
        dp.link_changes = vec![LinkChange::Attached {
            interface: "eth0".to_string(),
            ifindex: 9,
        }];
    });
    check_links(&shared, &metrics);
    assert!(shared.is_ready());
    let text = metrics.encode().unwrap();
    assert!(
        text.contains("lb_interface_events_total{interface=\"eth0\",event=\"attached\"} 1\n"),
        "{text}"
    );
}
