//! What changes between two desired states, for `lbctl apply` to show and for the log.
//! Fields are compared generically (through their serialized form), so keys that later
//! issues add to services and backends show up without changes here.
use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::edit::BackendAddr;
use crate::model::config::{BackendConfig, Config, ServiceConfig};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    Added,
    Removed,
    Changed,
}

/// One line of a diff: what (`service web`, `backend web/10.1.0.11:8080`) and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub kind: ChangeKind,
    pub object: String,
    pub detail: String,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sign = match self.kind {
            ChangeKind::Added => '+',
            ChangeKind::Removed => '-',
            ChangeKind::Changed => '~',
        };
        write!(f, "{sign} {}", self.object)?;
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}

/// The changes that turn `from`'s services into `to`'s, services in `to`'s order.
/// Linear in the backends: services and backends are matched through indexes, and an
/// unchanged one is recognised by comparing values before anything is serialized.
pub fn services(from: &Config, to: &Config) -> Vec<Change> {
    let mut out = Vec::new();
    let from_by_name: HashMap<&str, &ServiceConfig> =
        from.services.iter().map(|s| (s.name.as_str(), s)).collect();
    let to_names: HashSet<&str> = to.services.iter().map(|s| s.name.as_str()).collect();
    for s in &from.services {
        if !to_names.contains(s.name.as_str()) {
            out.push(change(
                ChangeKind::Removed,
                format!("service {}", s.name),
                "",
            ));
        }
    }
    for s in &to.services {
        let object = format!("service {}", s.name);
        match from_by_name.get(s.name.as_str()).copied() {
            Some(old) if old == s => {}
            None => {
                out.push(change(
                    ChangeKind::Added,
                    object,
                    format!("{}:{} {} backends", s.vip, s.port, s.backends.len()),
                ));
                for b in &s.backends {
                    out.push(backend_added(&s.name, b));
                }
            }
            Some(old) => {
                let fields = fields_changed(&service_fields(old), &service_fields(s));
                if !fields.is_empty() {
                    out.push(change(ChangeKind::Changed, object, fields));
                }
                backends(old, s, &mut out);
            }
        }
    }
    out
}

/// The change to one backend `at` of service `name` (added, removed or changed) between
/// `from` and `to`, which differ in nothing else: what [`services`] would say, found
/// without walking the other backends' values.
pub fn backend(from: &Config, to: &Config, name: &str, at: BackendAddr) -> Vec<Change> {
    fn find<'c>(
        c: &'c Config,
        name: &str,
        at: BackendAddr,
    ) -> Option<(&'c ServiceConfig, &'c BackendConfig)> {
        let s = c.services.iter().find(|s| s.name == name)?;
        Some((s, s.backends.iter().find(|b| BackendAddr::from(*b) == at)?))
    }
    backend_change(
        name,
        at,
        find(from, name, at).map(|(_, b)| b),
        find(to, name, at).map(|(_, b)| b),
    )
}

/// [`backend`] from the backend as it was and as it is (`None`: absent).
pub fn backend_change(
    name: &str,
    at: BackendAddr,
    before: Option<&BackendConfig>,
    after: Option<&BackendConfig>,
) -> Vec<Change> {
    let object = format!("backend {name}/{at}");
    match (before, after) {
        (None, Some(b)) => vec![backend_added(name, b)],
        (Some(_), None) => vec![change(ChangeKind::Removed, object, "")],
        (Some(o), Some(b)) if o != b => {
            vec![change(
                ChangeKind::Changed,
                object,
                fields_changed(&to_map(o), &to_map(b)),
            )]
        }
        _ => Vec::new(),
    }
}

fn backends(old: &ServiceConfig, new: &ServiceConfig, out: &mut Vec<Change>) {
    let name = |b: &BackendConfig| format!("backend {}/{}", new.name, BackendAddr::from(b));
    let old_at: HashMap<BackendAddr, &BackendConfig> =
        old.backends.iter().map(|b| (b.into(), b)).collect();
    let new_at: HashSet<BackendAddr> = new.backends.iter().map(BackendAddr::from).collect();
    for b in &old.backends {
        if !new_at.contains(&BackendAddr::from(b)) {
            out.push(change(ChangeKind::Removed, name(b), ""));
        }
    }
    for b in &new.backends {
        match old_at.get(&BackendAddr::from(b)).copied() {
            None => out.push(backend_added(&new.name, b)),
            Some(o) if o == b => {}
            Some(o) => {
                let fields = fields_changed(&to_map(o), &to_map(b));
                if !fields.is_empty() {
                    out.push(change(ChangeKind::Changed, name(b), fields));
                }
            }
        }
    }
}

fn backend_added(service: &str, b: &BackendConfig) -> Change {
    change(
        ChangeKind::Added,
        format!("backend {service}/{}", BackendAddr::from(b)),
        format!("zone {} weight {}", b.zone, b.weight),
    )
}

fn change(kind: ChangeKind, object: String, detail: impl Into<String>) -> Change {
    Change {
        kind,
        object,
        detail: detail.into(),
    }
}

fn to_map<T: Serialize>(value: &T) -> Map<String, Value> {
    match serde_json::to_value(value) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    }
}

fn service_fields(s: &ServiceConfig) -> Map<String, Value> {
    let mut map = to_map(s);
    map.remove("backends");
    map
}

/// `weight: 1 -> 3, state: active -> draining`; a key absent on one side is shown as
/// its absence (`-`), since defaults are not serialized.
fn fields_changed(old: &Map<String, Value>, new: &Map<String, Value>) -> String {
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| old.get(*k) != new.get(*k))
        .map(|k| format!("{k}: {} -> {}", show(old.get(k)), show(new.get(k))))
        .collect::<Vec<_>>()
        .join(", ")
}

fn show(v: Option<&Value>) -> String {
    match v {
        None => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    }
}
