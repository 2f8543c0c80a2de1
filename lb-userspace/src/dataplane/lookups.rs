//! Read-only lookups of the data path's maps, one entry at a time, for `explain`:
//! implemented over the kernel's maps (`crate::kernel`) and over the fake's, so the
//! decision is host-tested against the same function.
use lb_common::{
    backend::Backend,
    flow::{FlowKey, FlowTarget},
    ipv6::{Addr6, FlowKey6, ServiceKey6},
    service::{ServiceKey, ServiceMeta},
    syn_cache::SynSet,
};

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
    /// The published meta of the IPv6 service at `key`.
    fn service6(&self, key: &ServiceKey6) -> anyhow::Result<Option<ServiceMeta>>;
    /// The forward IPv6 flow entry of `key` (client -> VIP).
    fn flow6(&self, key: &FlowKey6) -> anyhow::Result<Option<FlowTarget>>;
    /// The IPv6 address of backend slot `id` (`None` past the array's end).
    fn backend_addr6(&self, id: u32) -> anyhow::Result<Option<Addr6>>;
}
