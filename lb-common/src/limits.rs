//! Map names and default capacities. The loader resizes maps from config before load, so
//! these are the defaults the config falls back to; the few hard limits (`MAX_*`) come
//! from field widths the data path packs ids into.

use crate::{
    service_index::service_index_slots,
    syn_cache::{SYN_BACKEND_BITS, SYN_CACHE_WAYS, SYN_SERVICE_AT_BITS},
};

pub const MAP_SERVICE_INDEX: &str = "SERVICE_INDEX";
pub const MAP_BACKENDS: &str = "BACKENDS";
pub const MAP_RING: &str = "RING";
/// IPv4 forward entries of connections whose home and buddy slots (`MAP_FLOW_SLOTS`) all
/// hold others, or beyond the slots' cap: `flow::FlowKey` (client -> VIP) ->
/// `flow::FlowTarget` (LRU, `flow_slots::overflow_entries`).
pub const MAP_FLOWS: &str = "FLOWS";
/// IPv4 reply entries of the connections in `MAP_FLOWS`: `flow::FlowKey` (backend ->
/// client) -> the connection as a slot would hold it, `flow_slots::ConnSlot` (LRU, as
/// many).
pub const MAP_RETURN_FLOWS: &str = "RETURN_FLOWS";
/// IPv4 connections by slot, both directions in one (`flow_slots::ConnSlot`, mmapable
/// array of `flow_slots::flow_slots(limits.flow_table_size)`); `FLOWS` and
/// `RETURN_FLOWS` hold the connections they cannot.
pub const MAP_FLOW_SLOTS: &str = "FLOW_SLOTS";
pub const MAP_SERVICE_STATS: &str = "SERVICE_STATS";
pub const MAP_BACKEND_STATS: &str = "BACKEND_STATS";
pub const MAP_REASONS: &str = "REASONS";
pub const MAP_BACKEND_SIGNALS: &str = "BACKEND_SIGNALS";
pub const MAP_EGRESS: &str = "EGRESS";
/// The programs `lb_xdp` tail-calls (a program array, which each start fills with its
/// own). Pinned like the other maps: the kernel empties a program array once no process
/// and no pin holds it (`bpf_fd_array_map_clear` on the last user reference), which would
/// leave the data path without its reply path whenever `lbd` is not running.
pub const MAP_PROGRAMS: &str = "PROGRAMS";
/// Slot of [`PROGRAM_REPLY`] in [`MAP_PROGRAMS`].
pub const PROGRAMS_SLOT_REPLY: u32 = 0;
/// Slot of [`PROGRAM_EDGE`] in [`MAP_PROGRAMS`].
pub const PROGRAMS_SLOT_EDGE: u32 = 1;
/// Slot of [`PROGRAM_PLACE`] in [`MAP_PROGRAMS`].
pub const PROGRAMS_SLOT_PLACE: u32 = 2;
/// Slot of [`PROGRAM_PROXY`] in [`MAP_PROGRAMS`].
pub const PROGRAMS_SLOT_PROXY: u32 = 3;
/// Slot of [`PROGRAM_DSR`] in [`MAP_PROGRAMS`].
pub const PROGRAMS_SLOT_DSR: u32 = 4;
/// Slot of [`PROGRAM_UDP`] in [`MAP_PROGRAMS`].
pub const PROGRAMS_SLOT_UDP: u32 = 5;
/// Slot of [`PROGRAM_V6`] in [`MAP_PROGRAMS`].
pub const PROGRAMS_SLOT_V6: u32 = 6;
/// Slot of [`PROGRAM_DSR6`] in [`MAP_PROGRAMS`].
pub const PROGRAMS_SLOT_DSR6: u32 = 7;
/// Slot of [`PROGRAM_EDGE6`] in [`MAP_PROGRAMS`].
pub const PROGRAMS_SLOT_EDGE6: u32 = 8;
/// Slot of [`PROGRAM_V6_SYN`] in [`MAP_PROGRAMS`].
pub const PROGRAMS_SLOT_V6_SYN: u32 = 9;
/// Slots of [`MAP_PROGRAMS`].
pub const PROGRAMS_SLOTS: u32 = 10;
pub const MAP_POLICY_TABLE: &str = "POLICY_TABLE";
pub const MAP_RR_CURSOR: &str = "RR_CURSOR";
pub const MAP_ACTIVE_FLOWS: &str = "ACTIVE_FLOWS";
pub const MAP_ACTIVE_ADJUST: &str = "ACTIVE_ADJUST";
pub const MAP_NEXTHOPS: &str = "NEXTHOPS";
pub const MAP_NEXTHOP_GEN: &str = "NEXTHOP_GEN";
pub const MAP_ADDR_FILTER: &str = "ADDR_FILTER";
/// The SYN cache (see `lb_common::syn_cache`).
pub const MAP_SYN_CACHE: &str = "SYN_CACHE";
/// The reverse map, backend address:port -> VIP:port (see `lb_common::reverse`); at most
/// one entry per backend slot, so sized `limits.max_backends`.
pub const MAP_REVERSE: &str = "REVERSE";
/// The reverse map of IPv6 backends (see `lb_common::reverse6`), sized as [`MAP_REVERSE`].
pub const MAP_REVERSE6: &str = "REVERSE6";
/// One-entry array: the controller's clock in whole seconds (CLOCK_BOOTTIME), written
/// every second, stamped on flows by the data path.
pub const MAP_CLOCK: &str = "CLOCK";
/// Per service id, the packet trace's sampling (1 in N, 0 = off); see `lb_common::trace`.
pub const MAP_TRACE_SAMPLE: &str = "TRACE_SAMPLE";
/// The packet trace's ring buffer of `trace::TraceRecord`s.
pub const MAP_TRACE_RING: &str = "TRACE_RING";
/// One-entry per-CPU array: trace records lost to a full ring.
pub const MAP_TRACE_LOST: &str = "TRACE_LOST";
/// The source rules of every service (`lb_common::edge`): a longest-prefix-match trie.
pub const MAP_EDGE_RULES: &str = "EDGE_RULES";
/// Per-CPU hit counts of each rule, `EDGE_RULES_PER_SERVICE` slots per service id.
pub const MAP_EDGE_RULE_HITS: &str = "EDGE_RULE_HITS";
/// Per service id, its `edge::EdgeService` settings.
pub const MAP_EDGE_SERVICES: &str = "EDGE_SERVICES";
/// Per service id, per-CPU `edge::EdgeCounters`.
pub const MAP_EDGE_COUNTERS: &str = "EDGE_COUNTERS";
/// Token buckets of sources (LRU, `limits.rate_limit_sources` entries).
pub const MAP_RATE_BUCKETS: &str = "RATE_BUCKETS";
/// Token buckets of IPv6 source prefixes (`edge::RateKey6`; LRU, also
/// `limits.rate_limit_sources` entries).
pub const MAP_RATE_BUCKETS6: &str = "RATE_BUCKETS6";
/// Recent rule drops by source (`edge::DropMemo`), `edge::EDGE_DROP_MEMO_SLOTS` slots.
pub const MAP_EDGE_DROP_MEMO: &str = "EDGE_DROP_MEMO";
/// VIP addresses (wire order) -> 0: what `unlisted_ports` applies to.
pub const MAP_VIP_ADDRS: &str = "VIP_ADDRS";
/// IPv6 VIP addresses (`ipv6::Addr6`) -> 0: what `unlisted_ports` applies to over IPv6.
pub const MAP_VIP_ADDRS6: &str = "VIP_ADDRS6";
/// Flows opened through the SYN proxy: client -> VIP tuple -> `syn_proxy::SynProxyFlow`
/// (LRU, `limits.flow_table_size` entries).
pub const MAP_SYN_PROXY_FLOWS: &str = "SYN_PROXY_FLOWS";
/// Per service id, per-CPU count of SYNs handed to the SYN proxy (answered with a cookie
/// unless malformed): what `syn_proxy: auto` measures while the proxy is on.
pub const MAP_SYN_PROXY_SYNS: &str = "SYN_PROXY_SYNS";
/// Per backend id, the cached route of a direct-server-return backend
/// (`encap::DsrHop`).
pub const MAP_DSR_HOPS: &str = "DSR_HOPS";
/// Per backend id, the cached route of an IPv6 direct-server-return backend
/// (`encap6::DsrHop6`).
pub const MAP_DSR_HOPS6: &str = "DSR_HOPS6";
/// One-entry per-CPU array: the backend `lb_xdp` placed a packet on, for `lb_dsr`.
pub const MAP_DSR_HAND_OVER: &str = "DSR_HAND_OVER";
/// One-entry per-CPU array: whether `lb_v6` found the tuple without a flow entry before
/// it handed the segment to `lb_v6_syn` (which then does not look again).
pub const MAP_V6_SYN_HAND_OVER: &str = "V6_SYN_HAND_OVER";
/// IPv6 services: `ipv6::ServiceKey6` -> `service::ServiceMeta` (hash map).
pub const MAP_SERVICES6: &str = "SERVICES6";
/// Per backend id, the address of an IPv6 backend (`ipv6::Addr6`; the `Backend` entry
/// at the same id says `FAMILY_IPV6`).
pub const MAP_BACKEND_ADDRS6: &str = "BACKEND_ADDRS6";
/// IPv6 forward flows: `ipv6::FlowKey6` (client -> VIP) -> `flow::FlowTarget`.
pub const MAP_FLOWS6: &str = "FLOWS6";
/// IPv6 return flows: `ipv6::FlowKey6` (backend -> client) -> `ipv6::NatReturn6`.
pub const MAP_RETURN_FLOWS6: &str = "RETURN_FLOWS6";
/// Per service id, the VIP:port of an IPv6 service (`ipv6::ServiceKey6`): what the
/// SYN-ACK of a handshake in the SYN cache is translated to (see `syn_cache6`).
pub const MAP_SERVICE_VIPS6: &str = "SERVICE_VIPS6";
/// Prefix of the maps that are never pinned (a trace belongs to one `lbd`).
pub const MAP_TRACE_PREFIX: &str = "TRACE_";

