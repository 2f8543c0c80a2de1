//! Whole-config validation: every problem is reported with the path of the field that
//! has it, and all problems are reported at once.
use std::{
    collections::HashSet,
    net::{IpAddr, SocketAddr},
};

use lb_common::{
    limits::{MAX_BACKENDS, MAX_SERVICES},
    service::POLICY_TABLE_SLOTS,
};

use super::{
    collector::{check_name, Collector, ConfigError},
    duration,
    flow_timeouts::{FlowTimeouts, FLOW_TIMEOUT_RANGE},
    model::*,
};

/// Largest ring array the loader will create (entries across all services and slots).
const MAX_RING_ENTRIES: u64 = 1 << 28;
const MAX_RING_SIZE: u32 = 16_777_213;
const MIN_RING_SIZE: u32 = 13;
const MIN_FLOW_TABLE: u32 = 1024;
/// The kernel rounds a hash map's entry count up to a power of two buckets and refuses
/// 2^28 or more (`htab_map_alloc`: the 16-byte buckets must fit in 4 GiB): E2BIG.
const MAX_FLOW_TABLE: u32 = 1 << 27;
/// Linux interface names are at most 15 bytes (IFNAMSIZ - 1).
const MAX_IFNAME: usize = 15;

pub fn validate(config: &Config) -> Result<(), ConfigError> {
    let mut c = Collector(Vec::new());
    check_name(&mut c, "node.zone", &config.node.zone);
    check_cluster(&mut c, &config.cluster);
    check_limits(&mut c, config);
    check_interfaces(&mut c, &config.interfaces);
    super::validate_tc::check_tc_interfaces(&mut c, config);
    check_flow_timeouts(&mut c, &config.flow_timeouts);
    if !config.pin_dir.is_absolute()
        || config
            .pin_dir
            .components()
            .any(|p| matches!(p, std::path::Component::ParentDir))
    {
        c.err(
            "pin_dir",
            format!(
                "{} must be an absolute path without `..`",
                config.pin_dir.display()
            ),
        );
    }
    check_api(&mut c, config);
    super::announce::check_announce(&mut c, &config.announce);
    super::events::check_events(&mut c, &config.events);
    check_services(&mut c, config);
    super::validate_stateless_return::check_stateless_return(&mut c, config);
    if c.0.is_empty() {
        Ok(())
    } else {
        Err(ConfigError { errors: c.0 })
    }
}

fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2u32;
    while (d as u64) * (d as u64) <= n as u64 {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

fn check_cluster(c: &mut Collector, cluster: &ClusterConfig) {
    let size = cluster.ring_size;
    if !(MIN_RING_SIZE..=MAX_RING_SIZE).contains(&size) {
        c.err(
            "cluster.ring_size",
            format!("{size} is out of range {MIN_RING_SIZE}..={MAX_RING_SIZE}"),
        );
    } else if !is_prime(size) {
        c.err(
            "cluster.ring_size",
            format!("{size} is not prime (Maglev needs a prime ring size, e.g. 65537)"),
        );
    }
}

fn check_limits(c: &mut Collector, config: &Config) {
    let l = &config.limits;
    if l.max_services == 0 {
        c.err("limits.max_services", "must be at least 1");
    } else if l.max_services > MAX_SERVICES {
        c.err(
            "limits.max_services",
            format!(
                "{} is more than the most supported, {MAX_SERVICES}",
                l.max_services
            ),
        );
    } else if (config.services.len() as u64) > l.max_services as u64 {
        c.err(
            "limits.max_services",
            format!(
                "{} services are configured but max_services is {}",
                config.services.len(),
                l.max_services
            ),
        );
    }
    let total: usize = config.services.iter().map(|s| s.backends.len()).sum();
    if l.max_backends == 0 {
        c.err("limits.max_backends", "must be at least 1");
    } else if l.max_backends > MAX_BACKENDS {
        c.err(
            "limits.max_backends",
            format!(
                "{} is more than the most supported, {MAX_BACKENDS}",
                l.max_backends
            ),
        );
    } else if total as u64 > l.max_backends as u64 {
        c.err(
            "limits.max_backends",
            format!(
                "{total} backends are configured but max_backends is {}",
                l.max_backends
            ),
        );
    }
    for (key, size) in [
        ("limits.flow_table_size", l.flow_table_size),
        ("limits.flow_table_size6", l.flow_table_size6),
    ] {
        if size < MIN_FLOW_TABLE {
            c.err(key, format!("{size} is below the minimum {MIN_FLOW_TABLE}"));
        } else if size > MAX_FLOW_TABLE {
            c.err(
                key,
                format!("{size} is more than the kernel allows in one hash map, {MAX_FLOW_TABLE}"),
            );
        }
    }
    if l.rate_limit_sources == 0 || l.rate_limit_sources > MAX_FLOW_TABLE {
        c.err(
            "limits.rate_limit_sources",
            format!(
                "{} is out of range 1..={MAX_FLOW_TABLE}",
                l.rate_limit_sources
            ),
        );
    }
    let ring_entries = l.max_services as u64 * 2 * config.cluster.ring_size as u64;
    if ring_entries > MAX_RING_ENTRIES {
        c.err(
            "limits.max_services",
            format!(
                "{} services x 2 slots x ring_size {} = {ring_entries} ring entries, more than {MAX_RING_ENTRIES}",
                l.max_services, config.cluster.ring_size
            ),
        );
    }
}

fn check_flow_timeouts(c: &mut Collector, t: &FlowTimeouts) {
    let (min, max) = FLOW_TIMEOUT_RANGE;
    for (name, value) in [
        ("established", t.established),
        ("closing", t.closing),
        ("closed", t.closed),
        ("syn", t.syn),
        ("udp", t.udp),
    ] {
        if value < min || value > max {
            c.err(
                format!("flow_timeouts.{name}"),
                format!(
                    "{} is out of range {}..={}",
                    duration::format(value),
                    duration::format(min),
                    duration::format(max)
                ),
            );
        }
    }
}

fn check_interfaces(c: &mut Collector, interfaces: &[String]) {
    if interfaces.is_empty() {
        c.err("interfaces", "must name at least one NIC to attach to");
    }
    let mut seen = HashSet::new();
    for (i, name) in interfaces.iter().enumerate() {
        let field = format!("interfaces[{i}]");
        if name.is_empty() || name.len() > MAX_IFNAME {
            c.err(
                &field,
                format!("`{name}` is not a valid interface name (1 to {MAX_IFNAME} bytes)"),
            );
        } else if name.contains(['/', ' ', '\0']) {
            c.err(&field, format!("`{name}` is not a valid interface name"));
        }
        if !seen.insert(name) {
            c.err(&field, format!("`{name}` is listed twice"));
        }
    }
}

fn check_api(c: &mut Collector, config: &Config) {
    let api = &config.api;
    if !api.socket.is_absolute() {
        c.err(
            "api.socket",
            format!("`{}` must be an absolute path", api.socket.display()),
        );
    }
    // Security by default: the admin API is never reachable over TCP without a token.
    if let Some(listen) = api.listen {
        if api.token_file.is_none() {
            c.err(
                "api.listen",
                format!("{listen} needs api.token_file: the TCP listener requires a bearer token"),
            );
        }
        if listen == config.metrics.listen {
            c.err("api.listen", format!("{listen} is also metrics.listen"));
        }
    }
    super::connections::check_connections(c, "api.connections", &api.connections);
    super::connections::check_connections(c, "metrics.connections", &config.metrics.connections);
    if let Some(path) = &api.token_file {
        if !path.is_absolute() {
            c.err(
                "api.token_file",
                format!("`{}` must be an absolute path", path.display()),
            );
        }
    }
    check_registration_tokens(c, api);
    if !config.state_file.is_absolute() {
        c.err(
            "state_file",
            format!("`{}` must be an absolute path", config.state_file.display()),
        );
    }
}

/// Scoped tokens: each in its own absolute file, naming valid services, and only with
/// the TCP listener that reads them.
fn check_registration_tokens(c: &mut Collector, api: &super::ApiConfig) {
    if !api.registration_tokens.is_empty() && api.listen.is_none() {
        c.err(
            "api.registration_tokens",
            "only the TCP listener takes tokens: set api.listen (and api.token_file)",
        );
    }
    let mut files: Vec<&std::path::Path> = api.token_file.iter().map(|p| p.as_path()).collect();
    for (i, token) in api.registration_tokens.iter().enumerate() {
        let at = format!("api.registration_tokens[{i}]");
        if !token.file.is_absolute() {
            c.err(
                format!("{at}.file"),
                format!("`{}` must be an absolute path", token.file.display()),
            );
        }
        if files.contains(&token.file.as_path()) {
            c.err(
                format!("{at}.file"),
                format!(
                    "`{}` is already another token's file: each token is in its own file",
                    token.file.display()
                ),
            );
        }
        files.push(&token.file);
        if token.services.is_empty() {
            c.err(format!("{at}.services"), "must name at least one service");
        }
        for (j, service) in token.services.iter().enumerate() {
            check_name(c, &format!("{at}.services[{j}]"), service);
        }
    }
}

fn check_unicast(c: &mut Collector, field: &str, addr: IpAddr) {
    let broadcast = matches!(addr, IpAddr::V4(v4) if v4.is_broadcast());
    if addr.is_unspecified() || broadcast || addr.is_multicast() || addr.is_loopback() {
        c.err(field, format!("{addr} is not a unicast address"));
    }
    super::validate_ipv6::check_address(c, field, addr);
}

fn check_services(c: &mut Collector, config: &Config) {
    let mut names = HashSet::new();
    let mut listeners = HashSet::new();
    for (i, s) in config.services.iter().enumerate() {
        let at = format!("services[{i}]");
        check_name(c, &format!("{at}.name"), &s.name);
        if !names.insert(s.name.as_str()) {
            c.err(
                format!("{at}.name"),
                format!("service `{}` is defined twice", s.name),
            );
        }
        check_unicast(c, &format!("{at}.vip"), s.vip);
        if s.port == 0 {
            c.err(format!("{at}.port"), "must be 1..=65535");
        }
        if !listeners.insert((s.vip, s.port, s.protocol)) {
            c.err(
                format!("{at}.vip"),
                format!(
                    "{} is already used by another service",
                    SocketAddr::new(s.vip, s.port)
                ),
            );
        }
        check_counts(c, config, &at, s);
        check_backends(c, &at, s);
        super::validate_policy::check_policy(c, &at, s);
        super::validate_edge::check_edge(c, &at, s);
        super::syn_proxy::check_syn_proxy(c, &at, s);
        super::validate_dsr::check_dsr(c, &at, s);
        super::validate_udp::check_udp(c, &at, s);
        super::validate_ipv6::check_ipv6(c, &at, s);
        super::validate_tc::check_tc(c, config, &at, s);
    }
}

/// A service's own fields, without its backends and without other services.
fn check_service(c: &mut Collector, config: &Config, at: &str, s: &ServiceConfig) {
    check_name(c, &format!("{at}.name"), &s.name);
    check_unicast(c, &format!("{at}.vip"), s.vip);
    if s.port == 0 {
        c.err(format!("{at}.port"), "must be 1..=65535");
    }
    check_counts(c, config, at, s);
    super::validate_policy::check_policy(c, at, s);
    super::validate_edge::check_edge(c, at, s);
    super::syn_proxy::check_syn_proxy(c, at, s);
    super::validate_dsr::check_dsr(c, at, s);
    super::validate_udp::check_udp(c, at, s);
    super::validate_ipv6::check_ipv6(c, at, s);
    super::validate_tc::check_tc(c, config, at, s);
    if let Some(scaling) = &s.scaling {
        for (field, message) in scaling.problems() {
            let sep = if field.is_empty() { "" } else { "." };
            c.err(format!("{at}.scaling{sep}{field}"), message);
        }
    }
}

/// How many backends a service may have.
fn check_counts(c: &mut Collector, config: &Config, at: &str, s: &ServiceConfig) {
    // Round robin and least connections keep their backends in a fixed-size table;
    // the hash policies use only the ring.
    let tabled = matches!(s.policy, Policy::RoundRobin | Policy::LeastConn);
    if tabled && s.backends.len() > POLICY_TABLE_SLOTS as usize {
        c.err(
            format!("{at}.backends"),
            format!(
                "{} backends; a {:?} service has at most {POLICY_TABLE_SLOTS}",
                s.backends.len(),
                s.policy
            ),
        );
    }
    if s.backends.len() as u64 >= config.cluster.ring_size as u64 {
        c.err(
            format!("{at}.backends"),
            format!(
                "{} backends need a ring_size larger than that (ideally 100x)",
                s.backends.len()
            ),
        );
    }
}

/// What one change made through the admin API can break, given that the config was
/// valid before it. [`validate`] stays the one check of whole files (start-up,
/// `--check`, SIGHUP) and of declarative applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    /// Anything.
    All,
    /// Service `name` (added, or its own settings changed): its rules, its backends, and
    /// its name and address against the other services'.
    Service(&'a str),
    /// One backend of a service, added or changed: the limits, the service's own rules
    /// (backend counts among them) and that backend's fields.
    Backend(&'a str, IpAddr, u16),
    /// Something was removed, which no rule forbids.
    Removal,
}

/// Checks `config` within `scope`; errors name fields exactly as [`validate`] would.
/// Cost: the number of services, plus the backends of the service concerned for
/// [`Scope::Service`], or one backend for [`Scope::Backend`]; plus every backend once
/// when some service has `stateless_return` (a backend shared between services).
pub fn validate_scoped(config: &Config, scope: Scope) -> Result<(), ConfigError> {
    let mut c = Collector(Vec::new());
    let service = |name: &str| config.services.iter().position(|s| s.name == name);
    match scope {
        Scope::All => return validate(config),
        Scope::Removal => {}
        Scope::Service(name) => {
            check_limits(&mut c, config);
            if let Some(i) = service(name) {
                let s = &config.services[i];
                let at = format!("services[{i}]");
                for (j, other) in config.services.iter().enumerate() {
                    if j == i {
                        continue;
                    }
                    // Reported at the later of the two, as a whole-config check does.
                    let shown = format!("services[{}]", i.max(j));
                    if other.name == s.name {
                        c.err(
                            format!("{shown}.name"),
                            format!("service `{}` is defined twice", s.name),
                        );
                    }
                    if (other.vip, other.port, other.protocol) == (s.vip, s.port, s.protocol) {
                        c.err(
                            format!("{shown}.vip"),
                            format!(
                                "{} is already used by another service",
                                SocketAddr::new(s.vip, s.port)
                            ),
                        );
                    }
                }
                check_service(&mut c, config, &at, s);
                check_backends(&mut c, &at, s);
            }
            super::validate_stateless_return::check_stateless_return(&mut c, config);
        }
        Scope::Backend(name, address, port) => {
            check_limits(&mut c, config);
            if let Some(i) = service(name) {
                let s = &config.services[i];
                let at = format!("services[{i}]");
                check_service(&mut c, config, &at, s);
                if let Some(j) = s
                    .backends
                    .iter()
                    .position(|b| b.address == address && b.port == port)
                {
                    check_backend(&mut c, &format!("{at}.backends[{j}]"), s, &s.backends[j]);
                }
            }
            super::validate_stateless_return::check_stateless_return(&mut c, config);
        }
    }
    if c.0.is_empty() {
        Ok(())
    } else {
        Err(ConfigError { errors: c.0 })
    }
}

fn check_backends(c: &mut Collector, at: &str, s: &ServiceConfig) {
    let mut seen = HashSet::new();
    for (j, b) in s.backends.iter().enumerate() {
        let bt = format!("{at}.backends[{j}]");
        check_backend(c, &bt, s, b);
        if !seen.insert((b.address, b.port)) {
            c.err(
                format!("{bt}.address"),
                format!(
                    "{} is listed twice in this service",
                    SocketAddr::new(b.address, b.port)
                ),
            );
        }
    }
}

fn check_backend(c: &mut Collector, bt: &str, s: &ServiceConfig, b: &BackendConfig) {
    check_unicast(c, &format!("{bt}.address"), b.address);
    if b.address == s.vip {
        c.err(
            format!("{bt}.address"),
            "a backend cannot be the service's own VIP",
        );
    }
    if b.port == 0 {
        c.err(format!("{bt}.port"), "must be 1..=65535");
    }
    super::validate_ipv6::check_backend_family(c, bt, s, b);
    check_name(c, &format!("{bt}.zone"), &b.zone);
    if !(1..=MAX_WEIGHT).contains(&b.weight) {
        c.err(
            format!("{bt}.weight"),
            format!("{} is out of range 1..={MAX_WEIGHT}", b.weight),
        );
    }
}
