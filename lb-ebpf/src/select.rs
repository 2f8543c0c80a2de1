//! Select: which backend a new flow goes to. Maglev: the flow hash indexes the service's
//! live ring slot, built by the controller.
use lb_common::{
    flow::FlowKey,
    hash::flow_hash,
    service::{ring_index, ServiceMeta, NO_BACKEND},
};

use crate::maps::{hash_seed, ring_size, RING};

#[inline(always)]
pub fn maglev(service: &ServiceMeta, flow: &FlowKey) -> u32 {
    let size = ring_size();
    if size == 0 {
        return NO_BACKEND;
    }
    let index = ring_index(
        service.id,
        service.active_slot,
        size,
        flow_hash(flow, hash_seed()),
    );
    RING.get(index).copied().unwrap_or(NO_BACKEND)
}
