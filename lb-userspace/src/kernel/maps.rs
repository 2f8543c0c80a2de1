//! [`Dataplane`] and [`Counters`] over the real maps: table writes, flow purges and the
//! per-CPU counters summed.

use std::collections::BTreeMap;

use anyhow::Context as _;
use aya::{
    maps::{MapData, MapError, PerCpuArray},
    sys::SyscallError,
};
use lb_common::{
    backend::Backend,
    counters::{BackendSignals, TrafficCounters, REASON_COUNT},
    flow::{FlowTarget, NatReturn},
    ipv6::{Addr6, NatReturn6, ServiceKey6},
    limits::*,
    nexthop::NextHop,
    reverse::{ReverseKey, ReverseTarget},
    reverse6::{ReverseKey6, ReverseTarget6},
    service::{ServiceKey, ServiceMeta},
};

use super::{flows::EntryMap, mmap_array::OutOfRange, KernelDataplane};
use crate::{
    dataplane::{Counters, Dataplane, DataplaneError, LinkChange, WriteResult},
    model::config::FlowTimeouts,
};

impl KernelDataplane {
    /// The IPv6 service map's capacity (`limits.max_services`).
    fn services6_capacity(&self) -> u32 {
        aya::maps::IterableMap::map(&self.services6)
            .info()
            .map_or(0, |info| info.max_entries())
    }

    pub fn service_counters(&self, id: u32) -> anyhow::Result<TrafficCounters> {
        sum_counters(&self.service_stats, id)
    }

    pub fn backend_counters(&self, id: u32) -> anyhow::Result<TrafficCounters> {
        sum_counters(&self.backend_stats, id)
    }

    /// Packets per [`lb_common::counters::Reason`] slot, summed over CPUs.
    pub fn reason_counters(&self) -> anyhow::Result<Vec<u64>> {
        (0..REASON_COUNT)
            .map(|slot| {
                let values = self.reasons.get(&slot, 0)?;
                Ok(values.iter().sum())
            })
            .collect()
    }
}

pub(super) fn sum_counters(
    map: &PerCpuArray<MapData, TrafficCounters>,
    id: u32,
) -> anyhow::Result<TrafficCounters> {
    let mut total = TrafficCounters::default();
    for cpu in map.get(&id, 0)?.iter() {
        total.accumulate(cpu);
    }
    Ok(total)
}

/// One array slot being written, to say why a write of it was refused.
struct Slot {
    map: &'static str,
    capacity: u32,
    /// The config key the map is sized from.
    limit: &'static str,
    index: u32,
}

impl Slot {
    /// [`DataplaneError::TableFull`] when there is no room for the slot (an index at or
    /// beyond the map's size, which the kernel answers with E2BIG; or ENOSPC), any other
    /// failure with the map and index named.
    fn refused(&self, e: MapError) -> DataplaneError {
        let full = match &e {
            MapError::OutOfBounds { .. } => true,
            MapError::SyscallError(SyscallError { io_error, .. }) => {
                matches!(io_error.raw_os_error(), Some(libc::E2BIG | libc::ENOSPC))
            }
            _ => false,
        };
        if full {
            return DataplaneError::TableFull {
                map: self.map,
                capacity: self.capacity,
                limit: self.limit,
            };
        }
        let what = format!("{}[{}]", self.map, self.index);
        DataplaneError::Kernel(anyhow::Error::new(e).context(what))
    }
}

/// A selection-table write beyond the table: the service's id has no room in a table
/// sized from `limits.max_services` (nothing was written).
fn full(e: OutOfRange, map: &'static str) -> DataplaneError {
    DataplaneError::TableFull {
        map,
        capacity: e.entries,
        limit: "max_services",
    }
}

impl Dataplane for KernelDataplane {
    fn set_edge_tables(
        &mut self,
        tables: &crate::model::edge::EdgeTables,
        fresh: &[u32],
    ) -> anyhow::Result<()> {
        self.write_edge_tables(tables, fresh)
    }

    fn reset_edge_state(&mut self, ids: &[u32]) -> anyhow::Result<()> {
        KernelDataplane::reset_edge_state(self, ids)
    }

    fn limited_sources(
        &self,
        limit: usize,
    ) -> anyhow::Result<Vec<crate::dataplane::LimitedSource>> {
        self.read_limited_sources(limit)
    }

