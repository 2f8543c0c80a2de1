//! Flow-table maintenance: the clock flows are stamped with, expiry of idle flows, the
//! next-hop generation, and active-flow counts reconciled with the table.
use anyhow::Context as _;
use aya::{
    maps::{HashMap, IterableMap, MapData, MapError},
    Pod,
};
use lb_common::{
    flow::{FlowKey, FlowTarget, NatReturn, FLOW_F_CLOSED, FLOW_F_COUNTED},
    ipv6::FlowKey6,
    limits::*,
};

use super::{key_sketch::KeySketch, KernelDataplane};
use crate::{
    model::ageing,
    model::config::FlowTimeouts,
    model::reconcile::{self, Observed},
};

/// Seconds of the flow clock between two sweeps of the slots for orphaned reply entries
/// and stale buddy and LRU counts.
pub const SLOT_SWEEP_EVERY_SECS: u32 = 20;

impl KernelDataplane {
    /// Sets the clock the data path stamps on flows (whole seconds).
    pub fn set_clock(&mut self, seconds: u32) -> anyhow::Result<()> {
        self.clock.set(0, seconds, 0).context("CLOCK")
    }

    /// Deletes the flows idle longer than their state's timeout at `now` (seconds of the
    /// clock given to [`Self::set_clock`]), both directions, of both families. Returns
    /// how many.
    pub fn expire_flows(&mut self, now: u32, timeouts: &FlowTimeouts) -> anyhow::Result<usize> {
        let backends = &self.backends;
        let v4 = expire(
            (&mut self.flows, MAP_FLOWS),
            (&mut self.return_flows, MAP_RETURN_FLOWS),
            now,
            timeouts,
            |key: &FlowKey, target| {
                let backend = backends.get(&target.backend, 0).ok()?;
                Some(key.reply_from(backend.addr, backend.port))
            },
        )?;
        let addrs6 = &self.backend_addrs6;
        let v6 = expire(
            (&mut self.flows6, MAP_FLOWS6),
            (&mut self.return_flows6, MAP_RETURN_FLOWS6),
            now,
            timeouts,
            |key: &FlowKey6, target| {
                let backend = backends.get(&target.backend, 0).ok()?;
                Some(FlowKey6 {
                    src_addr: addrs6.get(&target.backend, 0).ok()?,
                    dst_addr: key.src_addr,
                    src_port: backend.port,
                    dst_port: key.src_port,
                    ..*key
                })
            },
        )?;
        // The slots' own upkeep walks every slot whatever it holds, so it runs less often
        // than expiry: an orphaned reply entry or a stale count only costs a buddy read or
        // an LRU lookup until then.
        if self
            .last_slot_sweep
            .is_none_or(|at| now.wrapping_sub(at) >= SLOT_SWEEP_EVERY_SECS)
        {
            self.last_slot_sweep = Some(now);
            self.sweep_slots()?;
        }
        Ok(v4 + v6)
    }

    /// The slots' upkeep: reply entries whose forward entry is gone removed, and the buddy
    /// and LRU counts of homes whose entries there are gone set or cleared, so that their
    /// misses skip the buddy reads and the LRU lookups again. A failed removal is logged
    /// and the counts are still set.
    pub fn sweep_slots(&mut self) -> anyhow::Result<()> {
        if let Err(e) = self.remove_orphan_replies() {
            log::warn!("removing orphaned reply entries: {e:#}");
        }
        self.flows.clear_overflow_counts(&self.return_flows);
        Ok(())
    }

