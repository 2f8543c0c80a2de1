//! The admin API's changes as pure functions over the desired state: each takes the
//! current [`Config`] and returns the next one, validated in what the change can break
//! (see [`Scope`]), or an error that says what is wrong. Nothing here touches a file, a socket or the kernel, so every rule
//! is tested on the host; the server only serializes, persists and applies the result.
use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    str::FromStr,
};

use serde::{Deserialize, Serialize};

use crate::model::config::{
    validate_scoped, BackendConfig, BackendState, Config, ConfigError, Scope, ServiceConfig,
    SourceFilter, SourceNet,
};

/// A backend's identity within a service: `ADDRESS:PORT`, an IPv6 address in brackets
/// (`[2001:db8::11]:8080`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendAddr {
    pub address: IpAddr,
    pub port: u16,
}

impl fmt::Display for BackendAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", SocketAddr::new(self.address, self.port))
    }
}

impl FromStr for BackendAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (address, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("`{s}` is not ADDRESS:PORT"))?;
        let address = match address.strip_prefix('[') {
            Some(inner) => inner
                .strip_suffix(']')
                .and_then(|a| a.parse::<std::net::Ipv6Addr>().ok())
                .map(IpAddr::V6)
                .ok_or_else(|| format!("`{address}` is not an IPv6 address in brackets"))?,
            None if address.contains(':') => {
                return Err(format!(
                    "`{s}`: write an IPv6 address in brackets, as in [2001:db8::11]:8080"
                ))
            }
            None => address
                .parse()
                .map_err(|_| format!("`{address}` is not an IPv4 address"))?,
        };
        let port = port
            .parse()
            .map_err(|_| format!("`{port}` is not a port number"))?;
        Ok(Self { address, port })
    }
}

impl From<&BackendConfig> for BackendAddr {
    fn from(b: &BackendConfig) -> Self {
        Self {
            address: b.address,
            port: b.port,
        }
    }
}

/// One change an operator asks for.
#[expect(
    clippy::large_enum_variant,
    reason = "one is built per API request and never stored in bulk: its size does not matter"
)]
#[derive(Debug, Clone, PartialEq)]
pub enum Edit {
    AddService(ServiceConfig),
    RemoveService(String),
    AddBackend {
        service: String,
        backend: BackendConfig,
    },
    RemoveBackend {
        service: String,
        backend: BackendAddr,
    },
    SetBackendState {
        service: String,
        backend: BackendAddr,
        state: BackendState,
    },
    SetWeight {
        service: String,
        backend: BackendAddr,
        weight: u32,
    },
    /// Drains (or undrains) `zone` in `service`, or in every service when `None`.
    SetZoneDrained {
        zone: String,
        service: Option<String>,
        drained: bool,
    },
    /// Adds or removes one source rule of `service` (see `SourceFilter`). A change that
    /// takes the service's last allow rule away opens it to every source, so it needs
    /// `open` ([`EditError::WouldOpen`] otherwise).
    SetFilterRule {
        service: String,
        rule: FilterEdit,
        open: bool,
    },
    /// Replaces every service (declarative apply).
    ReplaceServices(Vec<ServiceConfig>),
}

/// One change to a service's source rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterEdit {
    /// Lists the prefix as allowed (taking it off the deny list).
    Allow(SourceNet),
    /// Lists the prefix as denied (taking it off the allow list).
    Deny(SourceNet),
    /// Takes the prefix off both lists.
    Remove(SourceNet),
}

impl Edit {
    /// The one backend this edit changes, if it changes nothing else.
    pub fn backend(&self) -> Option<(&str, BackendAddr)> {
        match self {
            Edit::AddBackend { service, backend } => Some((service, backend.into())),
            Edit::RemoveBackend { service, backend }
            | Edit::SetBackendState {
                service, backend, ..
            }
            | Edit::SetWeight {
                service, backend, ..
            } => Some((service, *backend)),
            _ => None,
        }
    }
}

