//! Read-only lookups of the data path's maps, one entry at a time, for `explain`:
//! implemented over the kernel's maps (`crate::kernel`) and over the
//! [`FakeDataplane`]'s, so the decision is host-tested against the same function.
use lb_common::{
    backend::{Backend, BACKEND_F_PRESENT},
    flow::{FlowKey, FlowTarget},
    service::{ServiceKey, ServiceMeta},
    syn_cache::SynSet,
};

use crate::dataplane::FakeDataplane;

pub trait Lookups {
    /// The published meta of the service at `key`, as the service index holds it.
    fn service(&self, key: &ServiceKey) -> anyhow::Result<Option<ServiceMeta>>;
    /// The backend slot `id` if it holds a backend (`BACKEND_F_PRESENT`).
    fn backend(&self, id: u32) -> anyhow::Result<Option<Backend>>;
    /// Entry `index` of the ring array (`None` past its end).
    fn ring_entry(&self, index: u32) -> anyhow::Result<Option<u32>>;
    /// Entry `index` of the policy-table array (`None` past its end).
    fn policy_entry(&self, index: u32) -> anyhow::Result<Option<u32>>;
    /// The forward flow entry of `key` (client -> VIP).
    fn flow(&self, key: &FlowKey) -> anyhow::Result<Option<FlowTarget>>;
    /// Set `index` of the SYN cache (`None` past its end).
    fn syn_set(&self, index: u32) -> anyhow::Result<Option<SynSet>>;
    /// Active flows of backend `id` (as least-connections reads them: counted less the
    /// reconciler's adjustment).
    fn active_flows_of(&self, id: u32) -> anyhow::Result<u64>;
    /// The round-robin cursor of service `id` on each CPU.
    fn rr_cursors(&self, service_id: u32) -> anyhow::Result<Vec<u32>>;
    /// The data path's clock, in the seconds it stamps flows with.
    fn clock(&self) -> anyhow::Result<u32>;
}

impl Lookups for FakeDataplane {
    fn service(&self, key: &ServiceKey) -> anyhow::Result<Option<ServiceMeta>> {
        Ok(self.services.get(key).copied())
    }

    fn backend(&self, id: u32) -> anyhow::Result<Option<Backend>> {
        Ok(self
            .backends
            .get(&id)
            .copied()
            .filter(|b| b.flags & BACKEND_F_PRESENT != 0))
    }

    fn ring_entry(&self, index: u32) -> anyhow::Result<Option<u32>> {
        // Unwritten array entries read as 0, as in the kernel.
        Ok(Some(self.ring.get(&index).copied().unwrap_or(0)))
    }

    fn policy_entry(&self, index: u32) -> anyhow::Result<Option<u32>> {
        Ok(Some(self.policy_table.get(&index).copied().unwrap_or(0)))
    }

    fn flow(&self, key: &FlowKey) -> anyhow::Result<Option<FlowTarget>> {
        Ok(self.flows.get(key).copied())
    }

    fn syn_set(&self, index: u32) -> anyhow::Result<Option<SynSet>> {
        Ok(Some(
            self.syn_cache.get(&index).copied().unwrap_or_default(),
        ))
    }

    fn active_flows_of(&self, id: u32) -> anyhow::Result<u64> {
        Ok(self.active.get(&id).copied().unwrap_or(0))
    }

    fn rr_cursors(&self, service_id: u32) -> anyhow::Result<Vec<u32>> {
        Ok(self
            .rr_cursors
            .get(&service_id)
            .cloned()
            .unwrap_or_else(|| vec![0]))
    }

    fn clock(&self) -> anyhow::Result<u32> {
        Ok(self.clock)
    }
}