/// One-entry array holding [`LAYOUT_VERSION`] of the maps pinned beside it.
pub const MAP_LAYOUT: &str = "LB_LAYOUT";

/// Version of the meaning of the shared map layouts. Bump it whenever a key, value or
/// flag changes meaning, even if sizes stay equal: a new `lbd` refuses to adopt pinned
/// maps of another version instead of misreading them, except those from
/// [`OLDEST_ADOPTED_LAYOUT`] on, which this one reads as they are, and which it marks as
/// its own on adopting them, so that the older `lbd` refuses them in turn.
pub const LAYOUT_VERSION: u32 = 21;

/// The oldest pinned layout this `lbd` adopts. Version 21 keeps a connection's two
/// directions in one 64-byte slot instead of a pair of them, so the slots of 19 and 20
/// mean something else.
pub const OLDEST_ADOPTED_LAYOUT: u32 = 21;

/// Whether maps pinned with layout `version` may be adopted.
pub const fn adopts_layout(version: u32) -> bool {
    OLDEST_ADOPTED_LAYOUT <= version && version <= LAYOUT_VERSION
}

/// Read-only globals set by the loader (`EbpfLoader::set_global`).
pub const GLOBAL_HASH_SEED: &str = "LB_HASH_SEED";
pub const GLOBAL_RING_SIZE: &str = "LB_RING_SIZE";
pub const GLOBAL_SYN_CACHE_MASK: &str = "LB_SYN_CACHE_MASK";
pub const GLOBAL_FLOW_SLOT_MASK: &str = "LB_FLOW_SLOT_MASK";
pub const GLOBAL_SERVICE_INDEX_MASK: &str = "LB_SERVICE_INDEX_MASK";
/// The edge settings word (`edge::EDGE_UNLISTED_DROP`), from `unlisted_ports`.
pub const GLOBAL_UNLISTED_PORTS: &str = "LB_UNLISTED_PORTS";
/// The UDP destination port of `gue` (host order), from `dsr.gue_port`.
pub const GLOBAL_GUE_PORT: &str = "LB_GUE_PORT";