/// Why a change was refused; the server maps each kind to an HTTP status.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EditError {
    #[error("service `{0}` does not exist")]
    UnknownService(String),
    #[error("service `{service}` has no backend {backend}")]
    UnknownBackend {
        service: String,
        backend: BackendAddr,
    },
    #[error("zone `{0}` has no backend in {1}")]
    UnknownZone(String, String),
    #[error("service `{0}` has no rule for {1}")]
    UnknownRule(String, SourceNet),
    /// The change would take the service's last allow rule away, admitting every source.
    #[error(
        "{1} is the last allow rule of service `{0}`: without it every source may connect; \
         to open the service, repeat with --open (API: \"open\": true)"
    )]
    WouldOpen(String, SourceNet),
    #[error("service `{0}` already exists")]
    DuplicateService(String),
    #[error("service `{service}` already has backend {backend}")]
    DuplicateBackend {
        service: String,
        backend: BackendAddr,
    },
    /// The result would not be a valid config: the fields and problems.
    #[error("{0}")]
    Invalid(ConfigError),
    /// A declarative document that cannot be applied (see `apply_doc`).
    #[error("{0}")]
    Document(String),
}

/// The desired state after `edit`, validated in what it can break; `current` is never
/// modified.
pub fn apply(current: &Config, edit: &Edit) -> Result<Config, EditError> {
    let mut next = current.clone();
    apply_in_place(&mut next, edit)?;
    Ok(next)
}

/// [`apply`] made to `config` itself: no copy of the desired state, so a change to one
/// backend costs the same however many backends there are. Returns how to take it back
/// ([`Revert::undo`]); when the edit is refused, `config` is left as it was.
pub fn apply_in_place(config: &mut Config, edit: &Edit) -> Result<Revert, EditError> {
    let revert = change(config, edit)?;
    if let Err(e) = validate_scoped(config, scope(edit)) {
        revert.undo(config);
        return Err(EditError::Invalid(e));
    }
    Ok(revert)
}

/// What takes an [`apply_in_place`] back: the parts of the desired state it replaced.
/// Indexes are those of the state after the edit.
#[derive(Debug, Clone, PartialEq)]
pub enum Revert {
    /// Remove the service at this index (it was added).
    RemoveService(usize),
    /// Put this service back at this index (it was removed).
    InsertService(usize, Box<ServiceConfig>),
    /// Remove backend `index` of service `service` (it was added).
    RemoveBackend { service: usize, index: usize },
    /// Put `backend` back at `index` of service `service` (it was removed).
    InsertBackend {
        service: usize,
        index: usize,
        backend: BackendConfig,
    },
    /// Backend `index` of service `service` was `backend` (a field changed).
    RestoreBackend {
        service: usize,
        index: usize,
        backend: BackendConfig,
    },
    /// The drained zones each listed service had.
    DrainedZones(Vec<(usize, Vec<String>)>),
    /// The source rules service `0` had.
    Filter(usize, SourceFilter),
    /// Every service, as it was.
    Services(Vec<ServiceConfig>),
}

impl Revert {
    /// Takes the edit back: `config` is then what it was before [`apply_in_place`].
    pub fn undo(self, config: &mut Config) {
        match self {
            Revert::RemoveService(i) => {
                config.services.remove(i);
            }
            Revert::InsertService(i, s) => config.services.insert(i, *s),
            Revert::RemoveBackend { service, index } => {
                config.services[service].backends.remove(index);
            }
            Revert::InsertBackend {
                service,
                index,
                backend,
            } => config.services[service].backends.insert(index, backend),
            Revert::RestoreBackend {
                service,
                index,
                backend,
            } => config.services[service].backends[index] = backend,
            Revert::DrainedZones(zones) => {
                for (i, z) in zones {
                    config.services[i].drained_zones = z;
                }
            }
            Revert::Filter(i, filter) => config.services[i].filter = filter,
            Revert::Services(services) => config.services = services,
        }
    }

