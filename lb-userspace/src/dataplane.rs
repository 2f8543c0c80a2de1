//! The one narrow interface through which the controller changes the kernel's tables,
//! plus an in-memory implementation that behaves like the kernel's lookups, for tests.
use std::collections::HashMap;

use lb_common::{
    backend::{Backend, BACKEND_F_PRESENT},
    counters::BackendSignals,
    filter::{filter_slot, FILTER_VIPS},
    flow::{FlowKey, FlowTarget, NatReturn, FLOW_F_COUNTED},
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
    /// Deletes every flow entry, in both directions, pinned to any of the backends `ids`
    /// (one walk of each table, however many ids); returns how many connections
    /// (forward entries) were dropped.
    fn purge_flows(&mut self, ids: &[u32]) -> anyhow::Result<usize>;
    /// The passive health counters of backend `id`, summed over CPUs.
    fn backend_signals(&self, id: u32) -> anyhow::Result<BackendSignals>;
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
    PurgeFlows(u32),
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
    pub flows: HashMap<FlowKey, FlowTarget>,
    pub return_flows: HashMap<FlowKey, NatReturn>,
    pub signals: HashMap<u32, BackendSignals>,
    /// What only the data path writes, set by tests: SYN-cache sets, active flows per
    /// backend, round-robin cursors per service (one per CPU), the clock.
    pub syn_cache: HashMap<u32, lb_common::syn_cache::SynSet>,
    pub active: HashMap<u32, u64>,
    pub rr_cursors: HashMap<u32, Vec<u32>>,
    pub clock: u32,
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

    fn present(&self, id: u32) -> Option<Backend> {
        let backend = self.backends.get(&id).copied()?;
        (backend.flags & BACKEND_F_PRESENT != 0).then_some(backend)
    }

    /// The backend id a new flow would get from the live ring, as the XDP program
    /// computes it (the address prefilter first).
    fn ring_pick(&self, service: &ServiceKey, flow: &FlowKey) -> Option<(ServiceMeta, u32)> {
        let (word, mask) = filter_slot(FILTER_VIPS, service.addr);
        if self.filter.get(&word).copied().unwrap_or(0) & mask == 0 {
            return None;
        }
        let meta = *self.services.get(service)?;
        let index = ring_index(
            meta.id,
            meta.active_slot,
            self.ring_size,
            flow_hash(flow, self.hash_seed),
        );
        // Unwritten array entries read as 0, as in the kernel.
        Some((meta, self.ring.get(&index).copied().unwrap_or(0)))
    }

    /// The backend a new flow would get, as the XDP program computes it.
    pub fn select(&self, service: &ServiceKey, flow: &FlowKey) -> Option<Backend> {
        let (_, id) = self.ring_pick(service, flow)?;
        self.present(id)
    }

    /// A packet of `flow` (client -> VIP) arriving, as `lb-ebpf/src/to_backend.rs` handles it
    /// (Maglev services): an existing flow keeps its backend while its slot is present,
    /// except that a SYN (a new connection on a reused 5-tuple) whose entry names a
    /// backend taking no new flows (weight 0) is placed afresh; a miss is placed by the
    /// ring and both directions are recorded, as the handshake (SYN, then the ACK that
    /// takes its SYN-cache slot) or the backend's reply would. Returns the backend id.
    pub fn packet(&mut self, service: &ServiceKey, flow: &FlowKey, syn: bool) -> Option<u32> {
        if let Some(target) = self.flows.get(flow) {
            if let Some(backend) = self.present(target.backend) {
                if !syn || backend.weight_milli > 0 {
                    return Some(target.backend);
                }
            }
        }
        let (meta, id) = self.ring_pick(service, flow)?;
        let backend = self.present(id)?;
        self.flows.insert(
            *flow,
            FlowTarget {
                backend: id,
                service: meta.id,
                state: FLOW_F_COUNTED,
                last_seen: 0,
                _pad: 0,
            },
        );
        let reverse = FlowKey {
            src_addr: backend.addr,
            dst_addr: flow.src_addr,
            src_port: backend.port,
            dst_port: flow.src_port,
            ..*flow
        };
        let nat = NatReturn {
            vip: flow.dst_addr,
            vport: flow.dst_port,
            _pad: 0,
            service: meta.id,
            backend: id,
            nexthop: Default::default(),
        };
        self.return_flows.insert(reverse, nat);
        Some(id)
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

    fn purge_flows(&mut self, ids: &[u32]) -> anyhow::Result<usize> {
        let before = self.flows.len();
        self.flows.retain(|_, t| !ids.contains(&t.backend));
        self.return_flows.retain(|_, n| !ids.contains(&n.backend));
        self.log.extend(ids.iter().map(|id| Write::PurgeFlows(*id)));
        Ok(before - self.flows.len())
    }

    fn backend_signals(&self, id: u32) -> anyhow::Result<BackendSignals> {
        Ok(self.signals.get(&id).copied().unwrap_or_default())
    }
}