/// Slots of the SYN cache for a flow table of `flow_table_size` entries: as many, rounded
/// up to a power of two (the data path masks a hash), at most 2^17 (1 MiB of 8-byte
/// slots). A SYN writes one random slot, and what that costs steps with the cache's size:
/// on the machine of docs/performance.md a SYN costs 80-100 ns net with
/// 1 MiB (about 180 in a few runs, for a reason not found), 80 or 170 ns from one start
/// to the next with 2 MiB, 180 ns with 4 MiB. 2^17 slots keep the chance that a
/// SYN's slot is overwritten before its SYN-ACK (about one backend round trip, 1 ms) at
/// 0.8% under a flood of a million SYNs a second; such a client retransmits its SYN.
pub const fn syn_cache_slots(flow_table_size: u32) -> u32 {
    let n = if flow_table_size > 1 << 17 {
        1 << 17
    } else {
        flow_table_size
    };
    n.next_power_of_two()
}

/// Sets of the SYN cache (of [`SYN_CACHE_WAYS`] slots each) for a flow table of
/// `flow_table_size` entries: [`syn_cache_slots`] of them in all.
pub const fn syn_cache_sets(flow_table_size: u32) -> u32 {
    syn_cache_slots(flow_table_size) / SYN_CACHE_WAYS as u32
}

