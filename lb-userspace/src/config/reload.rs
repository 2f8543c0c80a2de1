//! What a reload (SIGHUP) may not change: settings baked into the loaded data path (map
//! sizes, the hash seed and ring size) or its attachment. Such a file is rejected as a
//! whole, with the field named, like any invalid file.
use super::{
    model::Config,
    validate::{ConfigError, FieldError},
};

/// Every field of `new` that differs from `running` and needs a restart of lbd.
pub fn check_reloadable(running: &Config, new: &Config) -> Result<(), ConfigError> {
    let mut errors = Vec::new();
    let mut fixed = |field: &str, was: String, now: String| {
        if was != now {
            errors.push(FieldError {
                field: field.to_string(),
                message: format!(
                    "cannot change from {was} to {now} while lbd runs (the data path was loaded with it); restart lbd"
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
    fixed(
        "interfaces",
        format!("{:?}", running.interfaces),
        format!("{:?}", new.interfaces),
    );
    fixed(
        "xdp_mode",
        format!("{:?}", running.xdp_mode),
        format!("{:?}", new.xdp_mode),
    );
    // The listeners were started with these limits.
    for (field, was, now) in [
        (
            "api.connections",
            &running.api.connections,
            &new.api.connections,
        ),
        (
            "metrics.connections",
            &running.metrics.connections,
            &new.metrics.connections,
        ),
    ] {
        if was != now {
            errors.push(FieldError {
                field: field.to_string(),
                message:
                    "cannot change while lbd runs (its listeners were started with it); restart lbd"
                        .into(),
            });
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ConfigError { errors })
    }
}
