//! The SYN proxy keys (see docs/edge-protection.md): whether a service's SYNs are
//! answered with SYN cookies by the data path, and when `auto` turns that on and off.
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{collector::Collector, duration, model::ServiceConfig};

/// Whether the data path answers a service's SYNs itself (see `lb_common::syn_proxy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SynProxyMode {
    /// Every SYN goes to a backend.
    #[default]
    Off,
    /// Every SYN is answered with a cookie; a backend sees only proven handshakes.
    On,
    /// On while the service's SYN rate is high (see [`SynProxyAuto`]).
    Auto,
}

/// When `syn_proxy: auto` switches: on once the service's SYNs a second (over about a
/// second of counters) exceed `on_above`; off again once they have stayed under
/// `off_below` for `hold`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SynProxyAuto {
    pub on_above: u64,
    pub off_below: u64,
    #[serde(with = "duration")]
    pub hold: Duration,
}

impl Default for SynProxyAuto {
    fn default() -> Self {
        Self {
            on_above: 2000,
            off_below: 500,
            hold: Duration::from_secs(60),
        }
    }
}

/// Checks a service's `syn_proxy`: the proxy must see both directions of every flow,
/// which a tier's node does not (`stateless_return`: replies come back through any node).
pub(super) fn check_syn_proxy(c: &mut Collector, at: &str, s: &ServiceConfig) {
    if s.syn_proxy != SynProxyMode::Off && s.stateless_return {
        c.err(
            format!("{at}.syn_proxy"),
            "needs both directions of each flow on this node, which stateless_return (a \
             tier behind ECMP) does not give",
        );
    }
    let auto = &s.syn_proxy_auto;
    if auto.on_above == 0 {
        c.err(
            format!("{at}.syn_proxy_auto.on_above"),
            "must be at least 1",
        );
    }
    if auto.off_below > auto.on_above {
        c.err(
            format!("{at}.syn_proxy_auto.off_below"),
            format!(
                "{} is above on_above ({}): there would be no hysteresis",
                auto.off_below, auto.on_above
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use crate::model::config::parse;

    fn with(fields: &str) -> String {
        format!(
            "node: {{ zone: az-a }}\ninterfaces: [eth0]\nservices:\n  - {{ name: web, vip: 10.0.0.1, port: 80, {fields} }}\n"
        )
    }

    #[test]
    fn syn_proxy_is_off_unless_asked_and_refused_with_stateless_return() {
        let config = parse(&with("backends: []")).expect("valid");
        assert_eq!(config.services[0].syn_proxy, super::SynProxyMode::Off);
        let config = parse(&with("syn_proxy: on")).expect("valid");
        assert_eq!(config.services[0].syn_proxy, super::SynProxyMode::On);
        let err = parse(&with("syn_proxy: on, stateless_return: true"))
            .expect_err("refused")
            .to_string();
        assert!(
            err.contains("services[0].syn_proxy: needs both directions"),
            "{err}"
        );
        let config =
            parse(&with("syn_proxy: auto, syn_proxy_auto: { on_above: 1000 }")).expect("valid");
        let s = &config.services[0];
        assert_eq!(s.syn_proxy, super::SynProxyMode::Auto);
        assert_eq!(
            (s.syn_proxy_auto.on_above, s.syn_proxy_auto.off_below),
            (1000, 500)
        );
        assert_eq!(s.syn_proxy_auto.hold, std::time::Duration::from_secs(60));
        let err = parse(&with(
            "syn_proxy: auto, syn_proxy_auto: { on_above: 0, off_below: 5 }",
        ))
        .expect_err("refused")
        .to_string();
        assert!(
            err.contains("syn_proxy_auto.on_above: must be at least 1"),
            "{err}"
        );
        assert!(
            err.contains("syn_proxy_auto.off_below: 5 is above on_above (0)"),
            "{err}"
        );
    }
}
