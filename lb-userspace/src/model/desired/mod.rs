//! The desired state: one [`Config`] value that start-up, API changes and reloads all
//! produce, validate as a whole and hand to `Controller::apply`.
//!
//! Where it comes from (the persistence rule, also in docs/operations.md):
//! - `node`, `cluster`, `limits`, `interfaces`, `xdp_mode`, `tc_interfaces`, `api`,
//!   `metrics` and `state_file` always come from the config file;
//! - `services` come from the state file (`state_file`, default
//!   `/var/lib/lbd/state.yaml`) when it exists, else from the config file. `lbd` writes
//!   the state file on every change made through the admin API, so a restarted `lbd`
//!   comes back with what the operator set, not with the config file's older services.
//!   A node drain made through the API (`announce.drained_since`) is kept there too.
//! - A state file that exists but cannot be read, parsed or validated together with the
//!   config file stops `lbd` (exit 78) with the problem named: silently falling back to
//!   the config file would undo the operator's changes. Remove the file to start from
//!   the config file's services again.
//!
//! - [`edit`]: the API's changes as pure functions `&Config -> Config`.
//! - [`apply_doc`]: `lbctl apply`'s declarative document -> services.
//! - [`diff`]: what changes between two desired states.
//! - [`state_file`]: reading and writing the state file (snapshot + [`journal`]), in a
//!   directory opened safely ([`state_dir`]).
pub mod apply_doc;
pub mod diff;
pub mod edit;
pub mod journal;
pub mod state_dir;
pub mod state_file;

use std::path::Path;

use crate::model::config::{self, validate, Config, ConfigError, FieldError};

/// Where the running services came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    ConfigFile,
    StateFile,
}

/// Loads the config file and, if present, the state file, and validates the result.
pub fn load(config_path: &Path) -> Result<(Config, Source), ConfigError> {
    let file = config::load(config_path)?;
    with_state_file(file)
}

/// Replaces `file`'s services with the state file's, if there is one (see the module
/// docs), and validates the result as a whole.
pub fn with_state_file(file: Config) -> Result<(Config, Source), ConfigError> {
    let path = file.state_file.clone();
    let in_state = |e: ConfigError| ConfigError {
        errors: e
            .errors
            .into_iter()
            .map(|f| FieldError {
                field: if f.field.is_empty() {
                    format!("state file {}", path.display())
                } else {
                    format!("state file {}: {}", path.display(), f.field)
                },
                message: f.message,
            })
            .collect(),
    };
    if let Some(dir) = path.parent() {
        state_dir::check_existing(dir).map_err(|e| ConfigError::single("state_file", e))?;
    }
    let Some(doc) = state_file::read(&path).map_err(|e| ConfigError::single("", e.to_string()))?
    else {
        return Ok((file, Source::ConfigFile));
    };
    let mut merged = Config {
        services: doc.services,
        ..file
    };
    merged.announce.drained_since = doc.drained_since;
    validate(&merged).map_err(in_state)?;
    Ok((merged, Source::StateFile))
}

#[cfg(test)]
mod tests;
