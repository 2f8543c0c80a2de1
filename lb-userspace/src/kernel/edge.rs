//! The edge protection maps' writes and reads (see `lb_common::edge`).
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::Context as _;
use aya::maps::{
    lpm_trie::{Key, LpmTrie},
    Array, HashMap, MapData, PerCpuArray, PerCpuValues,
};
use lb_common::{
    edge::{
        edge_prefix_len, DropMemo, EdgeAddr, EdgeCounters, EdgeRule, EdgeService, RateKey4,
        RateKey6, TokenBucket,
    },
    ipv6::addr6_wire,
};

use super::KernelDataplane;
use crate::{
    dataplane::{most_limited, LimitedSource},
    model::edge::{EdgeRuleKey, EdgeTables},
};

/// Handles on the edge maps.
pub struct EdgeMaps {
    pub rules: LpmTrie<MapData, EdgeAddr, EdgeRule>,
    pub rule_hits: PerCpuArray<MapData, u64>,
    pub services: Array<MapData, EdgeService>,
    pub counters: PerCpuArray<MapData, EdgeCounters>,
    pub buckets: HashMap<MapData, RateKey4, TokenBucket>,
    pub buckets6: HashMap<MapData, RateKey6, TokenBucket>,
    pub drop_memo: Array<MapData, DropMemo>,
    pub vips: HashMap<MapData, u32, u32>,
    pub vips6: HashMap<MapData, [u32; 4], u32>,
}

fn trie_key(key: &EdgeRuleKey) -> Key<EdgeAddr> {
    let data = match key.net {
        IpAddr::V4(net) => EdgeAddr::v4(key.service, u32::from_ne_bytes(net.octets())),
        IpAddr::V6(net) => EdgeAddr::v6(key.service, addr6_wire(net.octets())),
    };
    Key::new(edge_prefix_len(key.len.into()), data)
}

fn rule_key(key: &Key<EdgeAddr>) -> EdgeRuleKey {
    let data = key.data();
    let net = if data.is_v6() {
        IpAddr::V6(addr6_of(&data.addr))
    } else {
        IpAddr::V4(Ipv4Addr::from(data.v4_addr().to_ne_bytes()))
    };
    EdgeRuleKey {
        service: u32::from_be(data.service_be),
        net,
        len: (key.prefix_len() - edge_prefix_len(0)) as u8,
    }
}

