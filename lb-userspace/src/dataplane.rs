//! The seam between lbd and its data path: [`Dataplane`] is everything the control
//! loop, the API and the metrics do to the kernel's tables (writes, counters, flow
//! maintenance, single-entry lookups). `crate::kernel` implements it over the real
//! maps; `FakeDataplane` (for tests and the `fake` feature only) in memory.
use std::{collections::BTreeMap, net::IpAddr, path::PathBuf, time::Duration};

use lb_common::{
    backend::Backend,
    counters::{BackendSignals, TrafficCounters},
    edge::{EdgeCounters, TokenBucket},
    ipv6::{Addr6, ServiceKey6},
    reverse::{ReverseKey, ReverseTarget},
    reverse6::{ReverseKey6, ReverseTarget6},
    service::{ServiceKey, ServiceMeta},
};

use crate::model::{config::FlowTimeouts, edge::EdgeTables};

#[cfg(any(test, feature = "fake"))]
pub mod fake;
#[cfg(any(test, feature = "fake"))]
pub mod fake_vips;
mod lookups;

#[cfg(any(test, feature = "fake"))]
pub use fake::{Capacity, FailWrites, FakeCounters, FakeDataplane, Write};
#[cfg(any(test, feature = "fake"))]
pub use fake_vips::FakeVips;
pub use lookups::Lookups;

/// Why a table write failed, told apart where the caller answers differently: a full
/// table is a capacity the operator set (`limits.*`), not a fault.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    /// The map has no room for the entry (an id or index beyond its capacity, or no free
    /// slot): nothing of this write was made.
    #[error("map {map} is full: {capacity} entries (sized by limits.{limit})")]
    TableFull {
        map: &'static str,
        capacity: u32,
        /// The config key its capacity comes from.
        limit: &'static str,
    },
    /// Any other failure, with what was being done.
    #[error(transparent)]
    Kernel(#[from] anyhow::Error),
}

/// A table write's result.
pub type WriteResult = Result<(), DataplaneError>;

/// The data path: its tables written by the controller, its counters read, its flows
/// maintained. Counters and lookups are their own traits so that a pure function (rates,
/// `explain`'s decision) can be tested against a double that provides only them.
pub trait Dataplane: Counters + Lookups {
    /// Writes one backend slot (an all-zero value frees it).
    fn set_backend(&mut self, id: u32, backend: &Backend) -> WriteResult;
    /// Writes the address of IPv6 backend `id` (see `lb_common::ipv6`): before its slot
    /// says `FAMILY_IPV6`, so that no packet finds the slot without it. All zero clears it.
    fn set_backend_addr6(&mut self, id: u32, addr: &Addr6) -> WriteResult;
    /// Writes ring entries as (index into the whole ring array, backend id).
    fn set_ring_entries(&mut self, entries: &[(u32, u32)]) -> WriteResult;
    /// Writes policy-table entries as (index into the whole table array, backend id).
    fn set_policy_entries(&mut self, entries: &[(u32, u32)]) -> WriteResult;
    /// Writes address-prefilter words as (word index, bits).
    fn set_filter_words(&mut self, words: &[(u32, u32)]) -> WriteResult;
    /// Creates or replaces a service; replacing flips its live ring slot atomically.
    fn set_service(&mut self, key: &ServiceKey, meta: &ServiceMeta) -> WriteResult;
    fn remove_service(&mut self, key: &ServiceKey) -> WriteResult;
    /// Creates or replaces an IPv6 service: one map update, so replacing flips its live
    /// ring slot atomically too.
    fn set_service6(&mut self, key: &ServiceKey6, meta: &ServiceMeta) -> WriteResult;
    fn remove_service6(&mut self, key: &ServiceKey6) -> WriteResult;
    /// Makes the reverse map (see `lb_common::reverse`) hold exactly `entries`: writes
    /// what is new or changed, deletes what is not listed. Full (more entries than
    /// `limits.max_backends`) is [`DataplaneError::TableFull`].
    fn set_reverse_map(&mut self, entries: &BTreeMap<ReverseKey, ReverseTarget>) -> WriteResult;
    /// The same for the IPv6 reverse map (see `lb_common::reverse6`).
    fn set_reverse_map6(&mut self, entries: &BTreeMap<ReverseKey6, ReverseTarget6>) -> WriteResult;
    /// Makes the edge protection maps hold exactly `tables` (see `lb_common::edge`),
    /// zeroing the rule hit counters `fresh` (slots given to new rules) before the rules
    /// are written.
    fn set_edge_tables(&mut self, tables: &EdgeTables, fresh: &[u32]) -> anyhow::Result<()>;
    /// Forgets what the data path learnt for the services `ids` (their per-service edge
    /// counters and their sources' rate-limit buckets): called when the services are
    /// removed, so a service that later takes one of these ids starts from nothing.
    fn reset_edge_state(&mut self, ids: &[u32]) -> anyhow::Result<()>;
    /// The sources whose SYNs a rate limit dropped, as their buckets hold them now:
    /// (service id, source, bucket), at most `limit`, most dropped first.
    fn limited_sources(&self, limit: usize) -> anyhow::Result<Vec<LimitedSource>>;
    /// Deletes every flow entry, in both directions, pinned to any of the backends `ids`
    /// (one walk of each table, however many ids); returns how many connections
    /// (forward entries) were dropped.
    fn purge_flows(&mut self, ids: &[u32]) -> anyhow::Result<usize>;
    /// The passive health counters of backend `id`, summed over CPUs.
    fn backend_signals(&self, id: u32) -> anyhow::Result<BackendSignals>;

