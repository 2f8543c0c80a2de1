//! The desired state as the operator writes it (YAML), parsed and then validated as a
//! whole: a file with any error changes nothing.
mod announce;
mod collector;
mod connections;
pub mod duration;
mod edge;
mod events;
mod flow_timeouts;
mod model;
mod policy;
mod reload;
mod scaling;
mod source_net;
mod syn_proxy;
mod token;
mod validate;
mod validate_dsr;
mod validate_edge;
mod validate_ipv6;
mod validate_policy;
mod validate_stateless_return;
mod validate_tc;
mod validate_udp;
mod vip_range;

use std::path::Path;

pub use announce::{AnnounceConfig, Ipv4Net, MAX_HOLD_UP};
pub use collector::{ConfigError, FieldError};
pub use connections::{ConnectionLimits, MAX_CONNECTIONS_CAP};
pub use edge::{RateLimit, SourceFilter, UnlistedPorts, MAX_BLOCK};
pub use events::{EventsConfig, HookConfig, MAX_HOOK_TIMEOUT};
pub use flow_timeouts::*;
pub use model::*;
pub use policy::*;
pub use reload::check_reloadable;
pub use scaling::{ScalingConfig, MAX_SCALING_BACKENDS};
pub use source_net::SourceNet;
pub use syn_proxy::{SynProxyAuto, SynProxyMode};
pub use token::token_in;
pub use validate::{validate, validate_scoped, Scope};
pub use vip_range::VipRange;

/// Parses and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::single(
            "",
            format!("cannot read config file {}: {e}", path.display()),
        )
    })?;
    parse(&text)
}

/// Parses and validates config text.
pub fn parse(text: &str) -> Result<Config, ConfigError> {
    // serde_yaml_ng's message names the path of the offending field and its line
    // ("services[0].port: invalid value ... at line 9 column 11").
    let config: Config =
        serde_yaml_ng::from_str(text).map_err(|e| ConfigError::single("", e.to_string()))?;
    validate(&config)?;
    Ok(config)
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod parse_props;