    /// The backend as it was before the edit, for an edit of one backend (`None`: it was
    /// added).
    pub fn backend_before(&self) -> Option<&BackendConfig> {
        match self {
            Revert::InsertBackend { backend, .. } | Revert::RestoreBackend { backend, .. } => {
                Some(backend)
            }
            _ => None,
        }
    }
}

/// Makes `edit`'s change to `config`, unvalidated; on an error nothing changed.
fn change(config: &mut Config, edit: &Edit) -> Result<Revert, EditError> {
    Ok(match edit {
        Edit::AddService(service) => {
            if config.services.iter().any(|s| s.name == service.name) {
                return Err(EditError::DuplicateService(service.name.clone()));
            }
            config.services.push(service.clone());
            Revert::RemoveService(config.services.len() - 1)
        }
        Edit::RemoveService(name) => {
            let i = service_index(config, name)?;
            Revert::InsertService(i, Box::new(config.services.remove(i)))
        }
        Edit::AddBackend { service, backend } => {
            let i = service_index(config, service)?;
            let s = &mut config.services[i];
            let at = BackendAddr::from(backend);
            if s.backends.iter().any(|b| BackendAddr::from(b) == at) {
                return Err(EditError::DuplicateBackend {
                    service: service.clone(),
                    backend: at,
                });
            }
            s.backends.push(backend.clone());
            Revert::RemoveBackend {
                service: i,
                index: s.backends.len() - 1,
            }
        }
        Edit::RemoveBackend { service, backend } => {
            let (i, j) = backend_index(config, service, backend)?;
            Revert::InsertBackend {
                service: i,
                index: j,
                backend: config.services[i].backends.remove(j),
            }
        }
        Edit::SetBackendState {
            service,
            backend,
            state,
        } => edit_backend(config, service, backend, |b| b.state = *state)?,
        Edit::SetWeight {
            service,
            backend,
            weight,
        } => edit_backend(config, service, backend, |b| b.weight = *weight)?,
        Edit::SetZoneDrained {
            zone,
            service,
            drained,
        } => {
            let was = config
                .services
                .iter()
                .enumerate()
                .filter(|(_, s)| service.as_deref().is_none_or(|name| s.name == name))
                .map(|(i, s)| (i, s.drained_zones.clone()))
                .collect();
            set_zone_drained(config, zone, service.as_deref(), *drained)?;
            Revert::DrainedZones(was)
        }
        Edit::SetFilterRule {
            service,
            rule,
            open,
        } => {
            let i = service_index(config, service)?;
            let was = config.services[i].filter.clone();
            set_filter_rule(&mut config.services[i].filter, service, *rule, *open)?;
            Revert::Filter(i, was)
        }
        Edit::ReplaceServices(services) => {
            Revert::Services(std::mem::replace(&mut config.services, services.clone()))
        }
    })
}

/// Makes `rule`'s change to a service's source rules; a prefix is on one list at most.
/// Taking the last allow rule away (by removing it or moving it to the deny list) is
/// refused unless `open`: it turns "only these" into "everyone", which a typo must not do.
fn set_filter_rule(
    filter: &mut SourceFilter,
    service: &str,
    rule: FilterEdit,
    open: bool,
) -> Result<(), EditError> {
    let (FilterEdit::Allow(net) | FilterEdit::Deny(net) | FilterEdit::Remove(net)) = rule;
    let listed = filter.allow.contains(&net) || filter.deny.contains(&net);
    if matches!(rule, FilterEdit::Remove(_)) && !listed {
        return Err(EditError::UnknownRule(service.to_string(), net));
    }
    let already = match rule {
        FilterEdit::Allow(_) => filter.allow.contains(&net),
        FilterEdit::Deny(_) => filter.deny.contains(&net),
        FilterEdit::Remove(_) => false,
    };
    if already {
        return Ok(());
    }
    if !open && filter.allow == [net] {
        return Err(EditError::WouldOpen(service.to_string(), net));
    }
    filter.allow.retain(|n| *n != net);
    filter.deny.retain(|n| *n != net);
    match rule {
        FilterEdit::Allow(_) => filter.allow.push(net),
        FilterEdit::Deny(_) => filter.deny.push(net),
        FilterEdit::Remove(_) => {}
    }
    Ok(())
}