impl KernelDataplane {
    /// Makes the edge maps hold exactly `tables` (see [`crate::dataplane::Dataplane`]).
    /// The kernel's entries are read each time, so adopted pinned state needs no copy.
    pub(super) fn write_edge_tables(
        &mut self,
        tables: &EdgeTables,
        fresh: &[u32],
    ) -> anyhow::Result<()> {
        let m = &mut self.edge;
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
        for counter in fresh {
            let zero = PerCpuValues::try_from(vec![0u64; cpus]).context("per-CPU zeros")?;
            m.rule_hits
                .set(*counter, zero, 0)
                .with_context(|| format!("zeroing edge rule counter {counter}"))?;
        }
        let present: Vec<(Key<EdgeAddr>, EdgeRule)> = m
            .rules
            .iter()
            .collect::<Result<_, _>>()
            .context("reading the edge rules")?;
        for (key, _) in &present {
            if !tables.rules.contains_key(&rule_key(key)) {
                m.rules
                    .remove(key)
                    .with_context(|| format!("deleting edge rule {:?}", rule_key(key)))?;
            }
        }
        for (key, rule) in &tables.rules {
            let found = present.iter().find(|(k, _)| rule_key(k) == *key);
            if found.is_none_or(|(_, r)| r != rule) {
                m.rules
                    .insert(&trie_key(key), *rule, 0)
                    .with_context(|| format!("writing edge rule {key:?}"))?;
            }
        }
        for id in 0..m.services.len() {
            let wanted = tables.services.get(&id).copied().unwrap_or_default();
            if m.services.get(&id, 0).ok() != Some(wanted) {
                m.services
                    .set(id, wanted, 0)
                    .with_context(|| format!("writing edge settings of service id {id}"))?;
            }
        }
        let vips: Vec<u32> = m
            .vips
            .keys()
            .collect::<Result<_, _>>()
            .context("reading the VIP addresses")?;
        let wanted: Vec<u32> = tables
            .vips
            .iter()
            .map(|v| u32::from_ne_bytes(v.octets()))
            .collect();
        for vip in vips.iter().filter(|v| !wanted.contains(v)) {
            m.vips.remove(vip).context("deleting a VIP address")?;
        }
        for vip in wanted.iter().filter(|v| !vips.contains(v)) {
            m.vips.insert(vip, 0, 0).context("writing a VIP address")?;
        }
        let vips6: Vec<[u32; 4]> = m
            .vips6
            .keys()
            .collect::<Result<_, _>>()
            .context("reading the IPv6 VIP addresses")?;
        let wanted6: Vec<[u32; 4]> = tables
            .vips6
            .iter()
            .map(|v| addr6_wire(v.octets()))
            .collect();
        for vip in vips6.iter().filter(|v| !wanted6.contains(v)) {
            m.vips6
                .remove(vip)
                .context("deleting an IPv6 VIP address")?;
        }
        for vip in wanted6.iter().filter(|v| !vips6.contains(v)) {
            m.vips6
                .insert(vip, 0, 0)
                .context("writing an IPv6 VIP address")?;
        }
        // Remembered drops were decided by the rules written before: forgotten, so a
        // source a rule no longer refuses gets in at once (not after the memo's seconds).
        for slot in 0..m.drop_memo.len() {
            if m.drop_memo
                .get(&slot, 0)
                .is_ok_and(|memo| memo != DropMemo::default())
            {
                m.drop_memo
                    .set(slot, DropMemo::default(), 0)
                    .with_context(|| format!("clearing drop memo slot {slot}"))?;
            }
        }
        Ok(())
    }

    /// See [`crate::dataplane::Dataplane::limited_sources`]: one walk of each family's
    /// buckets.
    pub(super) fn read_limited_sources(&self, limit: usize) -> anyhow::Result<Vec<LimitedSource>> {
        let v4 = each_bucket_once(self.edge.buckets.iter())
            .into_iter()
            .map(|(key, bucket)| LimitedSource {
                service: key.service,
                source: IpAddr::V4(Ipv4Addr::from(key.addr.to_ne_bytes())),
                bucket,
            });
        let v6 = each_bucket_once(self.edge.buckets6.iter())
            .into_iter()
            .map(|(key, bucket)| LimitedSource {
                service: key.service,
                source: IpAddr::V6(addr6_of(&key.prefix)),
                bucket,
            });
        Ok(most_limited(v4.chain(v6), limit))
    }

    /// See [`crate::dataplane::Dataplane::reset_edge_state`]: the services' counters
    /// zeroed on every CPU, then one walk of the buckets and a delete of each of theirs.
    pub(super) fn reset_edge_state(&mut self, ids: &[u32]) -> anyhow::Result<()> {
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
        for id in ids {
            let zero = PerCpuValues::try_from(vec![EdgeCounters::default(); cpus])
                .context("per-CPU zeros")?;
            self.edge
                .counters
                .set(*id, zero, 0)
                .with_context(|| format!("zeroing the edge counters of service id {id}"))?;
        }
        let theirs: Vec<RateKey4> = each_bucket_once(self.edge.buckets.iter())
            .into_iter()
            .map(|(key, _)| key)
            .filter(|key| ids.contains(&key.service))
            .collect();
        for key in &theirs {
            gone(self.edge.buckets.remove(key), key.service)?;
        }
        let theirs6: Vec<RateKey6> = each_bucket_once(self.edge.buckets6.iter())
            .into_iter()
            .map(|(key, _)| key)
            .filter(|key| ids.contains(&key.service))
            .collect();
        for key in &theirs6 {
            gone(self.edge.buckets6.remove(key), key.service)?;
        }
        Ok(())
    }

