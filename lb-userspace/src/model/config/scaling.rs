//! `services[].scaling`: the targets and bounds of a service's desired backend count
//! (computed by `crate::model::scaling`).
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration;

/// `services[].scaling`: the targets and bounds of the recommendation.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScalingConfig {
    /// Active flows one healthy backend should carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_active_flows_per_backend: Option<u32>,
    /// New flows per second one healthy backend should take.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_new_flows_per_second_per_backend: Option<f64>,
    #[serde(default = "default_min")]
    pub min_backends: u32,
    #[serde(default = "default_max")]
    pub max_backends: u32,
    /// How long a lower count must be enough before the recommendation goes down.
    #[serde(default = "default_cooldown", with = "duration")]
    pub scale_in_cooldown: Duration,
}

fn default_min() -> u32 {
    1
}

fn default_max() -> u32 {
    100
}

fn default_cooldown() -> Duration {
    Duration::from_secs(300)
}

/// Most backends a recommendation may name (`max_backends` at most).
pub const MAX_SCALING_BACKENDS: u32 = 100_000;

impl ScalingConfig {
    /// What is wrong with it, one `(field, message)` each (fields relative to `scaling`).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        match (
            self.target_active_flows_per_backend,
            self.target_new_flows_per_second_per_backend,
        ) {
            (None, None) => out.push((
                "",
                "needs target_active_flows_per_backend or target_new_flows_per_second_per_backend"
                    .to_string(),
            )),
            (Some(0), _) => out.push((
                "target_active_flows_per_backend",
                "0 is out of range: at least 1".to_string(),
            )),
            (_, Some(t)) if !(t.is_finite() && t > 0.0) => out.push((
                "target_new_flows_per_second_per_backend",
                format!("{t} is out of range: more than 0"),
            )),
            _ => {}
        }
        if !(1..=MAX_SCALING_BACKENDS).contains(&self.max_backends) {
            out.push((
                "max_backends",
                format!(
                    "{} is out of range 1..={MAX_SCALING_BACKENDS}",
                    self.max_backends
                ),
            ));
        }
        if self.min_backends > self.max_backends {
            out.push((
                "min_backends",
                format!(
                    "{} is more than max_backends {}",
                    self.min_backends, self.max_backends
                ),
            ));
        }
        if self.scale_in_cooldown > Duration::from_secs(86_400) {
            out.push((
                "scale_in_cooldown",
                format!(
                    "{} is out of range 0s..=24h",
                    duration::format(self.scale_in_cooldown)
                ),
            ));
        }
        out
    }
}

#[cfg(test)]
impl ScalingConfig {
    /// For tests: the targets, the bounds and the cooldown in seconds.
    pub(crate) fn of(
        active: Option<u32>,
        new: Option<f64>,
        min: u32,
        max: u32,
        cooldown_s: u64,
    ) -> Self {
        Self {
            target_active_flows_per_backend: active,
            target_new_flows_per_second_per_backend: new,
            min_backends: min,
            max_backends: max,
            scale_in_cooldown: Duration::from_secs(cooldown_s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_name_the_field() {
        let fields = |c: ScalingConfig| -> Vec<&'static str> {
            c.problems().into_iter().map(|(f, _)| f).collect()
        };
        assert_eq!(fields(ScalingConfig::of(None, None, 1, 2, 0)), [""]);
        assert_eq!(
            fields(ScalingConfig::of(Some(0), None, 1, 2, 0)),
            ["target_active_flows_per_backend"]
        );
        assert_eq!(
            fields(ScalingConfig::of(None, Some(0.0), 1, 2, 0)),
            ["target_new_flows_per_second_per_backend"]
        );
        assert_eq!(
            fields(ScalingConfig::of(Some(1), None, 3, 2, 0)),
            ["min_backends"]
        );
        assert_eq!(
            fields(ScalingConfig::of(Some(1), None, 0, 0, 0)),
            ["max_backends"]
        );
        assert_eq!(
            fields(ScalingConfig::of(Some(1), None, 0, 5, 86_401)),
            ["scale_in_cooldown"]
        );
        assert!(ScalingConfig::of(Some(1), Some(2.5), 0, 5, 60)
            .problems()
            .is_empty());
    }
}
