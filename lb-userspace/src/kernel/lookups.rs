//! [`Lookups`] over the kernel's maps: single-entry reads, nothing written.
use anyhow::Context as _;
use lb_common::{
    backend::{Backend, BACKEND_F_PRESENT},
    flow::{FlowKey, FlowTarget},
    ipv6::{Addr6, FlowKey6, ServiceKey6},
    service::{ServiceKey, ServiceMeta},
    syn_cache::SynSet,
};

use super::{flows::is_not_found, KernelDataplane};
use crate::dataplane::Lookups;

impl Lookups for KernelDataplane {
    fn service(&self, key: &ServiceKey) -> anyhow::Result<Option<ServiceMeta>> {
        Ok(self.services.get(key))
    }

    fn backend(&self, id: u32) -> anyhow::Result<Option<Backend>> {
        if id >= self.backends.len() {
            return Ok(None);
        }
        let b = self
            .backends
            .get(&id, 0)
            .with_context(|| format!("BACKENDS[{id}]"))?;
        Ok((b.flags & BACKEND_F_PRESENT != 0).then_some(b))
    }

    fn ring_entry(&self, index: u32) -> anyhow::Result<Option<u32>> {
        (index < self.ring.entries())
            .then(|| self.ring.get_u32(index))
            .transpose()
    }

    fn policy_entry(&self, index: u32) -> anyhow::Result<Option<u32>> {
        (index < self.policy_table.entries())
            .then(|| self.policy_table.get_u32(index))
            .transpose()
    }

    fn flow(&self, key: &FlowKey) -> anyhow::Result<Option<FlowTarget>> {
        match self.flows.get(key, 0) {
            Ok(target) => Ok(Some(target)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(e).context("FLOWS lookup"),
        }
    }

    fn syn_set(&self, index: u32) -> anyhow::Result<Option<SynSet>> {
        if index >= self.syn_cache.len() {
            return Ok(None);
        }
        Ok(Some(
            self.syn_cache
                .get(&index, 0)
                .with_context(|| format!("SYN_CACHE[{index}]"))?,
        ))
    }

    fn active_flows_of(&self, id: u32) -> anyhow::Result<u64> {
        KernelDataplane::active_flows(self, id).with_context(|| format!("ACTIVE_FLOWS[{id}]"))
    }

    fn rr_cursors(&self, service_id: u32) -> anyhow::Result<Vec<u32>> {
        let per_cpu = self
            .rr_cursor
            .get(&service_id, 0)
            .with_context(|| format!("RR_CURSOR[{service_id}]"))?;
        Ok(per_cpu.iter().copied().collect())
    }

    fn clock(&self) -> anyhow::Result<u32> {
        self.clock.get(&0, 0).context("CLOCK")
    }

    fn service6(&self, key: &ServiceKey6) -> anyhow::Result<Option<ServiceMeta>> {
        match self.services6.get(key, 0) {
            Ok(meta) => Ok(Some(meta)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(e).context("SERVICES6 lookup"),
        }
    }

    fn flow6(&self, key: &FlowKey6) -> anyhow::Result<Option<FlowTarget>> {
        match self.flows6.get(key, 0) {
            Ok(target) => Ok(Some(target)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(e).context("FLOWS6 lookup"),
        }
    }

    fn backend_addr6(&self, id: u32) -> anyhow::Result<Option<Addr6>> {
        if id >= self.backend_addrs6.len() {
            return Ok(None);
        }
        let addr = self
            .backend_addrs6
            .get(&id, 0)
            .with_context(|| format!("BACKEND_ADDRS6[{id}]"))?;
        Ok(Some(addr))
    }
}