/// Name of the load balancer's XDP program in the object.
pub const PROGRAM_XDP: &str = "lb_xdp";
/// Name of the program `lb_xdp` tail-calls for a backend's reply that finds no flow entry
/// (see `lb-ebpf/src/to_client_miss.rs`): a program of its own for a stack frame of its own.
pub const PROGRAM_REPLY: &str = "lb_reply";
/// Name of the pass-everything XDP program (benchmark floor, lab veth peers).
pub const PROGRAM_PASS: &str = "lb_pass";
/// Name of the pass-everything tc program (benchmark floor for `lb_tc`).
pub const PROGRAM_PASS_TC: &str = "lb_pass_tc";
/// Name of the program that only looks a TCP frame's tuple up in the flow table
/// (benchmark; lbd never loads it).
pub const PROGRAM_FLOW_PROBE: &str = "lb_flow_probe";
/// Name of the program that only reads a TCP frame's home slot in the flow table
/// (benchmark; lbd never loads it).
pub const PROGRAM_SLOT_READ_PROBE: &str = "lb_slot_read_probe";
/// Name of the program `lb_xdp` tail-calls for a packet without a flow entry to a
/// service with edge rules or limits, and for a packet to a VIP address that no service
/// listens on when such packets are dropped (see `lb_common::edge`).
pub const PROGRAM_EDGE: &str = "lb_edge";
/// Name of the program `lb_edge` tail-calls to place a packet it admitted: `lb_xdp`'s
/// path without the hand-over.
pub const PROGRAM_PLACE: &str = "lb_place";
/// Name of the program of the SYN proxy's handshakes (see `lb_common::syn_proxy`):
/// tail-called by `lb_edge` for a proxied service's SYN or ACK without a flow entry,
/// and by `lb_reply` for a proxied flow's SYN-ACK from its backend.
pub const PROGRAM_PROXY: &str = "lb_proxy";
/// Name of the program `lb_xdp` tail-calls for a packet placed on a direct-server-return
/// backend (wrapped or re-addressed to it, see `lb_common::encap`) and for a packet to a
/// VIP that is not TCP (an ICMP error about a DSR flow is forwarded to its backend).
pub const PROGRAM_DSR: &str = "lb_dsr";
/// Name of the program `lb_xdp` tail-calls for every UDP datagram to a maybe-VIP address
/// or from a maybe-backend: UDP services' both directions (see `lb-ebpf/src/udp.rs`).
pub const PROGRAM_UDP: &str = "lb_udp";
/// Name of the program `lb_xdp` tail-calls for every IPv6 frame to a maybe-VIP address or
/// from a maybe-backend (by the prefilter's bit of `ipv6::fold`): IPv6 TCP and UDP
/// services' both directions (see `lb-ebpf/src/v6.rs`).
pub const PROGRAM_V6: &str = "lb_v6";
/// Name of the program `lb_v6` tail-calls for an IPv6 packet placed on a
/// direct-server-return backend (see `lb-ebpf/src/dsr6.rs`).
pub const PROGRAM_DSR6: &str = "lb_dsr6";
/// Name of the program `lb_v6` tail-calls for an IPv6 packet of a protected service
/// without a flow entry: the edge checks (source rules), which hand an admitted packet
/// back to `lb_v6` (see `lb-ebpf/src/edge6.rs`).
pub const PROGRAM_EDGE6: &str = "lb_edge6";
/// Name of the program `lb_v6` tail-calls for an IPv6 handshake through the SYN cache: a
/// hash-placed service's segment without a live flow entry, and a backend's SYN or RST
/// (see `lb-ebpf/src/v6_syn.rs`).
pub const PROGRAM_V6_SYN: &str = "lb_v6_syn";
/// Name of the load balancer's tc ingress program: IPv4 TCP in NAT mode, for the NICs
/// a config attaches at tc rather than XDP (see `lb-ebpf/src/tc.rs`).
pub const PROGRAM_TC: &str = "lb_tc";

