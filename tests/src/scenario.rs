//! What the fault tests share: fast health-check settings, the time bounds they imply,
//! and small helpers. Probes every 200 ms keep the tests short; the bounds are the
//! issue's (`unhealthy_threshold x interval + one interval`), plus [`SLACK`].
//!
//! What a test may assume about time: a bound is measured to the stamp lbd logged when
//! the change went live (never to when the test's own thread got to run), with
//! [`SLACK`] for a loaded machine; which backend a connection may reach is decided by
//! whether it started after that stamp (exact, whatever the load); and a test waits
//! for a number of connections, not for a while.
use std::{
    thread,
    time::{Duration, Instant, SystemTime},
};

use crate::{
    client_loop::ClientLoop,
    lbd_log::{first_update_after, TableUpdate},
    process::Daemon,
    topology::{Lab, LabSpec},
};

pub const INTERVAL: Duration = Duration::from_millis(200);
/// As long as the interval allows: a loaded machine must not turn a slow answer into a
/// failed probe.
pub const TIMEOUT: Duration = INTERVAL;
pub const HEALTHY_THRESHOLD: u32 = 2;
pub const UNHEALTHY_THRESHOLD: u32 = 2;

/// Scheduling slack on a loaded 2-core machine (several builds running beside the
/// tests), on top of a configured bound measured to lbd's own log stamp: timer wake-ups
/// of lbd's probe tasks and main loop, the table rebuild of a debug build, and the test
/// backend's 50 ms accept poll before its port really closes. Unloaded, lbd stays
/// within about 100 ms of each bound.
pub const SLACK: Duration = Duration::from_millis(1000);

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
    Lab::build(&LabSpec::three_zones())
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

/// Waits until the loop has finished `n` attempts that started at or after `from`.
pub fn wait_attempts_after(client: &ClientLoop, from: SystemTime, n: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let done = client.attempts().iter().filter(|a| a.start >= from).count();
        if done >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the client finished {done} of {n} attempts after the mark in {timeout:?}: {:?}",
            client.attempts().last()
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until lbd has logged a table swap after the first line containing `needle` in
/// its log after byte `mark`.
pub fn wait_table_update(
    lbd: &Daemon,
    mark: usize,
    needle: &str,
    timeout: Duration,
) -> TableUpdate {
    let deadline = Instant::now() + timeout;
    loop {
        let log = lbd.log();
        if let Some(u) = first_update_after(log.get(mark..).unwrap_or(""), needle) {
            return u;
        }
        assert!(
            Instant::now() < deadline,
            "no table swap logged after {needle:?} in {timeout:?}; log:\n{log}"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// Checks that `hits` of `n` independent connections reached a backend, when each
/// reached it with probability `p[i]`, are what the shares predict: within four
/// standard deviations (a false alarm about once in 16,000 runs), plus 2% of `n` for
/// the Maglev table's own deviation from exact weight shares.
pub fn assert_binomial(hits: usize, p: &[f64], what: &str) {
    let n = p.len() as f64;
    let mean: f64 = p.iter().sum();
    let sd = p.iter().map(|p| p * (1.0 - p)).sum::<f64>().sqrt();
    let tolerance = 4.0 * sd + 0.02 * n + 1.0;
    assert!(
        (hits as f64 - mean).abs() <= tolerance,
        "{what}: {hits} of {n} connections, expected {mean:.1} +- {tolerance:.1}"
    );
}

/// The milliseconds of a duration, for messages.
pub fn ms(d: Duration) -> i64 {
    d.as_millis() as i64
}
