//! What the fault tests share: fast health-check settings, the time bounds they imply,
//! and small helpers. Probes every 200 ms keep the tests short; the bounds are the
//! issue's (`unhealthy_threshold x interval + one interval`), plus [`SLACK`].
use std::{
    thread,
    time::{Duration, Instant},
};

use crate::{
    client_loop::ClientLoop,
    topology::{BackendSpec, Lab, LabSpec},
};

pub const INTERVAL: Duration = Duration::from_millis(200);
pub const TIMEOUT: Duration = Duration::from_millis(150);
pub const HEALTHY_THRESHOLD: u32 = 2;
pub const UNHEALTHY_THRESHOLD: u32 = 2;

/// Scheduling slack on a loaded 2-core machine, on top of a configured bound: timer
/// wake-ups of lbd and of the test, the ring write, and the test backend's 50 ms accept
/// poll before its port really closes.
pub const SLACK: Duration = Duration::from_millis(300);

/// The service's `health:` line: TCP probes on the bounds above, passive ejection off
/// (so the active probes' bound is what is measured; one test turns it on).
pub fn fast_health() -> String {
    format!(
        "health: {{ interval: {}ms, timeout: {}ms, healthy_threshold: {HEALTHY_THRESHOLD}, unhealthy_threshold: {UNHEALTHY_THRESHOLD}, passive_failure_ratio: 0 }}",
        INTERVAL.as_millis(),
        TIMEOUT.as_millis()
    )
}

/// After a failure, no new connection may reach a backend later than this:
/// `unhealthy_threshold x interval + one interval` (the wait for the first failing
/// probe).
pub fn detection_bound() -> Duration {
    INTERVAL * (UNHEALTHY_THRESHOLD + 1)
}

/// After a backend recovers, it is back in the table within this.
pub fn recovery_bound() -> Duration {
    INTERVAL * (HEALTHY_THRESHOLD + 1)
}

/// Three backends `b1`..`b3` in zones az-a, az-b, az-c; the LB is in az-a.
pub fn three_zones() -> Lab {
    Lab::build(&LabSpec {
        backends: vec![
            BackendSpec::new("b1", "az-a"),
            BackendSpec::new("b2", "az-b"),
            BackendSpec::new("b3", "az-c"),
        ],
        one_nic: false,
    })
}

/// Waits until the loop has made `n` more attempts (traffic is flowing).
pub fn wait_attempts(client: &ClientLoop, n: usize, timeout: Duration) {
    let want = client.attempts().len() + n;
    let deadline = Instant::now() + timeout;
    while client.attempts().len() < want {
        assert!(
            Instant::now() < deadline,
            "the client made fewer than {n} attempts in {timeout:?}: {:?}",
            client.attempts().last()
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// The milliseconds of a duration, for messages.
pub fn ms(d: Duration) -> i64 {
    d.as_millis() as i64
}
