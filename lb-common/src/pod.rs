//! `aya::Pod` for every type that crosses the kernel boundary (userspace only).
use crate::{
    backend::Backend,
    counters::{BackendSignals, TrafficCounters},
    flow::*,
    service::*,
};

// SAFETY: all of these are #[repr(C)], made only of integers, with no implicit padding
// (checked by the size assertions next to each definition).
unsafe impl aya::Pod for ServiceKey {}
unsafe impl aya::Pod for ServiceMeta {}
unsafe impl aya::Pod for Backend {}
unsafe impl aya::Pod for FlowKey {}
unsafe impl aya::Pod for FlowTarget {}
unsafe impl aya::Pod for NatReturn {}
unsafe impl aya::Pod for TrafficCounters {}
unsafe impl aya::Pod for crate::nexthop::NextHop {}
unsafe impl aya::Pod for BackendSignals {}
unsafe impl aya::Pod for crate::syn_cache::SynSet {}
unsafe impl aya::Pod for crate::trace::TraceRecord {}
