//! The state file's journal: one record per API change, appended and fsynced, so that
//! persisting a change to one backend writes a few hundred bytes however many backends
//! there are. A record holds the change's result as data (the backend or service as it
//! now is, or what was removed), not the request, so replaying it cannot fail on rules
//! that depend on anything outside the services.
//!
//! Format: a header line naming the snapshot generation the journal extends, then one
//! line per record: `LEN CHECKSUM JSON`, LEN the JSON's byte length and CHECKSUM its
//! FNV-1a 64 (both hex). A last record cut short by a crash (no newline, wrong length or
//! checksum) is ignored with a log line; the same fault before a complete record is
//! corruption and stops start-up like a broken state file.
use log::warn;
use serde::{Deserialize, Serialize};

use super::edit::{BackendAddr, Edit};
use crate::model::config::{BackendConfig, Config, ServiceConfig};

/// One persisted change, as data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Op {
    /// A new service (with its backends).
    AddService(Box<ServiceConfig>),
    RemoveService(String),
    /// A backend as it now is: replaced in place, or appended if the service lacks it.
    PutBackend {
        service: String,
        backend: BackendConfig,
    },
    RemoveBackend {
        service: String,
        address: std::net::IpAddr,
        port: u16,
    },
    SetDrainedZones {
        service: String,
        zones: Vec<String>,
    },
}

/// The records that turn the state before `edit` into `next`, or `None` when the edit
/// rewrites everything (a declarative apply), which is persisted as a snapshot.
pub fn ops(edit: &Edit, next: &Config) -> Option<Vec<Op>> {
    let service = |name: &str| next.services.iter().find(|s| s.name == name);
    let backend = |name: &str, at: BackendAddr| {
        service(name)?
            .backends
            .iter()
            .find(|b| BackendAddr::from(*b) == at)
            .cloned()
    };
    let put = |name: &str, at: BackendAddr| {
        Some(vec![Op::PutBackend {
            service: name.to_string(),
            backend: backend(name, at)?,
        }])
    };
    match edit {
        Edit::AddService(s) => Some(vec![Op::AddService(Box::new(service(&s.name)?.clone()))]),
        Edit::RemoveService(name) => Some(vec![Op::RemoveService(name.clone())]),
        Edit::AddBackend { service, backend } => put(service, backend.into()),
        Edit::SetBackendState {
            service, backend, ..
        }
        | Edit::SetWeight {
            service, backend, ..
        } => put(service, *backend),
        Edit::RemoveBackend { service, backend } => Some(vec![Op::RemoveBackend {
            service: service.clone(),
            address: backend.address,
            port: backend.port,
        }]),
        Edit::SetZoneDrained { service: only, .. } => Some(
            next.services
                .iter()
                .filter(|s| only.as_deref().is_none_or(|n| n == s.name))
                .map(|s| Op::SetDrainedZones {
                    service: s.name.clone(),
                    zones: s.drained_zones.clone(),
                })
                .collect(),
        ),
        // Rare, and a service's whole filter: persisted as a snapshot.
        Edit::SetFilterRule { .. } | Edit::ReplaceServices(_) => None,
    }
}

/// Replays one record; an error names a service the record needs and the state lacks.
pub fn replay(services: &mut Vec<ServiceConfig>, op: Op) -> Result<(), String> {
    let find = |services: &mut Vec<ServiceConfig>, name: &str| {
        services
            .iter_mut()
            .position(|s| s.name == name)
            .ok_or_else(|| format!("a record names service `{name}`, which does not exist"))
    };
    match op {
        Op::AddService(s) => {
            services.retain(|old| old.name != s.name);
            services.push(*s);
        }
        Op::RemoveService(name) => services.retain(|s| s.name != name),
        Op::PutBackend { service, backend } => {
            let i = find(services, &service)?;
            let list = &mut services[i].backends;
            let at = BackendAddr::from(&backend);
            match list.iter_mut().find(|b| BackendAddr::from(&**b) == at) {
                Some(b) => *b = backend,
                None => list.push(backend),
            }
        }
        Op::RemoveBackend {
            service,
            address,
            port,
        } => {
            let i = find(services, &service)?;
            services[i]
                .backends
                .retain(|b| !(b.address == address && b.port == port));
        }
        Op::SetDrainedZones { service, zones } => {
            let i = find(services, &service)?;
            services[i].drained_zones = zones;
        }
    }
    Ok(())
}

/// The journal's first line.
pub fn header(generation: u64) -> String {
    format!("# lbd state journal (records since the state file's generation {generation:016x})\n")
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// One record line.
pub fn record(op: &Op) -> String {
    let json = serde_json::to_string(op).expect("records serialize");
    format!(
        "{:08x} {:016x} {json}\n",
        json.len(),
        fnv1a(json.as_bytes())
    )
}

/// The records of a journal, if it extends `generation`; `Ok(None)` for a journal of
/// another generation (left over from a compaction cut short: the snapshot holds it).
pub fn parse(text: &str, generation: u64, path: &str) -> Result<Option<Vec<Op>>, String> {
    let Some((first, mut rest)) = text.split_once('\n') else {
        return Ok(None);
    };
    if format!("{first}\n") != header(generation) {
        return Ok(None);
    }
    let mut ops = Vec::new();
    while !rest.is_empty() {
        let (line, after) = match rest.split_once('\n') {
            Some(split) => split,
            None => (rest, ""),
        };
        let complete = rest.len() > line.len();
        match decode(line).filter(|_| complete) {
            Some(json) => {
                let op = serde_json::from_str(json)
                    .map_err(|e| format!("{path}: record {}: {e}", ops.len() + 1))?;
                ops.push(op);
            }
            None if after.is_empty() => {
                warn!(
                    "state journal {path}: the last record ({} bytes) is incomplete, cut short by a crash before it was acknowledged; ignoring it",
                    line.len()
                );
                break;
            }
            None => {
                return Err(format!(
                    "{path}: record {} is damaged and more records follow",
                    ops.len() + 1
                ))
            }
        }
        rest = after;
    }
    Ok(Some(ops))
}

/// The JSON of one record line whose length and checksum match.
fn decode(line: &str) -> Option<&str> {
    let (len, rest) = line.split_once(' ')?;
    let (sum, json) = rest.split_once(' ')?;
    let len = usize::from_str_radix(len, 16).ok()?;
    let sum = u64::from_str_radix(sum, 16).ok()?;
    (json.len() == len && fnv1a(json.as_bytes()) == sum).then_some(json)
}