/// Applies `set` to one backend of `service`; the revert puts the backend back as it was.
fn edit_backend(
    config: &mut Config,
    service: &str,
    backend: &BackendAddr,
    set: impl FnOnce(&mut BackendConfig),
) -> Result<Revert, EditError> {
    let (i, j) = backend_index(config, service, backend)?;
    let b = &mut config.services[i].backends[j];
    let was = b.clone();
    set(b);
    Ok(Revert::RestoreBackend {
        service: i,
        index: j,
        backend: was,
    })
}

/// What `edit` can break (the current config is valid): checking only that keeps a
/// change to one backend as cheap at 10,000 backends as at 10.
fn scope(edit: &Edit) -> Scope<'_> {
    match edit {
        Edit::AddService(s) => Scope::Service(&s.name),
        Edit::AddBackend { service, backend } => {
            Scope::Backend(service, backend.address, backend.port)
        }
        Edit::SetBackendState {
            service, backend, ..
        }
        | Edit::SetWeight {
            service, backend, ..
        } => Scope::Backend(service, backend.address, backend.port),
        Edit::RemoveService(_) | Edit::RemoveBackend { .. } => Scope::Removal,
        Edit::SetZoneDrained {
            service: Some(service),
            ..
        } => Scope::Service(service),
        Edit::SetFilterRule { service, .. } => Scope::Service(service),
        Edit::SetZoneDrained { service: None, .. } | Edit::ReplaceServices(_) => Scope::All,
    }
}

fn service_index(config: &Config, name: &str) -> Result<usize, EditError> {
    config
        .services
        .iter()
        .position(|s| s.name == name)
        .ok_or_else(|| EditError::UnknownService(name.to_string()))
}

/// The indexes of service `service` and of its backend `backend`.
fn backend_index(
    config: &Config,
    service: &str,
    backend: &BackendAddr,
) -> Result<(usize, usize), EditError> {
    let i = service_index(config, service)?;
    let j = config.services[i]
        .backends
        .iter()
        .position(|b| BackendAddr::from(b) == *backend)
        .ok_or_else(|| EditError::UnknownBackend {
            service: service.to_string(),
            backend: *backend,
        })?;
    Ok((i, j))
}

/// A zone must have a backend in the services concerned (or be this node's zone), so a
/// typo is refused instead of silently draining nothing.
fn set_zone_drained(
    config: &mut Config,
    zone: &str,
    service: Option<&str>,
    drained: bool,
) -> Result<(), EditError> {
    if let Some(name) = service {
        service_index(config, name)?;
    }
    let node_zone = config.node.zone.clone();
    let targets: Vec<&mut ServiceConfig> = config
        .services
        .iter_mut()
        .filter(|s| service.is_none_or(|name| s.name == name))
        .collect();
    let known = zone == node_zone
        || targets.iter().any(|s| {
            s.backends.iter().any(|b| b.zone == zone) || s.drained_zones.iter().any(|z| z == zone)
        });
    if !known {
        let scope = match service {
            Some(name) => format!("service `{name}`"),
            None => "any service".to_string(),
        };
        return Err(EditError::UnknownZone(zone.to_string(), scope));
    }
    for s in targets {
        let listed = s.drained_zones.iter().any(|z| z == zone);
        if drained && !listed {
            s.drained_zones.push(zone.to_string());
        } else if !drained && listed {
            s.drained_zones.retain(|z| z != zone);
        }
    }
    Ok(())
}

/// What `PUT .../weight` takes.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WeightBody {
    pub weight: u32,
}

#[cfg(test)]
#[path = "edit_tests.rs"]
mod tests;
