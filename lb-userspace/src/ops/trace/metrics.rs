//! The packet trace's counters on `/metrics`.
use std::sync::{atomic::Ordering::Relaxed, Arc};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge, MetricType},
};

use crate::kernel::trace::Tracer;

pub struct TraceCollector {
    pub tracer: Arc<Tracer>,
}

impl std::fmt::Debug for TraceCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TraceCollector")
    }
}

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let metric = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    ConstCounter::new(v).encode(metric)
}

impl Collector for TraceCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let t = &self.tracer;
        let sessions = e.encode_descriptor(
            "lb_trace_sessions",
            "Services whose packets are being traced now",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(t.sessions() as i64).encode(sessions)?;
        counter(
            &mut e,
            "lb_trace_records",
            "Trace records read from the data path's ring",
            t.records.load(Relaxed),
        )?;
        // A map read failure shows as a scrape without this series, and is logged.
        match t.ring_lost() {
            Ok(lost) => counter(
                &mut e,
                "lb_trace_records_lost",
                "Trace records the data path could not write: the ring was full",
                lost,
            )?,
            Err(err) => log::error!("reading the trace's lost-record count: {err:#}"),
        }
        counter(
            &mut e,
            "lb_trace_records_dropped_slow_reader",
            "Trace records dropped because the client streaming them read too slowly",
            t.slow_reader_drops.load(Relaxed),
        )?;
        counter(
            &mut e,
            "lb_trace_records_unclaimed",
            "Trace records that arrived after their service's trace ended",
            t.unclaimed.load(Relaxed),
        )
    }
}
