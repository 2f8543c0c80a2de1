//! `aya::Pod` for every type that crosses the kernel boundary (userspace only).
use crate::{
    backend::Backend,
    counters::{BackendSignals, TrafficCounters},
    flow::*,
    service::*,
};

/// `aya::Pod` for each type, which must be `#[repr(C)]`, made only of integers, with no
/// implicit padding (checked by the size assertions next to each definition).
macro_rules! pod {
    ($($t:ty),* $(,)?) => {
        $(
            // SAFETY: the macro's rule, which every type listed below keeps.
            unsafe impl aya::Pod for $t {}
        )*
    };
}

pod!(
    ServiceKey,
    ServiceMeta,
    Backend,
    FlowKey,
    FlowTarget,
    NatReturn,
    crate::flow_slots::ConnSlot,
    TrafficCounters,
    crate::nexthop::NextHop,
    BackendSignals,
    crate::syn_cache::SynSet,
    crate::reverse::ReverseKey,
    crate::reverse::ReverseTarget,
    crate::reverse6::ReverseKey6,
    crate::reverse6::ReverseTarget6,
    crate::trace::TraceRecord,
    crate::edge::EdgeAddr,
    crate::edge::EdgeRule,
    crate::edge::EdgeService,
    crate::edge::RateKey4,
    crate::edge::RateKey6,
    crate::edge::TokenBucket,
    crate::edge::EdgeCounters,
    crate::syn_proxy::SynProxyFlow,
    crate::edge::DropMemo,
    crate::ipv6::ServiceKey6,
    crate::ipv6::FlowKey6,
    crate::ipv6::NatReturn6,
);