    pub(super) fn read_edge_rule_hits(&self, counter: u32) -> anyhow::Result<u64> {
        Ok(self.edge.rule_hits.get(&counter, 0)?.iter().sum())
    }

    pub(super) fn read_edge_counters(&self, id: u32) -> anyhow::Result<EdgeCounters> {
        let mut total = EdgeCounters::default();
        for cpu in self.edge.counters.get(&id, 0)?.iter() {
            total.accumulate(cpu);
        }
        Ok(total)
    }
}

/// A bucket's delete: evicted meanwhile is as good as deleted.
fn gone(removed: Result<(), aya::maps::MapError>, service: u32) -> anyhow::Result<()> {
    match removed {
        Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("deleting a bucket of service id {service}")),
    }
}

/// The address of wire-order words `words`.
fn addr6_of(words: &[u32; 4]) -> Ipv6Addr {
    let mut octets = [0u8; 16];
    for (bytes, word) in octets.chunks_exact_mut(4).zip(words) {
        bytes.copy_from_slice(&word.to_ne_bytes());
    }
    Ipv6Addr::from(octets)
}

/// The entries of one walk of the bucket map, each once. An entry evicted during the walk
/// ends it early (what was read stands); so does the first key seen twice: when the key
/// the walk stands on is evicted (a flood evicts all the time) the kernel's next-key
/// restarts from the first, and under a steady flood the walk would never end.
fn each_bucket_once<K: Copy + Eq + std::hash::Hash, E>(
    entries: impl IntoIterator<Item = Result<(K, TokenBucket), E>>,
) -> Vec<(K, TokenBucket)> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for entry in entries {
        let Ok((key, bucket)) = entry else { break };
        if !seen.insert(key) {
            break;
        }
        out.push((key, bucket));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rules_trie_key_reads_back_as_the_rule_in_both_families() {
        for (net, len) in [
            ("192.0.2.0", 24),
            ("2001:db8:66::", 48),
            ("2001:db8::7", 128),
        ] {
            let key = EdgeRuleKey {
                service: 5,
                net: net.parse().unwrap(),
                len,
            };
            assert_eq!(rule_key(&trie_key(&key)), key, "{net}/{len}");
        }
        let v6 = trie_key(&EdgeRuleKey {
            service: 5,
            net: "2001:db8:66::".parse().unwrap(),
            len: 48,
        });
        assert_eq!(v6.prefix_len(), 64 + 48);
        assert_eq!(v6.data().addr[0].to_ne_bytes(), [0x20, 0x01, 0x0d, 0xb8]);
    }

    #[test]
    fn a_walk_that_the_kernel_restarts_forever_ends_at_the_first_key_seen_twice() {
        // What a walk of the bucket map reads while a flood keeps evicting the key it
        // stands on: the same few keys again and again, without end. Cut off far beyond
        // any real map so that a walk without the bound fails here instead of hanging.
        const CUT_OFF: usize = 1_000_000;
        let key = |addr| RateKey4 { service: 2, addr };
        let restarting = [key(1), key(2), key(3)]
            .into_iter()
            .cycle()
            .map(|k| Ok::<_, ()>((k, TokenBucket::default())));
        let mut read = 0;
        let walked = each_bucket_once(restarting.take(CUT_OFF).inspect(|_| read += 1));
        assert!(read < CUT_OFF, "the walk never ended on its own");
        let keys: Vec<u32> = walked.iter().map(|(k, _)| k.addr).collect();
        assert_eq!(keys, [1, 2, 3]);
        assert_eq!(read, 4, "stopped at the first key seen again");
        // An error (the key evicted under the walk) ends it too.
        let failing = [
            Ok((key(1), TokenBucket::default())),
            Err(()),
            Ok((key(2), TokenBucket::default())),
        ];
        assert_eq!(each_bucket_once(failing).len(), 1);
    }
}