    /// Removes the reply entries of `RETURN_FLOWS` whose forward entry is not in `FLOWS`:
    /// evicted from it apart from them, or their tuple's next connection, which took a
    /// slot since (the slot serves its replies; the entry is the connection before). The
    /// LRU map would evict them in time, but until then each keeps its home counting
    /// entries in the LRU maps, so that the home's misses look there and its new
    /// connections look in `FLOWS` before they take an empty slot. `FLOWS` is walked
    /// first into a sketch of its keys (a byte a key), then `RETURN_FLOWS`; an entry whose
    /// forward key the sketch does not have is looked up in `FLOWS` once more just before
    /// it is removed, so that a connection recorded there since the walk keeps its reply
    /// entry. Returns how many.
    fn remove_orphan_replies(&mut self) -> anyhow::Result<usize> {
        let capacity = IterableMap::map(self.flows.overflow())
            .info()?
            .max_entries() as usize;
        let mut forwards = KeySketch::with_capacity(capacity);
        for entry in super::batch::entries(self.flows.overflow()) {
            // A walk that fails part-way would make live connections look orphaned.
            let (key, _) = entry.context("walking FLOWS")?;
            forwards.insert(&key);
        }
        let mut orphans: Vec<(FlowKey, NatReturn)> = Vec::new();
        for (key, nat) in self.return_flows.entries() {
            let forward = key.forward_of_reply(nat.vip, nat.vport);
            if !forwards.may_contain(&forward) {
                orphans.push((key, nat));
            }
        }
        let mut removed = 0;
        for (key, nat) in &orphans {
            let forward = key.forward_of_reply(nat.vip, nat.vport);
            if self
                .flows
                .in_overflow(&forward)
                .context("FLOWS lookup")?
                .is_some()
            {
                continue;
            }
            // Only the entry seen, route and all: a new connection may have written a
            // fresh one under the tuple meanwhile.
            if EntryMap::remove_if(&mut self.return_flows, key, |now| now == nat)
                .context("RETURN_FLOWS remove")?
            {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Makes every cached next hop stale, so the data path looks routes up again: a
    /// changed route or neighbour takes effect within one call's interval.
    pub fn bump_nexthop_generation(&mut self) -> anyhow::Result<()> {
        let current = self.nexthop_gen.get(&0, 0).context("NEXTHOP_GEN")?;
        self.nexthop_gen
            .set(0, current.wrapping_add(1), 0)
            .context("NEXTHOP_GEN")
    }

    /// Active flows of a backend: counted by the data path, less what the reconciler
    /// found ended unseen.
    pub fn active_flows(&self, id: u32) -> anyhow::Result<u64> {
        let counted = self.active_flows.get(&id, 0)?;
        let adjust = self.active_adjust.get(&id, 0)?;
        Ok(lb_common::counters::active_flows(counted, adjust))
    }

    /// Recounts the open flows in the flow table and corrects the active-flow counts of
    /// `backends` that drifted (see [`crate::model::reconcile`]). Returns the corrections made.
    pub fn reconcile_active_flows(&mut self, backends: &[u32]) -> anyhow::Result<Vec<(u32, u64)>> {
        let read = |dp: &Self| -> anyhow::Result<Vec<u64>> {
            backends
                .iter()
                .map(|id| Ok(dp.active_flows.get(id, 0)?))
                .collect()
        };
        let before = read(self)?;
        let mut open: std::collections::HashMap<u32, u64> = std::collections::HashMap::new();
        let mut entries = 0;
        let mut count = |target: FlowTarget| {
            if target.state & FLOW_F_COUNTED != 0 && target.state & FLOW_F_CLOSED == 0 {
                *open.entry(target.backend).or_default() += 1;
            }
        };
        for (_, target) in self.flows.slot_entries() {
            entries += 1;
            count(target);
        }
        let mut overflow = 0;
        // A walk that ended early would undercount: no corrections from it.
        for entry in super::batch::entries(self.flows.overflow()) {
            let (_, target) = entry.context("walking FLOWS")?;
            overflow += 1;
            count(target);
        }
        entries += overflow;
        // Backend ids are shared by both families: an IPv6 flow counts for its backend
        // alike.
        let mut entries6 = 0;
        for entry in super::batch::entries(&self.flows6) {
            let (_, target) = entry.context("walking FLOWS6")?;
            entries6 += 1;
            count(target);
        }
        self.flow_entries = entries;
        self.flow_overflow_entries = overflow;
        self.flow_entries6 = entries6;
        let after = read(self)?;
        let observed: Vec<Observed> = backends
            .iter()
            .zip(before.iter().zip(&after))
            .map(|(id, (b, a))| {
                Ok(Observed {
                    id: *id,
                    counted_before: *b,
                    counted_after: *a,
                    adjust: self.active_adjust.get(id, 0)?,
                    open_in_table: open.get(id).copied().unwrap_or(0),
                })
            })
            .collect::<anyhow::Result<_>>()?;
        let fixes = reconcile::corrections(&observed);
        for (id, adjust) in &fixes {
            self.active_adjust
                .set(*id, adjust, 0)
                .with_context(|| format!("ACTIVE_ADJUST[{id}]"))?;
        }
        Ok(fixes)
    }

    /// Forward flow entries seen by the last [`Self::reconcile_active_flows`] scan.
    pub fn flow_entries(&self) -> u64 {
        self.flow_entries
    }

    /// The same of the IPv6 table.
    pub fn flow_entries6(&self) -> u64 {
        self.flow_entries6
    }
}

/// What the flow walks need of a flow map: an LRU map, or a slotted table
/// ([`super::flow_table::FlowTable`]).
pub(super) trait EntryMap<K, V> {
    /// Every entry readable now, streamed (a table may hold millions).
    fn entries(&self) -> Box<dyn Iterator<Item = (K, V)> + '_>;
    /// Deletes `key`'s entry if there is one and it `qualifies` now: keys collected by a
    /// walk may be seconds old, and by then a client reusing the tuple may have put a new
    /// flow under the same key, which must not be deleted with the old one. Whether one
    /// was deleted (the LRU may have evicted it meanwhile).
    fn remove_if(&mut self, key: &K, qualifies: impl Fn(&V) -> bool) -> Result<bool, MapError>;
}

impl<K: Pod, V: Pod> EntryMap<K, V> for HashMap<MapData, K, V> {
    fn entries(&self) -> Box<dyn Iterator<Item = (K, V)> + '_> {
        Box::new(super::batch::entries(self).filter_map(walked))
    }

    fn remove_if(&mut self, key: &K, qualifies: impl Fn(&V) -> bool) -> Result<bool, MapError> {
        match self.get(key, 0) {
            Ok(value) if qualifies(&value) => {}
            Ok(_) => return Ok(false),
            Err(e) if is_not_found(&e) => return Ok(false),
            Err(e) => return Err(e),
        }
        match self.remove(key) {
            Ok(()) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// [`KernelDataplane::expire_flows`] for one family's tables: `reverse_of` gives the
/// return entry's key of a forward entry (`None`: its backend slot cannot be read).
fn expire<K, R>(
    (flows, flows_name): (&mut impl EntryMap<K, FlowTarget>, &str),
    (returns, returns_name): (&mut impl EntryMap<K, R>, &str),
    now: u32,
    timeouts: &FlowTimeouts,
    reverse_of: impl Fn(&K, &FlowTarget) -> Option<K>,
) -> anyhow::Result<usize> {
    // Entries are collected first: deleting while walking can restart the walk.
    let expired: Vec<(K, FlowTarget)> = flows
        .entries()
        .filter(|(_, target)| ageing::expired(target, now, timeouts))
        .collect();
    let mut removed = 0;
    for (key, target) in &expired {
        // Only an entry still expired now: a SYN on a closed entry may have replaced it
        // with a live connection's since the walk.
        let still = |t: &FlowTarget| ageing::expired(t, now, timeouts);
        if !flows
            .remove_if(key, still)
            .with_context(|| format!("{flows_name} remove"))?
        {
            continue;
        }
        removed += 1;
        if let Some(reverse) = reverse_of(key, target) {
            returns
                .remove_if(&reverse, |_| true)
                .with_context(|| format!("{returns_name} remove"))?;
        }
    }
    Ok(removed)
}

/// An entry of a walk, or `None` for the error that ended it (logged: the walk saw only
/// the entries before it, and the next walk tries again).
pub(super) fn walked<T>(entry: Result<T, MapError>) -> Option<T> {
    entry
        .map_err(|e| log::warn!("a walk of a flow map ended early: {e}"))
        .ok()
}

/// A delete of a key that is not there (ENOENT), e.g. one the LRU evicted.
pub(super) fn is_not_found(e: &MapError) -> bool {
    match e {
        MapError::KeyNotFound => true,
        MapError::SyscallError(e) => e.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}
