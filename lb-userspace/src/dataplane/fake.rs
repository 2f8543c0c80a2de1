//! An in-memory data path that behaves like the kernel's lookups, for tests: compiled
//! for this crate's tests and, behind the `fake` feature, for the tests crate.
use std::collections::{BTreeMap, HashMap};

use lb_common::{
    backend::{Backend, BACKEND_F_PRESENT},
    counters::{BackendSignals, TrafficCounters, REASONS},
    edge::EdgeCounters,
    filter::{filter_slot, FILTER_VIPS},
    flow::{FlowKey, FlowTarget, NatReturn, FLOW_F_CLOSED, FLOW_F_COUNTED},
    hash::flow_hash,
    ipv6::{Addr6, FlowKey6, ServiceKey6},
    limits::{
        MAP_BACKENDS, MAP_POLICY_TABLE, MAP_REVERSE, MAP_REVERSE6, MAP_RING, MAP_SERVICES6,
        MAP_SERVICE_INDEX,
    },
    reverse::{ReverseKey, ReverseTarget},
    reverse6::{ReverseKey6, ReverseTarget6},
    service::{ring_index, ServiceKey, ServiceMeta, POLICY_TABLE_SLOTS},
    syn_cache::SynSet,
};

use super::{
    most_limited, Counters, Dataplane, DataplaneError, LimitedSource, LinkChange, Lookups,
    WriteResult,
};
use crate::model::{
    ageing,
    config::FlowTimeouts,
    edge::EdgeTables,
    reconcile::{self, Observed},
};

/// Every write the controller made, in order, as a fake kernel sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    Backend(u32),
    Ring(u32),
    PolicyTable(u32),
    Filter(u32),
    Service(ServiceKey, ServiceMeta),
    RemoveService(ServiceKey),
    BackendAddr6(u32, Addr6),
    Service6(ServiceKey6, ServiceMeta),
    RemoveService6(ServiceKey6),
    PurgeFlows(u32),
    /// A reverse-map entry written (`Some`) or deleted (`None`).
    Reverse(ReverseKey, Option<ReverseTarget>),
    /// The edge tables written, with the rule hit counters zeroed first.
    Edge {
        fresh: Vec<u32>,
    },
}

/// In-memory stand-in for the kernel maps, with the data path's selection logic.
#[derive(Debug, Default)]
pub struct FakeDataplane {
    pub ring_size: u32,
    pub hash_seed: u32,
    pub services: HashMap<ServiceKey, ServiceMeta>,
    pub services6: HashMap<ServiceKey6, ServiceMeta>,
    pub backends: HashMap<u32, Backend>,
    /// The IPv6 address array; an id never written reads as all zero.
    pub backend_addrs6: HashMap<u32, Addr6>,
    pub ring: HashMap<u32, u32>,
    pub policy_table: HashMap<u32, u32>,
    pub filter: HashMap<u32, u32>,
    pub reverse: BTreeMap<ReverseKey, ReverseTarget>,
    /// The IPv6 reverse map.
    pub reverse6: BTreeMap<ReverseKey6, ReverseTarget6>,
    pub edge: EdgeTables,
    /// Rate-limit buckets, as the data path would leave them; set by tests.
    pub buckets: Vec<LimitedSource>,
    pub flows: HashMap<FlowKey, FlowTarget>,
    pub return_flows: HashMap<FlowKey, NatReturn>,
    /// IPv6 flow entries, as the data path would leave them; set by tests.
    pub flows6: HashMap<FlowKey6, FlowTarget>,
    pub signals: HashMap<u32, BackendSignals>,
    /// What only the data path writes, set by tests: SYN-cache sets, active flows per
    /// backend, round-robin cursors per service (one per CPU), the clock.
    pub syn_cache: HashMap<u32, SynSet>,
    pub active: HashMap<u32, u64>,
    pub rr_cursors: HashMap<u32, Vec<u32>>,
    pub clock: u32,
    /// What the reconciler subtracts from `active`, as the kernel's `ACTIVE_ADJUST`.
    pub active_adjust: HashMap<u32, u64>,
    pub nexthop_generation: u32,
    /// What the next `ensure_attached` reports, and each NIC's state, set by tests.
    pub link_changes: Vec<LinkChange>,
    pub interfaces: Vec<(String, bool)>,
    /// What [`Counters`] reads, set by tests (zero where nothing is set).
    pub counters: FakeCounters,
    /// Which writes fail, set by tests of what a failed write leaves behind.
    pub fail_writes: FailWrites,
    /// The tables' sizes, as lbd loads them from `limits.*`; `None`: unbounded.
    pub capacity: Option<Capacity>,
    pub log: Vec<Write>,
}

