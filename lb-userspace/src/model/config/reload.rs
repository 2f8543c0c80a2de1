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
    let mut errors = Vec::new();
    let mut fixed = |field: &str, was: String, now: String| {
        if was != now {
            errors.push(FieldError {
                field: field.to_string(),
                message: format!(
                    "cannot change from {was} to {now} while lbd runs (it is set up once, at start); restart lbd"
                ),
            });
        }
    };
    fixed(
        "cluster.hash_seed",
        running.cluster.hash_seed.to_string(),
        new.cluster.hash_seed.to_string(),
    );
    fixed(
        "cluster.ring_size",
        running.cluster.ring_size.to_string(),
        new.cluster.ring_size.to_string(),
    );
    fixed(
        "limits.max_services",
        running.limits.max_services.to_string(),
        new.limits.max_services.to_string(),
    );
    fixed(
        "limits.max_backends",
        running.limits.max_backends.to_string(),
        new.limits.max_backends.to_string(),
    );
    fixed(
        "limits.flow_table_size",
        running.limits.flow_table_size.to_string(),
        new.limits.flow_table_size.to_string(),
    );
    // Compared as what they mean, not as written: the same NICs in another order, or a
    // path with a trailing slash, is no change, and refusing it would refuse a reload
    // for nothing.
    let nics = |list: &[String]| {
        let mut sorted = list.to_vec();
        sorted.sort();
        format!("{sorted:?}")
    };
    fixed(
        "interfaces",
        nics(&running.interfaces),
        nics(&new.interfaces),
    );
    fixed(
        "xdp_mode",
        format!("{:?}", running.xdp_mode),
        format!("{:?}", new.xdp_mode),
    );
    let path = |p: &std::path::Path| {
        p.components()
            .collect::<std::path::PathBuf>()
            .display()
            .to_string()
    };
    let optional = |v: Option<String>| v.unwrap_or_else(|| "none".into());
    fixed("pin_dir", path(&running.pin_dir), path(&new.pin_dir));
    fixed(
        "api.socket",
        path(&running.api.socket),
        path(&new.api.socket),
    );
    fixed(
        "api.listen",
        optional(running.api.listen.map(|a| a.to_string())),
        optional(new.api.listen.map(|a| a.to_string())),
    );
    fixed(
        "api.token_file",
        optional(running.api.token_file.as_deref().map(path)),
        optional(new.api.token_file.as_deref().map(path)),
    );
    fixed(
        "metrics.listen",
        running.metrics.listen.to_string(),
        new.metrics.listen.to_string(),
    );
    fixed(
        "state_file",
        path(&running.state_file),
        path(&new.state_file),
    );
    let limits = |l: &super::ConnectionLimits| {
        format!(
            "{{ max: {}, header_timeout: {}, idle_timeout: {} }}",
            l.max,
            super::duration::format(l.header_timeout),
            super::duration::format(l.idle_timeout)
        )
    };
    fixed(
        "api.connections",
        limits(&running.api.connections),
        limits(&new.api.connections),
    );
    fixed(
        "metrics.connections",
        limits(&running.metrics.connections),
        limits(&new.metrics.connections),
    );
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ConfigError { errors })
    }
}
