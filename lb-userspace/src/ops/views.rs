//! What the admin API answers, as JSON. `lbd` serializes these and `lbctl` parses them
//! back, so both sides share one definition.
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::{
    model::config::{BackendState, Policy, Protocol},
    model::desired::diff::Change,
};

/// `GET /v1/services`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceSummary {
    pub name: String,
    pub vip: IpAddr,
    pub port: u16,
    /// `tcp` or `udp`; absent from an older `lbd`'s answer, whose services are all TCP.
    #[serde(default)]
    pub protocol: Protocol,
    pub policy: Policy,
    pub backends: usize,
    pub draining: usize,
    pub drained_zones: Vec<String>,
    /// What this node's tables map the service's flows to: equal on every node that
    /// places each of its flows on the same backend (48 bits, see
    /// `model::table_digest`). `None` before the data path is programmed.
    #[serde(default)]
    pub table_digest: Option<u64>,
    /// The service's entry of the desired state (48 bits): equal on nodes given the same
    /// service.
    #[serde(default)]
    pub config_digest: Option<u64>,
}

/// `GET /v1/services/{name}/backends` and `GET /v1/backends`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendView {
    pub service: String,
    pub address: IpAddr,
    pub port: u16,
    pub zone: String,
    pub weight: u32,
    pub state: BackendState,
    /// The weight the data path currently uses for this backend (0 while it takes no
    /// new flows: unhealthy, draining, drained zone; fractional during slow start).
    pub effective_weight: f64,
    /// Whether the backend's zone is drained in this service.
    pub zone_drained: bool,
}

/// `GET /v1/zones`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ZoneView {
    pub zone: String,
    /// This LB node's own zone.
    pub local: bool,
    pub backends: usize,
    /// Services that have backends in this zone.
    pub services: Vec<String>,
    /// Services in which this zone is drained.
    pub drained_in: Vec<String>,
}

/// `GET /v1/health`: one entry per backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthView {
    pub service: String,
    pub address: IpAddr,
    pub port: u16,
    pub zone: String,
    /// `healthy`, `unhealthy`, or `unknown` when nothing probes the backend.
    pub state: String,
    /// Result of the last probe (`ok`, `timeout`, ...), when there was one.
    pub last_probe: Option<String>,
    pub latency_ms: Option<f64>,
    /// How long ago lbd applied the last probe result.
    #[serde(default)]
    pub last_probe_age_ms: Option<f64>,
    /// Probes that failed since the backend joined (or lbd started).
    #[serde(default)]
    pub probe_failures: u64,
    pub reason: String,
}

/// Counters of one service, backend or zone.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Counts {
    /// Flows (connections) created since lbd started.
    pub connections: u64,
    pub new_flows_per_sec: f64,
    pub active_flows: u64,
    pub packets_to_backend: u64,
    pub bytes_to_backend: u64,
    pub packets_to_client: u64,
    pub bytes_to_client: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceStats {
    pub service: String,
    #[serde(flatten)]
    pub counts: Counts,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendStats {
    pub service: String,
    pub address: IpAddr,
    pub port: u16,
    pub zone: String,
    pub state: BackendState,
    pub health: String,
    #[serde(flatten)]
    pub counts: Counts,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ZoneStats {
    pub zone: String,
    #[serde(flatten)]
    pub counts: Counts,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReasonCount {
    pub reason: String,
    pub packets: u64,
}

/// `GET /v1/stats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatsView {
    pub node_zone: String,
    pub uptime_secs: u64,
    /// Seconds over which the per-second rates were measured.
    pub rate_interval_secs: f64,
    pub services: Vec<ServiceStats>,
    pub backends: Vec<BackendStats>,
    pub zones: Vec<ZoneStats>,
    /// Data-path actions by reason (`lb_common::counters::REASONS`), non-zero ones.
    pub reasons: Vec<ReasonCount>,
    /// Forward flow entries seen by the last flow-table scan, and the table's capacity.
    pub flow_table_entries: u64,
    pub flow_table_capacity: u32,
    /// The same of the IPv6 flow table (absent from an older lbd's answer: 0).
    #[serde(default)]
    pub flow_table6_entries: u64,
    #[serde(default)]
    pub flow_table6_capacity: u32,
    /// Of `flow_table_entries`, those in the LRU maps behind the slots (whose home and buddy
    /// slots all hold other flows), and those maps' capacity (absent from an older lbd's answer: 0).
    #[serde(default)]
    pub flow_table_overflow_entries: u64,
    #[serde(default)]
    pub flow_table_overflow_capacity: u32,
}

/// Answer of every change: what changed (empty when it was already so).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeResult {
    pub changes: Vec<Change>,
    /// False for a dry run.
    pub applied: bool,
}

/// [`ErrorBody::reason`] of a change refused for want of room in a data-path table (also
/// the `reason` label of `lb_api_changes_refused_total`).
pub const REASON_TABLE_FULL: &str = "table_full";

/// Body of every 4xx/5xx answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    /// What kind of refusal, for scripts, where the status alone does not say it:
    /// `table_full` (HTTP 507).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `GET /v1/services/{service}/filter`: a service's source rules and rate limit, with
/// what each rule matched and what the service refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FilterView {
    pub service: String,
    /// Each rule the data path holds, most specific prefixes deciding.
    pub rules: Vec<RuleView>,
    /// Packets refused because the service has allow rules and none matched.
    pub not_allowed: u64,
    pub rate_limit: Option<crate::model::config::RateLimit>,
    /// SYNs the rate limit dropped.
    pub rate_limited: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleView {
    /// `allow` or `deny`.
    pub verdict: String,
    pub rule: String,
    pub matches: u64,
}

/// `GET /v1/limited`: a source whose SYNs a rate limit dropped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LimitedView {
    pub service: String,
    /// An IPv4 source, or the first address of an IPv6 source prefix (its bucket's).
    pub source: std::net::IpAddr,
    /// SYNs dropped since its bucket was created (an idle source's bucket is evicted
    /// first when the map is full).
    pub dropped: u64,
    pub tokens: u32,
    /// Seconds it stays blocked (`rate_limit.block`), 0 when not blocked.
    pub blocked_secs: u32,
}