/// The limits the kernel's tables are sized from (see `crate::kernel::map_sizes`).
#[derive(Debug, Clone, Copy)]
pub struct Capacity {
    pub services: u32,
    pub backends: u32,
}

/// Which of the fake's writes fail (with an injected error) while set.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum FailWrites {
    #[default]
    None,
    /// Ring and policy-table writes: a table swap fails, backend slots still write.
    Tables,
    /// Every write, flow purges included.
    All,
}

/// The counters the fake reports, by service or backend id; absent ids read as zero.
#[derive(Debug, Default)]
pub struct FakeCounters {
    pub services: HashMap<u32, TrafficCounters>,
    pub backends: HashMap<u32, TrafficCounters>,
    pub active_flows: HashMap<u32, u64>,
    /// Per reason slot; empty reads as all zero.
    pub reasons: Vec<u64>,
    pub flow_entries: u64,
    pub flow_entries6: u64,
    pub flow_overflow_entries: u64,
    pub edge_rule_hits: HashMap<u32, u64>,
    pub edge: HashMap<u32, EdgeCounters>,
    pub syn_proxy_syns: HashMap<u32, u64>,
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
            flags: 0,
            service: meta.id,
            backend: id,
            nexthop: Default::default(),
        };
        self.return_flows.insert(reverse, nat);
        Some(id)
    }
}

impl FakeDataplane {
    /// Fails a write while [`Self::fail_writes`] covers it (`table`: a ring or policy
    /// table write).
    fn refuse_write(&self, table: bool) -> anyhow::Result<()> {
        let fails = match self.fail_writes {
            FailWrites::None => false,
            FailWrites::Tables => table,
            FailWrites::All => true,
        };
        anyhow::ensure!(!fails, "injected map write failure");
        Ok(())
    }
}

impl Dataplane for FakeDataplane {
    fn set_edge_tables(&mut self, tables: &EdgeTables, fresh: &[u32]) -> anyhow::Result<()> {
        self.refuse_write(false)?;
        for counter in fresh {
            self.counters.edge_rule_hits.remove(counter);
        }
        self.edge = tables.clone();
        self.log.push(Write::Edge {
            fresh: fresh.to_vec(),
        });
        Ok(())
    }

    fn limited_sources(&self, limit: usize) -> anyhow::Result<Vec<LimitedSource>> {
        Ok(most_limited(self.buckets.iter().copied(), limit))
    }

    fn reset_edge_state(&mut self, ids: &[u32]) -> anyhow::Result<()> {
        self.refuse_write(false)?;
        for id in ids {
            self.counters.edge.remove(id);
        }
        self.buckets.retain(|b| !ids.contains(&b.service));
        Ok(())
    }

    fn set_backend(&mut self, id: u32, backend: &Backend) -> WriteResult {
        self.refuse_write(false)?;
        if let Some(c) = self.capacity {
            check_index(id, c.backends, MAP_BACKENDS, "max_backends")?;
        }
        self.backends.insert(id, *backend);
        self.log.push(Write::Backend(id));
        Ok(())
    }

    fn set_backend_addr6(&mut self, id: u32, addr: &Addr6) -> WriteResult {
        self.refuse_write(false)?;
        if let Some(c) = self.capacity {
            check_index(id, c.backends, MAP_BACKENDS, "max_backends")?;
        }
        self.backend_addrs6.insert(id, *addr);
        self.log.push(Write::BackendAddr6(id, *addr));
        Ok(())
    }

    fn set_service6(&mut self, key: &ServiceKey6, meta: &ServiceMeta) -> WriteResult {
        self.refuse_write(false)?;
        if let Some(c) = self.capacity {
            if !self.services6.contains_key(key) && self.services6.len() as u32 >= c.services {
                return Err(DataplaneError::TableFull {
                    map: MAP_SERVICES6,
                    capacity: c.services,
                    limit: "max_services",
                });
            }
        }
        self.services6.insert(*key, *meta);
        self.log.push(Write::Service6(*key, *meta));
        Ok(())
    }

    fn remove_service6(&mut self, key: &ServiceKey6) -> WriteResult {
        self.refuse_write(false)?;
        self.services6.remove(key);
        self.log.push(Write::RemoveService6(*key));
        Ok(())
    }

    fn set_ring_entries(&mut self, entries: &[(u32, u32)]) -> WriteResult {
        self.refuse_write(true)?;
        if let Some(c) = self.capacity {
            let size = c.services * 2 * self.ring_size;
            check_indices(entries, size, MAP_RING)?;
        }
        for (index, id) in entries {
            self.ring.insert(*index, *id);
            self.log.push(Write::Ring(*index));
        }
        Ok(())
    }