    /// Sets the clock the data path stamps flows with (whole seconds of CLOCK_BOOTTIME).
    fn set_clock(&mut self, seconds: u32) -> anyhow::Result<()>;
    /// Deletes the flows idle longer than their state's timeout at `now` (seconds of the
    /// clock given to [`Self::set_clock`]), both directions. Returns how many.
    fn expire_flows(&mut self, now: u32, timeouts: &FlowTimeouts) -> anyhow::Result<usize>;
    /// Makes every cached next hop stale, so the data path looks routes up again.
    fn bump_nexthop_generation(&mut self) -> anyhow::Result<()>;
    /// Recounts the open flows and corrects the active-flow counts of `backends` that
    /// drifted (see [`crate::model::reconcile`]). Returns the corrections made.
    fn reconcile_active_flows(&mut self, backends: &[u32]) -> anyhow::Result<Vec<(u32, u64)>>;
    /// Attaches the program again to each configured NIC that was re-created or lost it;
    /// returns what changed.
    fn ensure_attached(&mut self) -> Vec<LinkChange>;
    /// Each configured NIC and whether the program is attached to it now.
    fn interface_states(&self) -> Vec<(String, bool)>;
}

/// The VIPs this node announces: host addresses (/32, /128) lbd holds on `lo` for the
/// routing daemon to export (see `crate::model::announce`).
/// `crate::kernel::vip_addresses` implements it over rtnetlink; addresses lbd did not add
/// are neither listed nor removed.
pub trait VipAddresses {
    /// The host addresses lbd added and that are there now.
    fn announced(&self) -> anyhow::Result<Vec<IpAddr>>;
    /// Adds `vip`; already there (added by lbd) is no error.
    fn announce(&mut self, vip: IpAddr) -> anyhow::Result<()>;
    /// Removes `vip` if lbd added it; already gone is no error.
    fn withdraw(&mut self, vip: IpAddr) -> anyhow::Result<()>;
    /// The lifetime the kernel gives each /32 from its next add or renewal (zero: none,
    /// the address stays until removed).
    fn set_lifetime(&mut self, lifetime: Duration);
    /// Starts `vip`'s lifetime again; call only for a VIP just listed by
    /// [`Self::announced`] (the kernel matches the address, not the label).
    fn renew(&mut self, vip: IpAddr) -> anyhow::Result<()>;
}

