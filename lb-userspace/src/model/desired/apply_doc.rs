//! `lbctl apply -f FILE`: the file is a declarative document holding `services` — either
//! just that key, or a whole config file (e.g. one written by `lbctl config dump`). Only
//! services change at runtime; every other key a whole file carries must equal the
//! running config's, so that applying a file never silently ignores part of it.
use serde_json::Value;

use super::edit::EditError;
use crate::model::config::{Config, ServiceConfig};

/// The services `doc` asks for, checked against the running config `current`.
pub fn services(current: &Config, doc: Value) -> Result<Vec<ServiceConfig>, EditError> {
    let Value::Object(doc) = doc else {
        return Err(EditError::Document(
            "the document must be a mapping with a `services` key".into(),
        ));
    };
    if !doc.contains_key("services") {
        return Err(EditError::Document(
            "services: missing (an empty list removes every service)".into(),
        ));
    }
    // Overlay the document on the running config, so that the typed parse names unknown
    // keys and bad values with their path, and absent keys keep their running values.
    let mut merged = serde_json::to_value(current)
        .map_err(|e| EditError::Document(format!("serializing the running config: {e}")))?;
    let Value::Object(base) = &mut merged else {
        unreachable!("a Config serializes to a map")
    };
    let keys: Vec<String> = doc.keys().cloned().collect();
    base.extend(doc);
    let candidate: Config = serde_path_to_error::deserialize(merged)
        .map_err(|e| EditError::Document(format!("{}: {}", e.path(), e.inner())))?;
    let runtime_fixed = Config {
        services: current.services.clone(),
        ..candidate.clone()
    };
    if runtime_fixed != *current {
        let running = serde_json::to_value(current).unwrap_or_default();
        let wanted = serde_json::to_value(&candidate).unwrap_or_default();
        let differs: Vec<&str> = keys
            .iter()
            .map(String::as_str)
            .filter(|k| *k != "services" && running.get(k) != wanted.get(k))
            .collect();
        return Err(EditError::Document(format!(
            "{}: differs from the running config; only `services` change at runtime (restart lbd with a new config file for the rest)",
            differs.join(", ")
        )));
    }
    Ok(candidate.services)
}
