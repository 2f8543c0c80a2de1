//! The config file's shape. Every optional key has its default here, and
//! docs/config.md documents the same defaults.
use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use lb_common::limits::{
    DEFAULT_FLOW_TABLE_SIZE, DEFAULT_MAX_BACKENDS, DEFAULT_MAX_SERVICES,
    DEFAULT_RATE_LIMIT_SOURCES, DEFAULT_RING_SIZE,
};
use serde::{Deserialize, Serialize};

use super::{
    announce::AnnounceConfig,
    connections::ConnectionLimits,
    duration,
    edge::{RateLimit, SourceFilter, UnlistedPorts},
    flow_timeouts::FlowTimeouts,
    policy::*,
};

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub node: NodeConfig,
    #[serde(default)]
    pub cluster: ClusterConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    /// NICs to attach to; each handles both directions.
    pub interfaces: Vec<String>,
    #[serde(default)]
    pub xdp_mode: XdpAttachMode,
    /// NICs of `interfaces` that run the tc ingress program (`lb_tc`) instead of XDP:
    /// virtual NICs (veth), where XDP costs more than it saves. `lb_tc` carries IPv4 TCP
    /// services in NAT mode only (see docs/performance.md, The tc hook).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tc_interfaces: Vec<String>,
    /// Where the data path's maps and links are pinned (on bpffs), so that it keeps
    /// forwarding across lbd restarts and upgrades.
    #[serde(default = "default_pin_dir")]
    pub pin_dir: PathBuf,
    /// Idle timeouts of flow entries, by TCP state.
    #[serde(default)]
    pub flow_timeouts: FlowTimeouts,
    #[serde(default)]
    pub api: ApiConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Where `lbd` keeps the services as changed through the admin API; while the file
    /// exists, its services win over this file's (see `crate::model::desired`).
    #[serde(default = "default_state_file")]
    pub state_file: PathBuf,
    /// Which VIPs lbd announces to the routers (by holding their /32 on `lo`), and when.
    #[serde(default)]
    pub announce: AnnounceConfig,
    /// Packets for a VIP address on a port or protocol no service listens on.
    #[serde(default)]
    pub unlisted_ports: UnlistedPorts,
    /// What lbd does with its lifecycle events besides streaming them (a hook).
    #[serde(default, skip_serializing_if = "is_default")]
    pub events: super::EventsConfig,
    #[serde(default)]
    pub services: Vec<ServiceConfig>,
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

fn default_state_file() -> PathBuf {
    PathBuf::from("/var/lib/lbd/state.yaml")
}

/// The admin API: always on a unix socket (owner-only); on TCP only with a bearer token.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    pub socket: PathBuf,
    /// Optional TCP listener; refused by validation without `token_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// File holding the operator's bearer token, which may do everything on TCP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// Tokens that may only add, drain and remove backends of the services they name.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub registration_tokens: Vec<RegistrationToken>,
    /// Per listener: the unix socket and the TCP listener each get these.
    pub connections: ConnectionLimits,
}

/// A bearer token for the TCP listener scoped to the backends of some services (see
/// `crate::ops::api::scope`): what a backend VM holds to register itself.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrationToken {
    /// The file holding the token (owner-only, like `token_file`).
    pub file: PathBuf,
    /// The services whose backends it may add, drain and remove.
    pub services: Vec<String>,
}

/// Default path of the admin socket, also `lbctl`'s default.
pub const DEFAULT_API_SOCKET: &str = "/run/lbd/lbd.sock";

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            socket: PathBuf::from(DEFAULT_API_SOCKET),
            listen: None,
            token_file: None,
            registration_tokens: Vec::new(),
            connections: ConnectionLimits::default(),
        }
    }
}

/// The Prometheus endpoint (`/metrics`, `/healthz`, `/readyz`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    pub listen: SocketAddr,
    pub connections: ConnectionLimits,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
            connections: ConnectionLimits::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// The availability zone this LB node runs in.
    pub zone: String,
}

/// Settings that must be identical on every LB node behind one ECMP router, so that all
/// of them place a flow on the same backend.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Seed of the flow hash.
    pub hash_seed: u32,
    /// Entries per Maglev ring; must be prime.
    pub ring_size: u32,
    /// UDP destination port of `mode: gue` services' packets, which the backends'
    /// `lb-decap` listens for.
    pub gue_port: u16,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            hash_seed: 0x4c42_5844,
            ring_size: DEFAULT_RING_SIZE,
            gue_port: lb_common::encap::DEFAULT_GUE_PORT,
        }
    }
}

/// Capacities of the kernel maps, fixed when the data path is loaded.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub max_services: u32,
    pub max_backends: u32,
    /// Entries in each flow table (one per direction); the LRU evicts beyond this.
    pub flow_table_size: u32,
    /// Entries in each IPv6 flow table: preallocated like the IPv4 ones, so sized apart
    /// (an IPv4-only node should not pay for a large IPv6 table).
    pub flow_table_size6: u32,
    /// Token buckets of the SYN rate limits (one per source and service); the least
    /// recently used is evicted beyond this.
    pub rate_limit_sources: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_services: DEFAULT_MAX_SERVICES,
            max_backends: DEFAULT_MAX_BACKENDS,
            flow_table_size: DEFAULT_FLOW_TABLE_SIZE,
            flow_table_size6: DEFAULT_FLOW_TABLE_SIZE6,
            rate_limit_sources: DEFAULT_RATE_LIMIT_SOURCES,
        }
    }
}