/// Where counters come from: the kernel maps in `lbd`, a fake in tests.
pub trait Counters {
    fn service_counters(&self, id: u32) -> anyhow::Result<TrafficCounters>;
    fn backend_counters(&self, id: u32) -> anyhow::Result<TrafficCounters>;
    fn active_flows(&self, id: u32) -> anyhow::Result<u64>;
    /// Packets per reason slot, in [`lb_common::counters::REASONS`] order.
    fn reason_counters(&self) -> anyhow::Result<Vec<u64>>;
    /// Forward flow-table entries seen by the last scan (the IPv4 table).
    fn flow_entries(&self) -> u64;
    /// The same of the IPv6 table (`FLOWS6`).
    fn flow_entries6(&self) -> u64;
    /// Of [`Self::flow_entries`], those in the LRU map behind the slots (`FLOWS`): the
    /// connections whose home and buddy slots all hold other flows.
    fn flow_overflow_entries(&self) -> u64;
    /// Matches of the edge rule whose hit counter is `counter`, summed over CPUs.
    fn edge_rule_hits(&self, counter: u32) -> anyhow::Result<u64>;
    /// Service `id`'s edge counters, summed over CPUs.
    fn edge_counters(&self, id: u32) -> anyhow::Result<EdgeCounters>;
    /// SYNs of service `id` handed to the SYN proxy, summed over CPUs.
    fn syn_proxy_syns(&self, id: u32) -> anyhow::Result<u64>;
}

/// A source a SYN rate limit dropped SYNs of: an IPv4 address, or the first address of
/// an IPv6 source prefix (whose bucket it is, see `lb_common::edge::RateKey6`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitedSource {
    pub service: u32,
    pub source: std::net::IpAddr,
    pub bucket: TokenBucket,
}

/// The `limit` sources of `buckets` with the most drops, most first (ties by service,
/// then address), leaving out those never dropped.
pub fn most_limited(
    buckets: impl IntoIterator<Item = LimitedSource>,
    limit: usize,
) -> Vec<LimitedSource> {
    let mut limited: Vec<LimitedSource> = buckets
        .into_iter()
        .filter(|s| s.bucket.dropped > 0)
        .collect();
    limited.sort_by(|a, b| {
        b.bucket
            .dropped
            .cmp(&a.bucket.dropped)
            .then(a.service.cmp(&b.service))
            .then(a.source.cmp(&b.source))
    });
    limited.truncate(limit);
    limited
}

/// What the kernel's maps say is being served, for adopting a pinned data path.
#[derive(Debug, Clone, Default)]
pub struct LiveState {
    pub services: Vec<(ServiceKey, ServiceMeta)>,
    pub services6: Vec<(ServiceKey6, ServiceMeta)>,
    pub backends: Vec<(u32, Backend)>,
    /// The address of each present IPv6 backend, by id.
    pub backend_addrs6: BTreeMap<u32, Addr6>,
}

/// A change [`Dataplane::ensure_attached`] found or made.
#[derive(Debug)]
pub enum LinkChange {
    /// The NIC is gone (its link severed); nothing to attach to until it is back.
    Lost { interface: String, ifindex: u32 },
    /// The NIC is there but its hook runs other programs, or none (listed by id): the
    /// link was detached or replaced. A new link is attached at once.
    Displaced {
        interface: String,
        ifindex: u32,
        /// The program that should run there (`lb_xdp`, or `lb_tc` at tc ingress).
        program: &'static str,
        found: Vec<u32>,
    },
    /// The pin directory was removed (`lbd --detach --force`): lbd stays detached from
    /// every NIC until it is restarted.
    Abandoned {
        interfaces: Vec<String>,
        pin_dir: PathBuf,
    },
    /// The NIC (re)appeared and the program is attached to it again.
    Attached { interface: String, ifindex: u32 },
    /// The NIC is there, but attaching failed; retried at every check, reported once
    /// per NIC incarnation (ifindex).
    Failed {
        interface: String,
        error: anyhow::Error,
    },
}
