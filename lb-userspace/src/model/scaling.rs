//! Target tracking: how many backends a service wants for its load, the count an
//! autoscaler acts on (`lb_service_desired_backends`). Scaling out follows the load at
//! once; scaling in waits until a lower count has been enough for a whole
//! `scale_in_cooldown`, and then goes only to the highest count wanted during it (scale-in
//! protection: a dip in load does not take backends that the load comes back to).
use std::time::Instant;

use super::config::ScalingConfig;

/// A service's load at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Load {
    /// Healthy backends taking new flows now.
    pub healthy_backends: u32,
    pub active_flows: u64,
    pub new_flows_per_second: f64,
}

/// The backends `load` needs at the targets, within `min_backends..=max_backends`.
pub fn wanted(c: &ScalingConfig, load: &Load) -> u32 {
    let by_active = c
        .target_active_flows_per_backend
        .map_or(0, |t| load.active_flows.div_ceil(u64::from(t)));
    let by_new = c
        .target_new_flows_per_second_per_backend
        .map_or(0.0, |t| (load.new_flows_per_second / t).ceil());
    let need = by_active.max(by_new as u64);
    need.clamp(u64::from(c.min_backends), u64::from(c.max_backends)) as u32
}

/// The recommendation of one service over time.
#[derive(Debug, Clone, Default)]
pub struct Recommender {
    desired: Option<u32>,
    /// Since when fewer backends than `desired` have been enough, and the most wanted
    /// since then.
    lower: Option<(Instant, u32)>,
}

impl Recommender {
    /// The desired count after seeing `load` at `now`. The first recommendation starts
    /// from the healthy backends there are (within the bounds), so that a fresh lbd
    /// does not recommend a scale-in before a cooldown has passed.
    pub fn update(&mut self, c: &ScalingConfig, load: &Load, now: Instant) -> u32 {
        let wanted = wanted(c, load);
        let current = self
            .desired
            .unwrap_or(load.healthy_backends)
            .clamp(c.min_backends, c.max_backends);
        let desired = if wanted >= current {
            self.lower = None;
            wanted
        } else {
            let (since, most) = match self.lower {
                Some((since, most)) => (since, most.max(wanted)),
                None => (now, wanted),
            };
            if now.saturating_duration_since(since) >= c.scale_in_cooldown {
                self.lower = None;
                most
            } else {
                self.lower = Some((since, most));
                current
            }
        };
        self.desired = Some(desired);
        desired
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn load(healthy: u32, active: u64, new: f64) -> Load {
        Load {
            healthy_backends: healthy,
            active_flows: active,
            new_flows_per_second: new,
        }
    }

    #[test]
    fn wanted_is_the_load_over_the_target_rounded_up_within_the_bounds() {
        let c = ScalingConfig::of(Some(100), None, 2, 10, 0);
        assert_eq!(wanted(&c, &load(3, 0, 0.0)), 2, "min_backends");
        assert_eq!(wanted(&c, &load(3, 300, 0.0)), 3);
        assert_eq!(wanted(&c, &load(3, 301, 0.0)), 4);
        assert_eq!(wanted(&c, &load(3, 5_000, 0.0)), 10, "max_backends");
        // Both targets: the larger need wins.
        let both = ScalingConfig::of(Some(100), Some(20.0), 1, 50, 0);
        assert_eq!(wanted(&both, &load(3, 250, 90.0)), 5);
        assert_eq!(wanted(&both, &load(3, 750, 90.0)), 8);
        assert_eq!(wanted(&both, &load(3, 0, 0.5)), 1);
    }

    #[test]
    fn scale_out_is_at_once_and_scale_in_waits_a_whole_cooldown_for_the_highest_need() {
        let c = ScalingConfig::of(Some(100), None, 1, 20, 300);
        let t0 = Instant::now();
        let s = |secs| t0 + Duration::from_secs(secs);
        let mut r = Recommender::default();
        // Starts from the 4 healthy backends although 1 would do.
        assert_eq!(r.update(&c, &load(4, 50, 0.0), s(0)), 4);
        // A need of 2 at 100 s: the window started at 0 s saw at most 2.
        assert_eq!(r.update(&c, &load(4, 150, 0.0), s(100)), 4);
        assert_eq!(r.update(&c, &load(4, 50, 0.0), s(299)), 4);
        assert_eq!(r.update(&c, &load(4, 50, 0.0), s(300)), 2);
        // Out at once.
        assert_eq!(r.update(&c, &load(2, 950, 0.0), s(301)), 10);
        // A dip to 3, a need of 6 during the cooldown, then low again: in to 6, not 3.
        assert_eq!(r.update(&c, &load(10, 250, 0.0), s(310)), 10);
        assert_eq!(r.update(&c, &load(10, 600, 0.0), s(400)), 10);
        assert_eq!(r.update(&c, &load(10, 250, 0.0), s(609)), 10);
        assert_eq!(r.update(&c, &load(10, 250, 0.0), s(610)), 6);
        // A need back at the current count ends the window.
        assert_eq!(r.update(&c, &load(6, 100, 0.0), s(611)), 6);
        assert_eq!(r.update(&c, &load(6, 600, 0.0), s(612)), 6);
        assert_eq!(r.update(&c, &load(6, 100, 0.0), s(613)), 6);
        assert_eq!(r.update(&c, &load(6, 100, 0.0), s(912)), 6);
        assert_eq!(r.update(&c, &load(6, 100, 0.0), s(913)), 1);
    }

    #[test]
    fn a_zero_cooldown_follows_the_load_both_ways_and_bounds_apply_to_the_start() {
        let c = ScalingConfig::of(Some(10), None, 2, 5, 0);
        let t0 = Instant::now();
        let mut r = Recommender::default();
        assert_eq!(
            r.update(&c, &load(9, 0, 0.0), t0),
            2,
            "from 9 healthy, capped at 5, in at once"
        );
        assert_eq!(r.update(&c, &load(2, 41, 0.0), t0), 5);
        assert_eq!(r.update(&c, &load(5, 11, 0.0), t0), 2);
    }
}
