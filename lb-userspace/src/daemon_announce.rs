//! The loop's announce step: after every tick, each VIP's /32 on `lo` is made to follow
//! whether the VIP can be served (see `crate::control::announce`), with a log line and
//! a metric for every change.
use std::{collections::BTreeSet, net::IpAddr, time::Instant};

use log::{error, info, warn};

use crate::{
    control::announce::{readiness, Announcements, Event},
    dataplane::VipAddresses,
    model::announce::Readiness,
    ops::{metrics::Metrics, node_view::VipView, shared::DataPath, shared::SharedRuntime},
};

/// One step at `now`; `lb_vip_announced` is published when something changed.
pub(super) fn step<D: DataPath, V: VipAddresses>(
    shared: &SharedRuntime<D>,
    announcements: &mut Announcements<V>,
    metrics: &Metrics,
    now: Instant,
) {
    let attached = shared.is_ready();
    let events = shared.with(|rt| announcements.step(rt.config(), rt.fleet(), attached, now));
    report(shared, announcements, metrics, &events);
}

/// Every second: `lo` put back in line with the decisions (see
/// [`Announcements::resync`]).
pub(super) fn resync<D: DataPath, V: VipAddresses>(
    shared: &SharedRuntime<D>,
    announcements: &mut Announcements<V>,
    metrics: &Metrics,
) {
    let config = shared.with(|rt| rt.config().announce.clone());
    let events = announcements.resync(&config);
    report(shared, announcements, metrics, &events);
}

fn report<D: DataPath, V: VipAddresses>(
    shared: &SharedRuntime<D>,
    announcements: &Announcements<V>,
    metrics: &Metrics,
    events: &[Event],
) {
    if events.is_empty() {
        return;
    }
    for event in events {
        match event {
            Event::Announced {
                vip,
                services,
                serving_for,
            } => {
                if services.is_empty() {
                    warn!("announced VIP {vip} on lo again: its /32 was removed by someone else");
                } else {
                    info!(
                        "announced VIP {vip} on lo (services {}): it can serve, since {} ms",
                        services.join(", "),
                        serving_for.as_millis()
                    );
                }
                metrics.count_vip_change(vip, "announce");
            }
            Event::Withdrawn { vip, services, why } => {
                warn!(
                    "withdrew VIP {vip} from lo (services {}): {why}",
                    services.join(", ")
                );
                metrics.count_vip_change(vip, "withdraw");
            }
            Event::Failed {
                vip,
                announce,
                error,
                first,
            } => {
                let (doing, change) = if *announce {
                    ("announcing", "announce_failed")
                } else {
                    ("withdrawing", "withdraw_failed")
                };
                if *first {
                    error!("{doing} VIP {vip}: {error:#}; retrying at every tick");
                }
                metrics.count_vip_change(vip, change);
            }
            Event::RenewFailed { vip, error, first } => {
                if *first {
                    error!(
                        "renewing the lifetime of VIP {vip}: {error:#}; retrying every second \
                         (the kernel removes the /32 when it lapses)"
                    );
                }
                metrics.count_vip_change(vip, "renew_failed");
            }
            Event::ListFailed { error, first } => {
                if *first {
                    error!("listing the VIPs on lo: {error:#}; retrying every second");
                }
                metrics.count_vip_change(&"", "list_failed");
            }
        }
    }
    publish(shared, announcements, metrics);
}