    fn set_reverse_map(&mut self, entries: &BTreeMap<ReverseKey, ReverseTarget>) -> WriteResult {
        let capacity = self.backends.len();
        super::reverse::write_reverse_map(&mut self.reverse, MAP_REVERSE, capacity, entries)
    }

    fn set_reverse_map6(&mut self, entries: &BTreeMap<ReverseKey6, ReverseTarget6>) -> WriteResult {
        let capacity = self.backends.len();
        super::reverse::write_reverse_map(&mut self.reverse6, MAP_REVERSE6, capacity, entries)
    }

    fn set_backend(&mut self, id: u32, backend: &Backend) -> WriteResult {
        let capacity = self.backends.len();
        let slot = |map| Slot {
            map,
            capacity,
            limit: "max_backends",
            index: id,
        };
        self.backends
            .set(id, backend, 0)
            .map_err(|e| slot(MAP_BACKENDS).refused(e))?;
        // The slot may now name another address: forget the route cached for it.
        self.nexthops
            .set(id, NextHop::default(), 0)
            .map_err(|e| slot(MAP_NEXTHOPS).refused(e))
    }

    fn set_backend_addr6(&mut self, id: u32, addr: &Addr6) -> WriteResult {
        let slot = Slot {
            map: MAP_BACKEND_ADDRS6,
            capacity: self.backend_addrs6.len(),
            limit: "max_backends",
            index: id,
        };
        self.backend_addrs6
            .set(id, addr, 0)
            .map_err(|e| slot.refused(e))
    }

    fn set_ring_entries(&mut self, entries: &[(u32, u32)]) -> WriteResult {
        self.ring.set_all(entries).map_err(|e| full(e, MAP_RING))
    }

    fn set_policy_entries(&mut self, entries: &[(u32, u32)]) -> WriteResult {
        self.policy_table
            .set_all(entries)
            .map_err(|e| full(e, MAP_POLICY_TABLE))
    }

    fn set_filter_words(&mut self, words: &[(u32, u32)]) -> WriteResult {
        // A fixed size that every word index fits (`FILTER_TOTAL_WORDS`): never full.
        self.addr_filter
            .set_all(words)
            .context(MAP_ADDR_FILTER)
            .map_err(DataplaneError::Kernel)
    }

    fn set_service(&mut self, key: &ServiceKey, meta: &ServiceMeta) -> WriteResult {
        self.services.set(key, meta)
    }

    fn remove_service(&mut self, key: &ServiceKey) -> WriteResult {
        Ok(self.services.remove(key)?)
    }

    fn set_service6(&mut self, key: &ServiceKey6, meta: &ServiceMeta) -> WriteResult {
        // Before the service: its first SYN-ACK may follow at once.
        self.service_vips6.set(meta.id, key, 0).map_err(|e| {
            Slot {
                map: MAP_SERVICE_VIPS6,
                capacity: self.service_vips6.len(),
                limit: "max_services",
                index: meta.id,
            }
            .refused(e)
        })?;
        // One update of the whole value: the kernel swaps a hash map's element in at
        // once, so a packet sees the old meta or the new one.
        self.services6.insert(key, meta, 0).map_err(|e| {
            Slot {
                map: MAP_SERVICES6,
                capacity: self.services6_capacity(),
                limit: "max_services",
                index: meta.id,
            }
            .refused(e)
        })
    }

    fn remove_service6(&mut self, key: &ServiceKey6) -> WriteResult {
        match self.services6.remove(key) {
            Ok(()) => Ok(()),
            Err(e) if super::flows::is_not_found(&e) => Ok(()),
            Err(e) => Err(DataplaneError::Kernel(
                anyhow::Error::new(e).context(format!("removing {key:?} from {MAP_SERVICES6}")),
            )),
        }
    }

    fn purge_flows(&mut self, ids: &[u32]) -> anyhow::Result<usize> {
        let ids: std::collections::HashSet<u32> = ids.iter().copied().collect();
        let v4 = purge(
            (&mut self.flows, MAP_FLOWS),
            (&mut self.return_flows, MAP_RETURN_FLOWS),
            &ids,
            |n: &NatReturn| n.backend,
        )?;
        let v6 = purge(
            (&mut self.flows6, MAP_FLOWS6),
            (&mut self.return_flows6, MAP_RETURN_FLOWS6),
            &ids,
            |n: &NatReturn6| n.backend,
        )?;
        Ok(v4 + v6)
    }