    fn set_policy_entries(&mut self, entries: &[(u32, u32)]) -> WriteResult {
        self.refuse_write(true)?;
        if let Some(c) = self.capacity {
            let size = c.services * 2 * POLICY_TABLE_SLOTS;
            check_indices(entries, size, MAP_POLICY_TABLE)?;
        }
        for (index, id) in entries {
            self.policy_table.insert(*index, *id);
            self.log.push(Write::PolicyTable(*index));
        }
        Ok(())
    }

    fn set_filter_words(&mut self, words: &[(u32, u32)]) -> WriteResult {
        self.refuse_write(false)?;
        for (index, bits) in words {
            self.filter.insert(*index, *bits);
            self.log.push(Write::Filter(*index));
        }
        Ok(())
    }

    fn set_service(&mut self, key: &ServiceKey, meta: &ServiceMeta) -> WriteResult {
        self.refuse_write(false)?;
        if let Some(c) = self.capacity {
            if !self.services.contains_key(key) && self.services.len() as u32 >= c.services {
                return Err(DataplaneError::TableFull {
                    map: MAP_SERVICE_INDEX,
                    capacity: c.services,
                    limit: "max_services",
                });
            }
        }
        self.services.insert(*key, *meta);
        self.log.push(Write::Service(*key, *meta));
        Ok(())
    }

    fn set_reverse_map(&mut self, entries: &BTreeMap<ReverseKey, ReverseTarget>) -> WriteResult {
        self.refuse_write(false)?;
        // A hash map sized like the backend slots, as in the kernel.
        if let Some(c) = self.capacity {
            if entries.len() > c.backends as usize {
                return Err(DataplaneError::TableFull {
                    map: MAP_REVERSE,
                    capacity: c.backends,
                    limit: "max_backends",
                });
            }
        }
        for key in self.reverse.keys() {
            if !entries.contains_key(key) {
                self.log.push(Write::Reverse(*key, None));
            }
        }
        for (key, target) in entries {
            if self.reverse.get(key) != Some(target) {
                self.log.push(Write::Reverse(*key, Some(*target)));
            }
        }
        self.reverse = entries.clone();
        Ok(())
    }

    fn set_reverse_map6(&mut self, entries: &BTreeMap<ReverseKey6, ReverseTarget6>) -> WriteResult {
        self.refuse_write(false)?;
        if let Some(c) = self.capacity {
            if entries.len() > c.backends as usize {
                return Err(DataplaneError::TableFull {
                    map: MAP_REVERSE6,
                    capacity: c.backends,
                    limit: "max_backends",
                });
            }
        }
        self.reverse6 = entries.clone();
        Ok(())
    }

    fn remove_service(&mut self, key: &ServiceKey) -> WriteResult {
        self.refuse_write(false)?;
        self.services.remove(key);
        self.log.push(Write::RemoveService(*key));
        Ok(())
    }

    fn purge_flows(&mut self, ids: &[u32]) -> anyhow::Result<usize> {
        self.refuse_write(false)?;
        let before = self.flows.len();
        self.flows.retain(|_, t| !ids.contains(&t.backend));
        self.return_flows.retain(|_, n| !ids.contains(&n.backend));
        self.log.extend(ids.iter().map(|id| Write::PurgeFlows(*id)));
        Ok(before - self.flows.len())
    }

    fn backend_signals(&self, id: u32) -> anyhow::Result<BackendSignals> {
        Ok(self.signals.get(&id).copied().unwrap_or_default())
    }

    fn set_clock(&mut self, seconds: u32) -> anyhow::Result<()> {
        self.clock = seconds;
        Ok(())
    }

    /// As the kernel's: both directions of every flow idle past its state's timeout.
    fn expire_flows(&mut self, now: u32, timeouts: &FlowTimeouts) -> anyhow::Result<usize> {
        let expired: Vec<(FlowKey, FlowTarget)> = self
            .flows
            .iter()
            .filter(|(_, target)| ageing::expired(target, now, timeouts))
            .map(|(key, target)| (*key, *target))
            .collect();
        for (key, target) in &expired {
            self.flows.remove(key);
            let Some(backend) = self.backends.get(&target.backend) else {
                continue;
            };
            let reverse = FlowKey {
                src_addr: backend.addr,
                dst_addr: key.src_addr,
                src_port: backend.port,
                dst_port: key.src_port,
                ..*key
            };
            self.return_flows.remove(&reverse);
        }
        Ok(expired.len())
    }

