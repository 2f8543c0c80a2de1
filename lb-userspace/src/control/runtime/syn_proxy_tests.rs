//! `syn_proxy: auto` through the runtime and the fake data path: the service's flags in
//! the services map follow the SYN rate the runtime reads, with the hold.
use std::time::{Duration, Instant};

use lb_common::{
    counters::BackendSignals,
    service::{SERVICE_F_EDGE, SERVICE_F_SYN_PROXY},
};

use super::*;
use crate::{dataplane::FakeDataplane, model::config};

const RING: u32 = 1009;

fn auto_runtime(now: Instant) -> Runtime<FakeDataplane> {
    let config = config::parse(&format!(
        "node: {{ zone: az-a }}\ninterfaces: [eth0]\ncluster: {{ ring_size: {RING}, hash_seed: 7 }}\n\
         services:\n  - name: web\n    vip: 10.0.0.100\n    port: 80\n    \
         syn_proxy: auto\n    syn_proxy_auto: {{ on_above: 100, off_below: 10, hold: 5s }}\n    \
         backends: [{{ address: 10.1.0.11, port: 8080, zone: az-a }}]\n"
    ))
    .unwrap();
    let controller = Controller::new(FakeDataplane::new(RING, 7), RING);
    Runtime::start(config, controller, now).unwrap().0
}

/// The flags of `web` in the fake's services map.
fn flags(rt: &Runtime<FakeDataplane>) -> u32 {
    let meta = rt
        .controller()
        .dataplane()
        .services
        .values()
        .next()
        .copied();
    meta.expect("web is in the services map").flags
}

/// Sets the SYNs backend 10.1.0.11 got and the proxy answered, as the data path counts.
fn syns(rt: &mut Runtime<FakeDataplane>, to_backend: u64, proxied: u64) {
    let plan = rt.controller().plan().unwrap();
    let (service, backend) = (plan.services[0].id, plan.backends[0].id);
    let dp = rt.controller_mut().dataplane_mut();
    dp.signals.insert(
        backend,
        BackendSignals {
            syns: to_backend,
            ..Default::default()
        },
    );
    dp.counters.syn_proxy_syns.insert(service, proxied);
}

#[test]
fn an_auto_syn_proxy_follows_the_syn_rate_with_its_hold() {
    let t0 = Instant::now();
    let at = |s: u64| t0 + Duration::from_secs(s);
    let mut rt = auto_runtime(t0);
    let proxy = SERVICE_F_SYN_PROXY | SERVICE_F_EDGE;
    assert_eq!(flags(&rt) & proxy, 0, "off until the rate says otherwise");
    rt.tick(at(0)).unwrap();
    syns(&mut rt, 50, 0);
    rt.tick(at(1)).unwrap();
    assert_eq!(flags(&rt) & proxy, 0, "50 SYNs/s is under on_above");
    syns(&mut rt, 5050, 0);
    rt.tick(at(2)).unwrap();
    assert_eq!(flags(&rt) & proxy, proxy, "5000 SYNs/s switched it on");
    assert_eq!(rt.syn_proxy_switches()["web"].switches, 1);
    // The flood goes on, now answered by the proxy: it stays on.
    syns(&mut rt, 5050, 5000);
    rt.tick(at(3)).unwrap();
    assert_eq!(flags(&rt) & proxy, proxy);
    // Quiet from second 3: off once 5 s have passed, not before.
    for s in 4..=7 {
        rt.tick(at(s)).unwrap();
        assert_eq!(flags(&rt) & proxy, proxy, "second {s}");
    }
    rt.tick(at(8)).unwrap();
    assert_eq!(flags(&rt) & proxy, 0, "off after 5 s under off_below");
    assert_eq!(rt.syn_proxy_switches()["web"].switches, 2);
}