pub const DEFAULT_MAX_SERVICES: u32 = 64;
/// The most services a config may allow: each service's index slot fits the SYN cache's
/// field for it (see `syn_cache::SynEntry`).
pub const MAX_SERVICES: u32 = (1 << SYN_SERVICE_AT_BITS) / 4;
const _: () = assert!(service_index_slots(MAX_SERVICES) <= 1 << SYN_SERVICE_AT_BITS);
/// The most backends a config may allow: every backend id fits the SYN cache's field
/// for it.
pub const MAX_BACKENDS: u32 = 1 << SYN_BACKEND_BITS;
pub const DEFAULT_MAX_BACKENDS: u32 = 4096;
pub const DEFAULT_FLOW_TABLE_SIZE: u32 = 262_144;
pub const DEFAULT_RING_SIZE: u32 = 65_537;
pub const MAX_INTERFACES: u32 = 64;
/// Default `limits.rate_limit_sources`: token buckets (sources x services) kept.
pub const DEFAULT_RATE_LIMIT_SOURCES: u32 = 65_536;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syn_cache_slots_are_a_power_of_two_covering_the_flow_table_up_to_a_cap() {
        assert_eq!(syn_cache_slots(1024), 1024);
        assert_eq!(syn_cache_slots(100_000), 131_072);
        assert_eq!(syn_cache_slots(DEFAULT_FLOW_TABLE_SIZE), 131_072);
        assert_eq!(syn_cache_slots(1 << 21), 1 << 17);
        assert_eq!(syn_cache_slots(u32::MAX), 1 << 17);
        assert_eq!(syn_cache_sets(1024), 512);
        assert_eq!(syn_cache_sets(u32::MAX), 1 << 16);
    }

    #[test]
    fn this_layout_and_the_older_one_it_reads_as_it_is_are_adopted_and_no_other() {
        assert!(adopts_layout(LAYOUT_VERSION));
        assert!(adopts_layout(OLDEST_ADOPTED_LAYOUT));
        assert!(!adopts_layout(OLDEST_ADOPTED_LAYOUT - 1));
        assert!(!adopts_layout(LAYOUT_VERSION + 1));
        assert!(!adopts_layout(0));
    }
}
