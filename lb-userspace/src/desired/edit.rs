//! The admin API's changes as pure functions over the desired state: each takes the
//! current [`Config`] and returns the next one, validated in what the change can break
//! (see [`Scope`]), or an error that says what is wrong. Nothing here touches a file, a socket or the kernel, so every rule
//! is tested on the host; the server only serializes, persists and applies the result.
use std::{fmt, net::Ipv4Addr, str::FromStr};

use serde::{Deserialize, Serialize};

use crate::config::{
    validate_scoped, BackendConfig, BackendState, Config, ConfigError, Scope, ServiceConfig,
};

/// A backend's identity within a service: `ADDRESS:PORT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendAddr {
    pub address: Ipv4Addr,
    pub port: u16,
}

impl fmt::Display for BackendAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.address, self.port)
    }
}

impl FromStr for BackendAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (address, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("`{s}` is not ADDRESS:PORT"))?;
        let address = address
            .parse()
            .map_err(|_| format!("`{address}` is not an IPv4 address"))?;
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
    /// Replaces every service (declarative apply).
    ReplaceServices(Vec<ServiceConfig>),
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

/// The desired state after `edit`, validated as a whole; `current` is never modified.
pub fn apply(current: &Config, edit: &Edit) -> Result<Config, EditError> {
    let mut next = current.clone();
    match edit {
        Edit::AddService(service) => {
            if next.services.iter().any(|s| s.name == service.name) {
                return Err(EditError::DuplicateService(service.name.clone()));
            }
            next.services.push(service.clone());
        }
        Edit::RemoveService(name) => {
            service_index(&next, name)?;
            next.services.retain(|s| &s.name != name);
        }
        Edit::AddBackend { service, backend } => {
            let s = service_mut(&mut next, service)?;
            let at = BackendAddr::from(backend);
            if s.backends.iter().any(|b| BackendAddr::from(b) == at) {
                return Err(EditError::DuplicateBackend {
                    service: service.clone(),
                    backend: at,
                });
            }
            s.backends.push(backend.clone());
        }
        Edit::RemoveBackend { service, backend } => {
            backend_mut(&mut next, service, backend)?;
            service_mut(&mut next, service)?
                .backends
                .retain(|b| BackendAddr::from(b) != *backend);
        }
        Edit::SetBackendState {
            service,
            backend,
            state,
        } => backend_mut(&mut next, service, backend)?.state = *state,
        Edit::SetWeight {
            service,
            backend,
            weight,
        } => backend_mut(&mut next, service, backend)?.weight = *weight,
        Edit::SetZoneDrained {
            zone,
            service,
            drained,
        } => set_zone_drained(&mut next, zone, service.as_deref(), *drained)?,
        Edit::ReplaceServices(services) => next.services = services.clone(),
    }
    validate_scoped(&next, scope(edit)).map_err(EditError::Invalid)?;
    Ok(next)
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

fn service_mut<'c>(config: &'c mut Config, name: &str) -> Result<&'c mut ServiceConfig, EditError> {
    let i = service_index(config, name)?;
    Ok(&mut config.services[i])
}

fn backend_mut<'c>(
    config: &'c mut Config,
    service: &str,
    backend: &BackendAddr,
) -> Result<&'c mut BackendConfig, EditError> {
    service_mut(config, service)?
        .backends
        .iter_mut()
        .find(|b| BackendAddr::from(&**b) == *backend)
        .ok_or_else(|| EditError::UnknownBackend {
            service: service.to_string(),
            backend: *backend,
        })
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
