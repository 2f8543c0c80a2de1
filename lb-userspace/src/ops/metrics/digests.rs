//! `lb_service_table_digest` and `lb_service_config_digest`: what each service's tables
//! map flows to, and which service entry this node runs, as numbers that are equal on
//! every node of a tier that would place every flow alike (see `model::table_digest`).
//!
//! Gauges rather than a label of an info metric: one series per service whatever the
//! digest, so a health change does not start a new series (and leave the old one in
//! queries for the staleness window), and "differ across nodes" is
//! `max by (service) != min by (service)`. A digest has 48 bits, so the sample (an f64)
//! holds it exactly.
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{gauge::ConstGauge, MetricType},
};

use crate::{
    model::table_digest::ServiceDigest,
    ops::shared::{DataPath, Shared},
};

/// Which digest of a service a family exports.
type Digest = fn(&ServiceDigest) -> u64;

fn table(d: &ServiceDigest) -> u64 {
    d.table
}

fn config(d: &ServiceDigest) -> u64 {
    d.config
}

pub struct DigestCollector<D> {
    runtime: Shared<D>,
}

impl<D> DigestCollector<D> {
    pub fn new(runtime: Shared<D>) -> Self {
        Self { runtime }
    }
}

impl<D> std::fmt::Debug for DigestCollector<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DigestCollector")
    }
}

impl<D: DataPath> Collector for DigestCollector<D> {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let digests = self.runtime.digests();
        if digests.is_empty() {
            return Ok(());
        }
        let families = [
            (
                "lb_service_table_digest",
                "What the service's tables map flows to (48 bits; equal on nodes that place every flow alike)",
                table as Digest,
            ),
            (
                "lb_service_config_digest",
                "The service's entry of the desired state (48 bits; equal on nodes given the same service)",
                config,
            ),
        ];
        for (name, help, value) in families {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for d in &digests {
                let labels = [("service", d.service.as_str())];
                let sample = metric.encode_family(&labels)?;
                // 48 bits: exact as an i64 and as the f64 Prometheus stores.
                ConstGauge::new(value(d) as i64).encode(sample)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "digests_tests.rs"]
mod tests;
