//! The listeners' connection counters (see `crate::ops::listeners`) and lbd's descriptors,
//! the latter under the names every Prometheus client library gives them.
use std::sync::{atomic::Ordering::Relaxed, Arc};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge, MetricType},
};

use crate::{ops::fd_budget, ops::listeners::stats::ListenerStats};

#[derive(Debug)]
pub struct ListenerCollector {
    pub listeners: Vec<Arc<ListenerStats>>,
}

type Labels = Vec<(&'static str, String)>;

fn family(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: &[(Labels, u64)],
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in samples {
        let sample = metric.encode_family(labels)?;
        match kind {
            MetricType::Counter => ConstCounter::new(*value).encode(sample)?,
            _ => ConstGauge::new(*value as i64).encode(sample)?,
        }
    }
    Ok(())
}

/// A gauge without labels, written `name value` (`name{} value` from an empty label set
/// is refused by some parsers).
fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(value as i64).encode(metric)
}

impl Collector for ListenerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use MetricType::{Counter, Gauge};
        let of = |l: &ListenerStats| vec![("listener", l.name.to_string())];
        let each = |value: &dyn Fn(&ListenerStats) -> u64| -> Vec<(Labels, u64)> {
            self.listeners.iter().map(|l| (of(l), value(l))).collect()
        };
        family(
            &mut encoder,
            "lb_listener_connections_accepted",
            "Connections accepted per listener",
            Counter,
            &each(&|l| l.accepted.load(Relaxed)),
        )?;
        family(
            &mut encoder,
            "lb_listener_connections_open",
            "Connections open per listener",
            Gauge,
            &each(&|l| l.open.load(Relaxed)),
        )?;
        family(
            &mut encoder,
            "lb_listener_connections_max",
            "Cap on a listener's open connections (api.connections.max, metrics.connections.max)",
            Gauge,
            &each(&|l| l.cap.into()),
        )?;
        let mut closed = Vec::new();
        for l in &self.listeners {
            for (reason, n) in [
                ("cap_evicted", &l.evicted),
                ("cap_refused", &l.refused),
                ("header_timeout", &l.header_timeouts),
                ("idle_timeout", &l.idle_timeouts),
            ] {
                let mut labels = of(l);
                labels.push(("reason", reason.to_string()));
                closed.push((labels, n.load(Relaxed)));
            }
        }
        family(
            &mut encoder,
            "lb_listener_connections_closed_by_lbd",
            "Connections lbd closed on its own, per listener and reason: cap_evicted (at the \
             cap, the one waiting longest for a request made room), cap_refused (at the cap, \
             all being answered), header_timeout, idle_timeout",
            Counter,
            &closed,
        )?;
        let mut refused = Vec::new();
        for l in &self.listeners {
            for (reason, n) in [
                ("unauthorized", &l.unauthorized),
                ("forbidden", &l.forbidden),
            ] {
                let mut labels = of(l);
                labels.push(("reason", reason.to_string()));
                refused.push((labels, n.load(Relaxed)));
            }
        }
        family(
            &mut encoder,
            "lb_listener_requests_refused",
            "Requests refused per listener and reason: unauthorized (no or an unknown bearer \
             token, 401), forbidden (outside the token's scope, 403)",
            Counter,
            &refused,
        )?;
        family(
            &mut encoder,
            "lb_listener_accept_errors",
            "accept(2) failures per listener (EMFILE: out of descriptors)",
            Counter,
            &each(&|l| l.accept_errors.load(Relaxed)),
        )?;
        if let Ok(open) = fd_budget::open_fds() {
            gauge(
                &mut encoder,
                "process_open_fds",
                "Number of open file descriptors",
                open,
            )?;
        }
        if let Ok(limit) = fd_budget::nofile_limit() {
            gauge(
                &mut encoder,
                "process_max_fds",
                "Maximum number of open file descriptors (RLIMIT_NOFILE, soft)",
                limit.soft,
            )?;
        }
        Ok(())
    }
}
