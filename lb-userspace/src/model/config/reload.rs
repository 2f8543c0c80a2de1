//! What a reload (SIGHUP) may not change: settings baked into the loaded data path (map
//! sizes, the hash seed and ring size) or its attachment, and what lbd set up once at
//! start (its pin directory, listeners, token and state file). Such a file is rejected
//! as a whole, with the field named, like any invalid file: a key that was accepted but
//! not applied would show in `lbctl config dump` while lbd did otherwise (a new
//! `state_file` would even make the API's services vanish on the next restart).
use super::{
    collector::{ConfigError, FieldError},
    model::Config,
};

/// Every field of `new` that differs from `running` and needs a restart of lbd.
pub fn check_reloadable(running: &Config, new: &Config) -> Result<(), ConfigError> {
    let errors: Vec<FieldError> = fixed_keys(running)
        .into_iter()
        .zip(fixed_keys(new))
        .filter(|((_, was), (_, now))| was != now)
        .map(|((field, was), (_, now))| FieldError {
            field: field.to_string(),
            message: format!(
                "cannot change from {was} to {now} while lbd runs (it is set up once, at start); restart lbd"
            ),
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ConfigError { errors })
    }
}

/// Each key a reload may not change, with its value in `c` as what it means (see
/// [`data_path_keys`] and [`start_up_keys`]), in the order errors name them.
fn fixed_keys(c: &Config) -> Vec<(&'static str, String)> {
    let mut keys = data_path_keys(c);
    keys.extend(start_up_keys(c));
    keys
}

/// What the loaded data path was built with: map sizes, hashing, its NICs and mode.
fn data_path_keys(c: &Config) -> Vec<(&'static str, String)> {
    // The same NICs in another order is no change, and refusing it would refuse a
    // reload for nothing.
    let mut nics = c.interfaces.clone();
    nics.sort();
    let mut tc = c.tc_interfaces.clone();
    tc.sort();
    vec![
        ("cluster.hash_seed", c.cluster.hash_seed.to_string()),
        ("cluster.ring_size", c.cluster.ring_size.to_string()),
        ("cluster.gue_port", c.cluster.gue_port.to_string()),
        ("limits.max_services", c.limits.max_services.to_string()),
        ("limits.max_backends", c.limits.max_backends.to_string()),
        (
            "limits.flow_table_size",
            c.limits.flow_table_size.to_string(),
        ),
        (
            "limits.flow_table_size6",
            c.limits.flow_table_size6.to_string(),
        ),
        ("interfaces", format!("{nics:?}")),
        ("xdp_mode", format!("{:?}", c.xdp_mode)),
        ("tc_interfaces", format!("{tc:?}")),
    ]
}

/// What lbd set up once at start: its pin directory, listeners, token and state file.
fn start_up_keys(c: &Config) -> Vec<(&'static str, String)> {
    // Paths compared as what they mean: one with a trailing slash is no change.
    let path = |p: &std::path::Path| {
        p.components()
            .collect::<std::path::PathBuf>()
            .display()
            .to_string()
    };
    let optional = |v: Option<String>| v.unwrap_or_else(|| "none".into());
    let limits = |l: &super::ConnectionLimits| {
        format!(
            "{{ max: {}, header_timeout: {}, idle_timeout: {} }}",
            l.max,
            super::duration::format(l.header_timeout),
            super::duration::format(l.idle_timeout)
        )
    };
    vec![
        ("pin_dir", path(&c.pin_dir)),
        ("api.socket", path(&c.api.socket)),
        ("api.listen", optional(c.api.listen.map(|a| a.to_string()))),
        (
            "api.token_file",
            optional(c.api.token_file.as_deref().map(path)),
        ),
        (
            "api.registration_tokens",
            format!(
                "{:?}",
                c.api
                    .registration_tokens
                    .iter()
                    .map(|t| (path(&t.file), &t.services))
                    .collect::<Vec<_>>()
            ),
        ),
        ("metrics.listen", c.metrics.listen.to_string()),
        ("state_file", path(&c.state_file)),
        ("api.connections", limits(&c.api.connections)),
        ("metrics.connections", limits(&c.metrics.connections)),
        // The hook's runner is started once, with the listeners.
        ("events.hook", format!("{:?}", c.events.hook)),
    ]
}