/// Sets `lb_vip_announced` of every service and `lb_node_drained`, and publishes each
/// VIP's state for `GET /v1/node` (with `lo` listed, so a drain can see it gone).
pub(super) fn publish<D: DataPath, V: VipAddresses>(
    shared: &SharedRuntime<D>,
    announcements: &Announcements<V>,
    metrics: &Metrics,
) {
    let attached = shared.is_ready();
    let (services, ready, drained) = shared.with(|rt| {
        let config = rt.config();
        let services: Vec<_> = config
            .services
            .iter()
            .map(|s| (s.name.clone(), s.vip))
            .collect();
        let ready = readiness(config, rt.fleet(), attached);
        (services, ready, config.announce.drained_why().is_some())
    });
    for (name, vip) in services {
        metrics.set_vip_announced(&name, announcements.is_announced(vip));
    }
    metrics.set_node_drained(drained);
    // A failed listing was logged by the resync; assume the decisions hold meanwhile.
    let on_lo: Option<BTreeSet<IpAddr>> = announcements
        .addresses()
        .announced()
        .ok()
        .map(|held| held.into_iter().collect());
    let vips = ready
        .into_iter()
        .map(|(vip, (readiness, services))| {
            let announced = announcements.is_announced(vip);
            let why = match readiness {
                Readiness::Serving if announced => "serving".to_string(),
                Readiness::Serving => "serving, waiting for announce.hold_up".to_string(),
                Readiness::Undecided => "no health verdict yet".to_string(),
                Readiness::Not(why) => why,
            };
            VipView {
                vip,
                services,
                announced,
                on_lo: on_lo.as_ref().map_or(announced, |held| held.contains(&vip)),
                in_bird: None,
                why,
            }
        })
        .collect();
    shared.publish_vips(vips);
}

#[cfg(test)]
mod tests {
    use std::{
        net::IpAddr,
        sync::Arc,
        time::{Duration, Instant},
    };

    use super::*;
    use crate::{
        control::{health::machine::Failure, runtime::Runtime, tables::Controller},
        dataplane::{FakeDataplane, FakeVips},
        model::{config, plan::BackendRef},
    };

    const RING: u32 = 1009;
    const VIP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 100));

    fn shared() -> Arc<SharedRuntime<FakeDataplane>> {
        let c = config::parse(&format!(
            "node: {{ zone: az-a }}\ninterfaces: [eth0]\ncluster: {{ ring_size: {RING} }}\n\
             announce: {{ vip_ranges: [10.0.0.0/24], hold_up: 0s }}\n\
             services:\n  - name: web\n    vip: {VIP}\n    port: 80\n    backends: \
             [{{ address: 10.1.0.1, port: 8080, zone: az-a }}]\n"
        ))
        .unwrap();
        let controller = Controller::new(FakeDataplane::new(RING, 7), RING);
        let runtime = Runtime::start(c, controller, Instant::now()).unwrap().0;
        Arc::new(SharedRuntime::new(runtime))
    }

    fn probe(shared: &SharedRuntime<FakeDataplane>, ok: bool) {
        let at = BackendRef {
            service: "web".into(),
            address: IpAddr::from([10, 1, 0, 1]),
            port: 8080,
        };
        let outcome = if ok { Ok(()) } else { Err(Failure::Refused) };
        for _ in 0..2 {
            shared.on_probe(&at, &outcome, Duration::ZERO).unwrap();
        }
    }

    fn has(metrics: &Metrics, line: &str) {
        let text = metrics.encode().unwrap();
        assert!(text.contains(line), "{line} in:\n{text}");
    }

    #[test]
    fn the_loop_announces_and_withdraws_with_the_metrics() {
        let shared = shared();
        let metrics = Metrics::new(shared.clone());
        let (mut a, _) =
            Announcements::start(FakeVips::default(), &shared.desired().announce).unwrap();
        shared.set_ready(true);
        publish(&shared, &a, &metrics);
        has(&metrics, "lb_vip_announced{service=\"web\"} 0\n");

        probe(&shared, true);
        step(&shared, &mut a, &metrics, Instant::now());
        has(&metrics, "lb_vip_announced{service=\"web\"} 1\n");
        has(
            &metrics,
            "lb_vip_changes_total{vip=\"10.0.0.100\",change=\"announce\"} 1\n",
        );

        probe(&shared, false);
        step(&shared, &mut a, &metrics, Instant::now());
        has(&metrics, "lb_vip_announced{service=\"web\"} 0\n");
        has(
            &metrics,
            "lb_vip_changes_total{vip=\"10.0.0.100\",change=\"withdraw\"} 1\n",
        );
        assert_eq!(a.addresses().changes, vec![(true, VIP), (false, VIP)]);

        // Not ready (a NIC lost): nothing announced however healthy.
        probe(&shared, true);
        shared.set_ready(false);
        step(&shared, &mut a, &metrics, Instant::now());
        assert!(a.addresses().held.is_empty());
    }
}