    fn bump_nexthop_generation(&mut self) -> anyhow::Result<()> {
        self.nexthop_generation = self.nexthop_generation.wrapping_add(1);
        Ok(())
    }

    /// Hands out the changes a test queued in [`FakeDataplane::link_changes`].
    fn ensure_attached(&mut self) -> Vec<LinkChange> {
        std::mem::take(&mut self.link_changes)
    }

    fn interface_states(&self) -> Vec<(String, bool)> {
        self.interfaces.clone()
    }

    /// As the kernel's, with [`FakeDataplane::active`] as the data path's counts (which
    /// do not move while the fake is scanned).
    fn reconcile_active_flows(&mut self, backends: &[u32]) -> anyhow::Result<Vec<(u32, u64)>> {
        let observed: Vec<Observed> = backends
            .iter()
            .map(|id| {
                let counted = self.active.get(id).copied().unwrap_or(0);
                Observed {
                    id: *id,
                    counted_before: counted,
                    counted_after: counted,
                    adjust: self.active_adjust.get(id).copied().unwrap_or(0),
                    open_in_table: self
                        .flows
                        .values()
                        .filter(|t| {
                            t.backend == *id
                                && t.state & FLOW_F_COUNTED != 0
                                && t.state & FLOW_F_CLOSED == 0
                        })
                        .count() as u64,
                }
            })
            .collect();
        let fixes = reconcile::corrections(&observed);
        self.active_adjust.extend(fixes.iter().copied());
        Ok(fixes)
    }
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
        let adjust = self.active_adjust.get(&id).copied().unwrap_or(0);
        let opened = self.active.get(&id).copied().unwrap_or(0);
        Ok(lb_common::counters::active_flows(opened, adjust))
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

    fn service6(&self, key: &ServiceKey6) -> anyhow::Result<Option<ServiceMeta>> {
        Ok(self.services6.get(key).copied())
    }

    fn flow6(&self, key: &FlowKey6) -> anyhow::Result<Option<FlowTarget>> {
        Ok(self.flows6.get(key).copied())
    }

    fn backend_addr6(&self, id: u32) -> anyhow::Result<Option<Addr6>> {
        // An id never written reads as all zero, as in the kernel's array.
        Ok(Some(
            self.backend_addrs6.get(&id).copied().unwrap_or_default(),
        ))
    }
}

/// The in-memory data path counts nothing: every counter reads zero.
impl Counters for FakeDataplane {
    fn service_counters(&self, id: u32) -> anyhow::Result<TrafficCounters> {
        Ok(self.counters.services.get(&id).copied().unwrap_or_default())
    }
    fn backend_counters(&self, id: u32) -> anyhow::Result<TrafficCounters> {
        Ok(self.counters.backends.get(&id).copied().unwrap_or_default())
    }
    fn active_flows(&self, id: u32) -> anyhow::Result<u64> {
        Ok(self.counters.active_flows.get(&id).copied().unwrap_or(0))
    }
    fn reason_counters(&self) -> anyhow::Result<Vec<u64>> {
        let mut reasons = self.counters.reasons.clone();
        reasons.resize(REASONS.len(), 0);
        Ok(reasons)
    }
    fn flow_entries(&self) -> u64 {
        self.counters.flow_entries
    }
    fn flow_entries6(&self) -> u64 {
        self.counters.flow_entries6
    }
    fn flow_overflow_entries(&self) -> u64 {
        self.counters.flow_overflow_entries
    }
    fn edge_rule_hits(&self, counter: u32) -> anyhow::Result<u64> {
        Ok(self
            .counters
            .edge_rule_hits
            .get(&counter)
            .copied()
            .unwrap_or(0))
    }
    fn edge_counters(&self, id: u32) -> anyhow::Result<EdgeCounters> {
        Ok(self.counters.edge.get(&id).copied().unwrap_or_default())
    }
    fn syn_proxy_syns(&self, id: u32) -> anyhow::Result<u64> {
        Ok(self.counters.syn_proxy_syns.get(&id).copied().unwrap_or(0))
    }
}

/// As the kernel refuses an array index at or beyond `max_entries` (E2BIG).
fn check_index(index: u32, size: u32, map: &'static str, limit: &'static str) -> WriteResult {
    if index < size {
        return Ok(());
    }
    Err(DataplaneError::TableFull {
        map,
        capacity: size,
        limit,
    })
}

/// [`check_index`] for every entry of a selection-table write, before any is made.
fn check_indices(entries: &[(u32, u32)], size: u32, map: &'static str) -> WriteResult {
    entries
        .iter()
        .try_for_each(|(index, _)| check_index(*index, size, map, "max_services"))
}
