//! The per-service availability policy: health probes, zones, draining, slow start and
//! what to do when no backend is healthy. Every key is optional; the defaults are here
//! and in docs/config.md.
use std::{collections::BTreeMap, fmt, time::Duration};

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

use super::duration;

/// The most results a backend's flap history holds (`health.flap_window` at most).
pub const MAX_FLAP_WINDOW: u32 = 64;

/// How a backend is probed.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    #[serde(rename = "type")]
    pub kind: ProbeType,
    /// Port to probe; the backend's own port when absent.
    pub port: Option<u16>,
    /// Path of the GET (http only); `/` when absent.
    pub path: Option<String>,
    /// Host header (http only); the backend's address when absent.
    pub host: Option<String>,
    /// Statuses that count as healthy (http only); 200-399 when absent.
    pub expect_status: Option<StatusRange>,
    /// The datagram a UDP probe sends (udp only; see [`probe_payload`]); empty when
    /// absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send: Option<String>,
    /// Bytes a UDP probe's reply must hold (udp only); any reply passes when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expect: Option<String>,
    /// Time between probes of one backend (each wait is 90-100% of it, at random).
    #[serde(with = "duration")]
    pub interval: Duration,
    /// A probe without an answer within this time failed.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// Consecutive successes that make a backend healthy.
    pub healthy_threshold: u32,
    /// Consecutive failures that make a backend unhealthy.
    pub unhealthy_threshold: u32,
    /// Share of failed connection attempts (SYNs the backend refused or never answered,
    /// counted by the data path) over the last 10 intervals that ejects a backend before
    /// the probes notice; 0 turns passive ejection off. Unset: see
    /// [`HealthConfig::passive_failure_ratio`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub passive_failure_ratio: Option<f64>,
    /// Connection attempts needed in that window before the ratio is trusted.
    pub passive_min_attempts: u32,
    /// The largest share (percent) of a service's backends that passive signals may hold
    /// ejected at once; at least one backend may always be ejected, but never the last
    /// healthy one. 0: passive signals never eject.
    pub passive_max_ejection_percent: u8,
    /// Probe results looked at for flapping (see `health::flap`); 0 turns damping off.
    pub flap_window: u8,
    /// Flips between passing and failing within `flap_window` results that hold a
    /// backend unhealthy until `flap_window` consecutive probes pass.
    pub flap_flips: u8,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            kind: ProbeType::Tcp,
            port: None,
            path: None,
            host: None,
            expect_status: None,
            send: None,
            expect: None,
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            healthy_threshold: 2,
            unhealthy_threshold: 2,
            passive_failure_ratio: None,
            passive_min_attempts: 20,
            passive_max_ejection_percent: 10,
            flap_window: 10,
            flap_flips: 7,
        }
    }
}

impl HealthConfig {
    pub const DEFAULT_PATH: &str = "/";
    /// `passive_failure_ratio` when unset, on a service that one node serves.
    pub const DEFAULT_PASSIVE_FAILURE_RATIO: f64 = 0.5;

    /// The passive ejection ratio in force. Unset, it is off (0) for a service with
    /// `stateless_return`: behind ECMP a backend's answer comes back through whichever
    /// node the routers pick, so each node sees the SYN-ACKs of only about 1/N of the SYNs
    /// it forwarded and would take healthy backends for failing ones.
    pub fn passive_failure_ratio(&self, stateless_return: bool) -> f64 {
        match self.passive_failure_ratio {
            Some(ratio) => ratio,
            None if stateless_return => 0.0,
            None => Self::DEFAULT_PASSIVE_FAILURE_RATIO,
        }
    }
    pub const DEFAULT_STATUS: StatusRange = StatusRange { min: 200, max: 399 };

    pub fn path(&self) -> &str {
        self.path.as_deref().unwrap_or(Self::DEFAULT_PATH)
    }

    pub fn expect_status(&self) -> StatusRange {
        self.expect_status.unwrap_or(Self::DEFAULT_STATUS)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeType {
    /// A TCP connect: the backend's kernel accepts on the port.
    #[default]
    Tcp,
    /// An HTTP/1.0 GET whose status line must fall in `expect_status`.
    Http,
    /// A datagram (`send`) whose reply must come within the timeout (and hold `expect`);
    /// an ICMP port-unreachable fails it at once.
    Udp,
}

/// The bytes of a UDP probe's `send` or `expect`: `hex:` and pairs of hex digits (for
/// binary protocols such as DNS), or the text itself.
pub fn probe_payload(text: &str) -> Result<Vec<u8>, String> {
    let Some(hex) = text.strip_prefix("hex:") else {
        return Ok(text.as_bytes().to_vec());
    };
    if hex.len() % 2 != 0 {
        return Err(format!("`{text}`: an odd number of hex digits"));
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&hex[i..i + 2], 16)
                .map_err(|_| format!("`{text}`: `{}` is not a hex byte", &hex[i..i + 2]))
        })
        .collect()
}

/// An inclusive range of HTTP status codes, written `200-399` or `200`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusRange {
    pub min: u16,
    pub max: u16,
}

impl StatusRange {
    /// Every status code HTTP has room for (RFC 9110, section 15: 1xx to 5xx): what a
    /// status line may carry and what `expect_status` may ask for.
    pub const HTTP: StatusRange = StatusRange { min: 100, max: 599 };

    pub fn contains(&self, status: u16) -> bool {
        (self.min..=self.max).contains(&status)
    }
}

impl fmt::Display for StatusRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.min == self.max {
            write!(f, "{}", self.min)
        } else {
            write!(f, "{}-{}", self.min, self.max)
        }
    }
}

impl Serialize for StatusRange {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for StatusRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = StatusRange;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a status code or range such as 200 or 200-399")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<StatusRange, E> {
                let code =
                    u16::try_from(v).map_err(|_| E::custom(format!("{v} is not a status")))?;
                Ok(StatusRange {
                    min: code,
                    max: code,
                })
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StatusRange, E> {
                let code = |s: &str| {
                    s.trim().parse::<u16>().map_err(|_| {
                        E::custom(format!(
                            "`{v}` is not a status code or range such as 200-399"
                        ))
                    })
                };
                match v.split_once('-') {
                    Some((min, max)) => Ok(StatusRange {
                        min: code(min)?,
                        max: code(max)?,
                    }),
                    None => self.visit_u64(code(v)? as u64),
                }
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// What new flows do when no backend of the service is eligible.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnAllUnhealthy {
    /// Every active backend gets new flows again, as if all were healthy (probes can be
    /// wrong; dropping everything is rarely better), with a warning.
    #[default]
    FailOpen,
    /// New flows are dropped.
    FailClosed,
}

/// An operator's wish for one backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendState {
    #[default]
    Active,
    /// No new flows; existing ones continue until they end or the deregistration delay
    /// passes.
    Draining,
}

/// Zone weights by zone name; zones not listed weigh 1.
pub type ZoneWeights = BTreeMap<String, f64>;

pub(super) fn default_true() -> bool {
    true
}

pub(super) fn default_failover_threshold() -> f64 {
    0.5
}

pub(super) fn default_deregistration_delay() -> Duration {
    Duration::from_secs(30)
}