    fn backend_signals(&self, id: u32) -> anyhow::Result<BackendSignals> {
        let mut total = BackendSignals::default();
        for cpu in self
            .signals
            .get(&id, 0)
            .with_context(|| format!("BACKEND_SIGNALS[{id}]"))?
            .iter()
        {
            total.accumulate(cpu);
        }
        Ok(total)
    }

    fn set_clock(&mut self, seconds: u32) -> anyhow::Result<()> {
        KernelDataplane::set_clock(self, seconds)
    }

    fn expire_flows(&mut self, now: u32, timeouts: &FlowTimeouts) -> anyhow::Result<usize> {
        KernelDataplane::expire_flows(self, now, timeouts)
    }

    fn bump_nexthop_generation(&mut self) -> anyhow::Result<()> {
        KernelDataplane::bump_nexthop_generation(self)
    }

    fn reconcile_active_flows(&mut self, backends: &[u32]) -> anyhow::Result<Vec<(u32, u64)>> {
        KernelDataplane::reconcile_active_flows(self, backends)
    }

    fn ensure_attached(&mut self) -> Vec<LinkChange> {
        KernelDataplane::ensure_attached(self)
    }

    fn interface_states(&self) -> Vec<(String, bool)> {
        KernelDataplane::interface_states(self)
    }
}

/// Deletes every entry of one family's flow tables pinned to a backend of `ids`; returns
/// how many connections (forward entries) were dropped.
fn purge<K, R>(
    (flows, flows_name): (&mut impl EntryMap<K, FlowTarget>, &str),
    (returns, returns_name): (&mut impl EntryMap<K, R>, &str),
    ids: &std::collections::HashSet<u32>,
    backend_of: impl Fn(&R) -> u32,
) -> anyhow::Result<usize> {
    // Keys are collected first: deleting while walking with get_next_key can restart
    // the walk from the beginning. The data path creates no new entries for `ids`
    // meanwhile, since the caller took it out of every ring before.
    let forward: Vec<K> = flows
        .entries()
        .filter(|(_, target)| ids.contains(&target.backend))
        .map(|(key, _)| key)
        .collect();
    let reverse: Vec<K> = returns
        .entries()
        .filter(|(_, nat)| ids.contains(&backend_of(nat)))
        .map(|(key, _)| key)
        .collect();
    let mut purged = 0;
    // As in `expire_flows`: a key may hold another flow by now.
    for key in &forward {
        let ours = |t: &FlowTarget| ids.contains(&t.backend);
        if flows
            .remove_if(key, ours)
            .with_context(|| format!("{flows_name} remove"))?
        {
            purged += 1;
        }
    }
    for key in &reverse {
        let ours = |n: &R| ids.contains(&backend_of(n));
        returns
            .remove_if(key, ours)
            .with_context(|| format!("{returns_name} remove"))?;
    }
    Ok(purged)
}

impl Counters for KernelDataplane {
    fn service_counters(&self, id: u32) -> anyhow::Result<TrafficCounters> {
        KernelDataplane::service_counters(self, id)
    }
    fn backend_counters(&self, id: u32) -> anyhow::Result<TrafficCounters> {
        KernelDataplane::backend_counters(self, id)
    }
    fn active_flows(&self, id: u32) -> anyhow::Result<u64> {
        KernelDataplane::active_flows(self, id)
    }
    fn reason_counters(&self) -> anyhow::Result<Vec<u64>> {
        KernelDataplane::reason_counters(self)
    }
    fn flow_entries(&self) -> u64 {
        KernelDataplane::flow_entries(self)
    }
    fn flow_entries6(&self) -> u64 {
        KernelDataplane::flow_entries6(self)
    }
    fn flow_overflow_entries(&self) -> u64 {
        self.flow_overflow_entries
    }
    fn edge_rule_hits(&self, counter: u32) -> anyhow::Result<u64> {
        self.read_edge_rule_hits(counter)
    }
    fn edge_counters(&self, id: u32) -> anyhow::Result<lb_common::edge::EdgeCounters> {
        self.read_edge_counters(id)
    }
    fn syn_proxy_syns(&self, id: u32) -> anyhow::Result<u64> {
        Ok(self.syn_proxy_syns.get(&id, 0)?.iter().sum())
    }
}
