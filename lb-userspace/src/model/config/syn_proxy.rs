//! The SYN proxy key (see docs/edge-protection.md): whether a service's SYNs are
//! answered with SYN cookies by the data path.
use serde::{Deserialize, Serialize};

use super::{collector::Collector, model::ServiceConfig};

/// Whether the data path answers a service's SYNs itself (see `lb_common::syn_proxy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SynProxyMode {
    /// Every SYN goes to a backend.
    #[default]
    Off,
    /// Every SYN is answered with a cookie; a backend sees only proven handshakes.
    On,
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
        assert!(parse(&with("syn_proxy: auto")).is_err(), "no auto mode");
    }
}
