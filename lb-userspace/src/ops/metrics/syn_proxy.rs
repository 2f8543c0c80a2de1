//! The SYN proxy's state per service (see docs/edge-protection.md), read from the
//! runtime at scrape time: whether it is on, and for `syn_proxy: auto` how often it
//! switched. Its packets are reasons of `lb_datapath_packets_total`.
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge, MetricType},
};

use crate::{
    model::config::SynProxyMode,
    ops::shared::{DataPath, Shared},
};

pub struct SynProxyCollector<D> {
    runtime: Shared<D>,
}

impl<D> SynProxyCollector<D> {
    pub fn new(runtime: Shared<D>) -> Self {
        Self { runtime }
    }
}

impl<D> std::fmt::Debug for SynProxyCollector<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SynProxyCollector")
    }
}

/// Per service with `syn_proxy` on or auto: whether the proxy is on, and the auto
/// switches so far.
type Reading = Vec<(String, bool, Option<u64>)>;

impl<D: DataPath> SynProxyCollector<D> {
    fn read(&self) -> Reading {
        self.runtime.with(|rt| {
            let switches = rt.syn_proxy_switches();
            rt.config()
                .services
                .iter()
                .filter_map(|s| match s.syn_proxy {
                    SynProxyMode::Off => None,
                    SynProxyMode::On => Some((s.name.clone(), true, None)),
                    SynProxyMode::Auto => {
                        let sw = switches.get(&s.name).cloned().unwrap_or_default();
                        Some((s.name.clone(), sw.on, Some(sw.switches)))
                    }
                })
                .collect()
        })
    }
}

impl<D: DataPath> Collector for SynProxyCollector<D> {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let reading = self.read();
        let mut on = encoder.encode_descriptor(
            "lb_syn_proxy_on",
            "Whether the service's SYN proxy answers its SYNs now (syn_proxy: on, or auto while switched on)",
            None,
            MetricType::Gauge,
        )?;
        for (service, is_on, _) in &reading {
            let labels = [("service", service.as_str())];
            ConstGauge::new(u64::from(*is_on)).encode(on.encode_family(&labels)?)?;
        }
        let mut switches = encoder.encode_descriptor(
            "lb_syn_proxy_switches",
            "Times syn_proxy: auto switched the service's SYN proxy on or off",
            None,
            MetricType::Counter,
        )?;
        for (service, _, n) in &reading {
            if let Some(n) = n {
                let labels = [("service", service.as_str())];
                ConstCounter::new(*n).encode(switches.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Instant};

    use prometheus_client::{encoding::text, registry::Registry};

    use super::*;
    use crate::{
        control::{runtime::Runtime, tables::Controller},
        dataplane::FakeDataplane,
        model::config,
        ops::shared::SharedRuntime,
    };

    #[test]
    fn each_proxied_service_says_whether_its_proxy_is_on_and_auto_ones_their_switches() {
        let c = config::parse(
            "node: { zone: az-a }\ninterfaces: [eth0]\ncluster: { ring_size: 13 }\nservices:\n\
             - { name: always, vip: 10.0.0.100, port: 80, syn_proxy: on, backends: [] }\n\
             - { name: floods, vip: 10.0.0.101, port: 80, syn_proxy: auto, backends: [] }\n\
             - { name: plain, vip: 10.0.0.102, port: 80, backends: [] }\n",
        )
        .unwrap();
        let controller = Controller::new(FakeDataplane::new(13, 1), 13);
        let (runtime, _) = Runtime::start(c, controller, Instant::now()).unwrap();
        let mut registry = Registry::default();
        registry.register_collector(Box::new(SynProxyCollector::new(Arc::new(
            SharedRuntime::new(runtime),
        ))));
        let mut out = String::new();
        text::encode(&mut out, &registry).unwrap();
        let samples: Vec<&str> = out.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            samples,
            [
                "lb_syn_proxy_on{service=\"always\"} 1",
                "lb_syn_proxy_on{service=\"floods\"} 0",
                "lb_syn_proxy_switches_total{service=\"floods\"} 0",
            ],
            "{out}"
        );
    }
}