/// Default `limits.flow_table_size6`: a quarter of the IPv4 tables' default. The IPv6 LRU
/// maps are preallocated, 280 bytes a flow for the pair with their 40-byte keys, so the
/// IPv4 default would cost 73.4 MB on every node, IPv6 or not; 65,536 costs 18.4 MB
/// (measured, docs/ipv6.md).
pub const DEFAULT_FLOW_TABLE_SIZE6: u32 = 65_536;

/// How XDP is attached: `native` (driver), `generic` (skb), or `auto` (native, falling
/// back to generic where the driver has no XDP support).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum XdpAttachMode {
    #[default]
    Auto,
    Native,
    Generic,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    pub name: String,
    /// IPv4 or IPv6 (see docs/ipv6.md for what an IPv6 service may use).
    pub vip: IpAddr,
    pub port: u16,
    #[serde(default)]
    pub protocol: Protocol,
    #[serde(default)]
    pub mode: ForwardingMode,
    #[serde(default)]
    pub policy: Policy,
    #[serde(default)]
    pub backends: Vec<BackendConfig>,
    #[serde(default)]
    pub health: HealthConfig,
    /// On: healthy backends of every zone share new flows by weight. Off: only the local
    /// zone's, until its healthy share falls under `zone_failover_threshold`.
    #[serde(default = "default_true")]
    pub cross_zone: bool,
    #[serde(default)]
    pub zone_weights: ZoneWeights,
    /// With cross_zone off: the local zone's healthy share of configured weight under
    /// which new flows spill to every zone.
    #[serde(default = "default_failover_threshold")]
    pub zone_failover_threshold: f64,
    /// Zones whose backends take no new flows (a zonal shift).
    #[serde(default)]
    pub drained_zones: Vec<String>,
    /// How long flows of a draining or removed backend may continue before their entries
    /// are purged.
    #[serde(default = "default_deregistration_delay", with = "duration")]
    pub deregistration_delay: Duration,
    /// Window over which a backend that becomes healthy ramps up to its full weight; 0s
    /// is off.
    #[serde(default, with = "duration")]
    pub slow_start: Duration,
    #[serde(default)]
    pub on_all_unhealthy: OnAllUnhealthy,
    /// On: a backend's reply that this node holds no state for (a connection opened
    /// through another node of an ECMP tier) is translated by the reverse map, backend
    /// address:port -> VIP:port, so any node translates any reply. Each backend
    /// address:port of such a service may serve no other service.
    #[serde(default)]
    pub stateless_return: bool,
    /// Source rules for connections without a flow entry (see docs/edge-protection.md).
    #[serde(default, skip_serializing_if = "SourceFilter::is_empty")]
    pub filter: SourceFilter,
    /// Per-source SYN rate limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// Whether the data path answers SYNs with cookies (see docs/edge-protection.md).
    #[serde(default, skip_serializing_if = "is_off")]
    pub syn_proxy: super::SynProxyMode,
    /// When `syn_proxy: auto` switches.
    #[serde(default, skip_serializing_if = "is_default_auto")]
    pub syn_proxy_auto: super::SynProxyAuto,
    /// Target tracking: the desired backend count exported for an autoscaler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling: Option<super::ScalingConfig>,
}

fn is_off(mode: &super::SynProxyMode) -> bool {
    *mode == super::SynProxyMode::Off
}

fn is_default_auto(auto: &super::SynProxyAuto) -> bool {
    *auto == super::SynProxyAuto::default()
}

impl ServiceConfig {
    /// The weight of `zone`: its entry in `zone_weights`, else 1.
    pub fn zone_weight(&self, zone: &str) -> f64 {
        self.zone_weights.get(zone).copied().unwrap_or(1.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    #[default]
    Tcp,
    /// NAT only, `maglev` or `source_hash` (see docs/udp.md).
    Udp,
}

impl Protocol {
    /// The name of the protocol as the config spells it.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ForwardingMode {
    /// Destination rewritten to the backend, replies rewritten back: the node is the
    /// backends' gateway and carries both directions.
    #[default]
    Nat,
    /// Direct server return, only the destination MAC changed: backends on the node's
    /// own segment, holding the VIP on `lo` (see docs/dsr.md).
    DsrL2,
    /// Direct server return in an outer IPv4 header to the backend.
    Ipip,
    /// Direct server return in outer IPv4 and UDP headers (GUE variant 1) to the backend,
    /// UDP port `cluster.gue_port`.
    Gue,
}

impl ForwardingMode {
    /// Whether backends answer clients directly (the node sees one direction).
    pub fn is_dsr(self) -> bool {
        self != ForwardingMode::Nat
    }

    /// The name of the mode as the config spells it.
    pub fn name(self) -> &'static str {
        match self {
            ForwardingMode::Nat => "nat",
            ForwardingMode::DsrL2 => "dsr_l2",
            ForwardingMode::Ipip => "ipip",
            ForwardingMode::Gue => "gue",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Weighted Maglev consistent hashing of the whole flow tuple.
    #[default]
    Maglev,
    /// Weighted round robin.
    RoundRobin,
    /// Fewest active flows relative to weight (power of two choices).
    LeastConn,
    /// Consistent hashing of the client address only.
    SourceHash,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// Of the VIP's family.
    pub address: IpAddr,
    pub port: u16,
    pub zone: String,
    #[serde(default = "default_weight")]
    pub weight: u32,
    #[serde(default)]
    pub state: BackendState,
}

/// Default `pin_dir`, also `lbd --detach`'s without a config.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/lbd";

fn default_pin_dir() -> PathBuf {
    PathBuf::from(DEFAULT_PIN_DIR)
}

fn default_weight() -> u32 {
    1
}

/// Highest accepted backend weight.
pub const MAX_WEIGHT: u32 = 1000;
