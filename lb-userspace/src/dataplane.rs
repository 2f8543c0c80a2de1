//! The one narrow interface through which the controller changes the kernel's tables,
//! plus an in-memory implementation that behaves like the kernel's lookups, for tests.
use std::collections::HashMap;

use lb_common::{
    backend::{Backend, BACKEND_F_PRESENT},
    filter::{filter_slot, FILTER_VIPS},
    flow::FlowKey,
    hash::flow_hash,
    service::{ring_index, ServiceKey, ServiceMeta},
};

pub trait Dataplane {
    /// Writes one backend slot (an all-zero value frees it).
    fn set_backend(&mut self, id: u32, backend: &Backend) -> anyhow::Result<()>;
    /// Writes ring entries as (index into the whole ring array, backend id).
    fn set_ring_entries(&mut self, entries: &[(u32, u32)]) -> anyhow::Result<()>;
    /// Writes policy-table entries as (index into the whole table array, backend id).
    fn set_policy_entries(&mut self, entries: &[(u32, u32)]) -> anyhow::Result<()>;
    /// Writes address-prefilter words as (word index, bits).
    fn set_filter_words(&mut self, words: &[(u32, u32)]) -> anyhow::Result<()>;
    /// Creates or replaces a service; replacing flips its live ring slot atomically.
    fn set_service(&mut self, key: &ServiceKey, meta: &ServiceMeta) -> anyhow::Result<()>;
    fn remove_service(&mut self, key: &ServiceKey) -> anyhow::Result<()>;
}

/// Every write the controller made, in order, as a fake kernel sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    Backend(u32),
    Ring(u32),
    PolicyTable(u32),
    Filter(u32),
    Service(ServiceKey, ServiceMeta),
    RemoveService(ServiceKey),
}

/// In-memory stand-in for the kernel maps, with the data path's selection logic.
#[derive(Debug, Default)]
pub struct FakeDataplane {
    pub ring_size: u32,
    pub hash_seed: u32,
    pub services: HashMap<ServiceKey, ServiceMeta>,
    pub backends: HashMap<u32, Backend>,
    pub ring: HashMap<u32, u32>,
    pub policy_table: HashMap<u32, u32>,
    pub filter: HashMap<u32, u32>,
    pub log: Vec<Write>,
}

impl FakeDataplane {
    pub fn new(ring_size: u32, hash_seed: u32) -> Self {
        Self {
            ring_size,
            hash_seed,
            ..Self::default()
        }
    }

    /// The backend a new flow would get, as the XDP program computes it.
    pub fn select(&self, service: &ServiceKey, flow: &FlowKey) -> Option<Backend> {
        let (word, mask) = filter_slot(FILTER_VIPS, service.addr);
        if self.filter.get(&word).copied().unwrap_or(0) & mask == 0 {
            return None;
        }
        let meta = self.services.get(service)?;
        let index = ring_index(
            meta.id,
            meta.active_slot,
            self.ring_size,
            flow_hash(flow, self.hash_seed),
        );
        // Unwritten array entries read as 0, as in the kernel.
        let id = self.ring.get(&index).copied().unwrap_or(0);
        let backend = self.backends.get(&id).copied()?;
        (backend.flags & BACKEND_F_PRESENT != 0).then_some(backend)
    }
}

impl Dataplane for FakeDataplane {
    fn set_backend(&mut self, id: u32, backend: &Backend) -> anyhow::Result<()> {
        self.backends.insert(id, *backend);
        self.log.push(Write::Backend(id));
        Ok(())
    }

    fn set_ring_entries(&mut self, entries: &[(u32, u32)]) -> anyhow::Result<()> {
        for (index, id) in entries {
            self.ring.insert(*index, *id);
            self.log.push(Write::Ring(*index));
        }
        Ok(())
    }

    fn set_policy_entries(&mut self, entries: &[(u32, u32)]) -> anyhow::Result<()> {
        for (index, id) in entries {
            self.policy_table.insert(*index, *id);
            self.log.push(Write::PolicyTable(*index));
        }
        Ok(())
    }

    fn set_filter_words(&mut self, words: &[(u32, u32)]) -> anyhow::Result<()> {
        for (index, bits) in words {
            self.filter.insert(*index, *bits);
            self.log.push(Write::Filter(*index));
        }
        Ok(())
    }

    fn set_service(&mut self, key: &ServiceKey, meta: &ServiceMeta) -> anyhow::Result<()> {
        self.services.insert(*key, *meta);
        self.log.push(Write::Service(*key, *meta));
        Ok(())
    }

    fn remove_service(&mut self, key: &ServiceKey) -> anyhow::Result<()> {
        self.services.remove(key);
        self.log.push(Write::RemoveService(*key));
        Ok(())
    }
}
