//! Validation of the availability policy of one service (health probes, zones,
//! draining, slow start): every problem is reported with the path of its field.
use std::{collections::HashSet, time::Duration};

use super::{
    collector::{check_name, Collector},
    duration,
    model::ServiceConfig,
    policy::{probe_payload, HealthConfig, ProbeType, StatusRange, MAX_FLAP_WINDOW},
};

const MIN_INTERVAL: Duration = Duration::from_millis(100);
const MAX_INTERVAL: Duration = Duration::from_secs(300);
const MIN_TIMEOUT: Duration = Duration::from_millis(10);
const MAX_THRESHOLD: u32 = 10;
/// Fewest flips that may hold a backend: a single failed probe between passes (or one
/// death and recovery) is 2 flips, and holding on that would eject a backend for one
/// failure, whatever `unhealthy_threshold` says.
const MIN_FLAP_FLIPS: u8 = 3;
const MAX_ZONE_WEIGHT: f64 = 100.0;
const MAX_DEREGISTRATION_DELAY: Duration = Duration::from_secs(3600);
const MAX_SLOW_START: Duration = Duration::from_secs(900);
const MAX_PATH: usize = 1024;
const MAX_HOST: usize = 255;

pub(super) fn check_policy(c: &mut Collector, at: &str, s: &ServiceConfig) {
    check_health(c, &format!("{at}.health"), &s.health);
    check_passive_in_a_tier(c, &format!("{at}.health"), s);
    for (zone, weight) in &s.zone_weights {
        let field = format!("{at}.zone_weights.{zone}");
        check_name(c, &field, zone);
        if !(0.0..=MAX_ZONE_WEIGHT).contains(weight) {
            c.err(
                field,
                format!("{weight} is out of range 0..={MAX_ZONE_WEIGHT}"),
            );
        }
    }
    let threshold = s.zone_failover_threshold;
    if !(0.0..=1.0).contains(&threshold) {
        c.err(
            format!("{at}.zone_failover_threshold"),
            format!("{threshold} is out of range 0..=1"),
        );
    }
    let mut drained = HashSet::new();
    for (i, zone) in s.drained_zones.iter().enumerate() {
        let field = format!("{at}.drained_zones[{i}]");
        check_name(c, &field, zone);
        if !drained.insert(zone) {
            c.err(field, format!("`{zone}` is listed twice"));
        }
    }
    check_at_most(
        c,
        &format!("{at}.deregistration_delay"),
        s.deregistration_delay,
        MAX_DEREGISTRATION_DELAY,
    );
    check_at_most(c, &format!("{at}.slow_start"), s.slow_start, MAX_SLOW_START);
}

fn check_at_most(c: &mut Collector, field: &str, value: Duration, max: Duration) {
    if value > max {
        c.err(
            field,
            format!(
                "{} is longer than the maximum {}",
                duration::format(value),
                duration::format(max)
            ),
        );
    }
}

fn check_health(c: &mut Collector, at: &str, h: &HealthConfig) {
    check_probe_timing(c, at, h);
    check_passive(c, at, h);
    check_flap_damping(c, at, h);
    match h.kind {
        ProbeType::Tcp => check_tcp(c, at, h),
        ProbeType::Http => check_http(c, at, h),
        ProbeType::Udp => check_udp(c, at, h),
    }
}

/// Port, interval, timeout and the consecutive-result thresholds of active probes.
fn check_probe_timing(c: &mut Collector, at: &str, h: &HealthConfig) {
    if h.port == Some(0) {
        c.err(format!("{at}.port"), "must be 1..=65535");
    }
    if !(MIN_INTERVAL..=MAX_INTERVAL).contains(&h.interval) {
        c.err(
            format!("{at}.interval"),
            format!(
                "{} is out of range {}..={}",
                duration::format(h.interval),
                duration::format(MIN_INTERVAL),
                duration::format(MAX_INTERVAL)
            ),
        );
    }
    if h.timeout < MIN_TIMEOUT {
        c.err(
            format!("{at}.timeout"),
            format!(
                "{} is shorter than the minimum {}",
                duration::format(h.timeout),
                duration::format(MIN_TIMEOUT)
            ),
        );
    } else if h.timeout > h.interval {
        // A probe must end before the next one starts, or probes of one backend overlap
        // and the consecutive-result count loses its order.
        c.err(
            format!("{at}.timeout"),
            format!(
                "{} is longer than the interval {}",
                duration::format(h.timeout),
                duration::format(h.interval)
            ),
        );
    }
    for (name, value) in [
        ("healthy_threshold", h.healthy_threshold),
        ("unhealthy_threshold", h.unhealthy_threshold),
    ] {
        if !(1..=MAX_THRESHOLD).contains(&value) {
            c.err(
                format!("{at}.{name}"),
                format!("{value} is out of range 1..={MAX_THRESHOLD}"),
            );
        }
    }
}

/// Ejection on passive signals (the data path's SYN, SYN-ACK and RST counts).
fn check_passive(c: &mut Collector, at: &str, h: &HealthConfig) {
    let ratio = h.passive_failure_ratio(false);
    if !(0.0..=1.0).contains(&ratio) {
        c.err(
            format!("{at}.passive_failure_ratio"),
            format!("{ratio} is out of range 0..=1 (0 turns passive ejection off)"),
        );
    }
    if h.passive_min_attempts == 0 {
        c.err(format!("{at}.passive_min_attempts"), "must be at least 1");
    }
    if h.passive_max_ejection_percent > 100 {
        c.err(
            format!("{at}.passive_max_ejection_percent"),
            format!(
                "{} is out of range 0..=100 (0: passive signals never eject)",
                h.passive_max_ejection_percent
            ),
        );
    }
}

/// Passive signals need one node to see both a connection's SYN and the backend's answer,
/// which a service run by several nodes (`stateless_return`) cannot promise.
fn check_passive_in_a_tier(c: &mut Collector, at: &str, s: &ServiceConfig) {
    match s.health.passive_failure_ratio {
        Some(ratio) if s.stateless_return && ratio > 0.0 => c.err(
            format!("{at}.passive_failure_ratio"),
            format!(
                "{ratio} with stateless_return: behind ECMP each node sees the answers to only \
                 some of the SYNs it forwards, so passive ejection would take healthy backends \
                 out; set 0 or leave it unset (off for such a service)"
            ),
        ),
        _ => {}
    }
}

/// Flap damping: the window of results and the flips within it that hold a backend.
fn check_flap_damping(c: &mut Collector, at: &str, h: &HealthConfig) {
    let min_window = u32::from(MIN_FLAP_FLIPS) + 1;
    if (1..min_window).contains(&u32::from(h.flap_window))
        || u32::from(h.flap_window) > MAX_FLAP_WINDOW
    {
        c.err(
            format!("{at}.flap_window"),
            format!(
                "{} is out of range {min_window}..={MAX_FLAP_WINDOW} (or 0, which turns flap damping off)",
                h.flap_window
            ),
        );
    } else if h.flap_window > 0 && !(MIN_FLAP_FLIPS..h.flap_window).contains(&h.flap_flips) {
        // n results hold at most n - 1 flips: a larger limit could never be reached.
        c.err(
            format!("{at}.flap_flips"),
            format!(
                "{} is out of range {MIN_FLAP_FLIPS}..={} (flips possible among {} results; \
                 one failed probe between passes is already 2 flips, which must not \
                 outvote unhealthy_threshold)",
                h.flap_flips,
                h.flap_window - 1,
                h.flap_window
            ),
        );
    }
}

/// A TCP probe sets none of the HTTP or UDP probes' fields.
fn check_tcp(c: &mut Collector, at: &str, h: &HealthConfig) {
    refuse_http_fields(c, at, h);
    refuse_udp_fields(c, at, h);
}

fn refuse_http_fields(c: &mut Collector, at: &str, h: &HealthConfig) {
    for (name, set) in [
        ("path", h.path.is_some()),
        ("host", h.host.is_some()),
        ("expect_status", h.expect_status.is_some()),
    ] {
        if set {
            c.err(
                format!("{at}.{name}"),
                "applies only to `type: http` probes",
            );
        }
    }
}

fn refuse_udp_fields(c: &mut Collector, at: &str, h: &HealthConfig) {
    for (name, set) in [("send", h.send.is_some()), ("expect", h.expect.is_some())] {
        if set {
            c.err(format!("{at}.{name}"), "applies only to `type: udp` probes");
        }
    }
}

/// The most bytes a UDP probe's `send` or `expect` holds: a datagram that fits any MTU.
const MAX_PROBE_PAYLOAD: usize = 512;

/// A UDP probe's payloads parse and fit in a datagram; it sets none of HTTP's fields.
fn check_udp(c: &mut Collector, at: &str, h: &HealthConfig) {
    refuse_http_fields(c, at, h);
    for (name, value) in [("send", &h.send), ("expect", &h.expect)] {
        let Some(text) = value else { continue };
        match probe_payload(text) {
            Ok(bytes) if bytes.len() > MAX_PROBE_PAYLOAD => c.err(
                format!("{at}.{name}"),
                format!("{} bytes; at most {MAX_PROBE_PAYLOAD}", bytes.len()),
            ),
            Ok(bytes) if bytes.is_empty() && name == "expect" => c.err(
                format!("{at}.{name}"),
                "is empty: leave it out to accept any reply",
            ),
            Ok(_) => {}
            Err(e) => c.err(format!("{at}.{name}"), e),
        }
    }
}

fn check_http(c: &mut Collector, at: &str, h: &HealthConfig) {
    refuse_udp_fields(c, at, h);
    if let Some(path) = &h.path {
        if !path.starts_with('/') || path.len() > MAX_PATH || !is_visible_ascii(path) {
            c.err(
                format!("{at}.path"),
                format!("`{path}` must start with `/` and hold up to {MAX_PATH} visible ASCII characters"),
            );
        }
    }
    if let Some(host) = &h.host {
        if host.is_empty() || host.len() > MAX_HOST || !is_visible_ascii(host) {
            c.err(
                format!("{at}.host"),
                format!("`{host}` must be 1 to {MAX_HOST} visible ASCII characters"),
            );
        }
    }
    if let Some(range) = h.expect_status {
        let http = StatusRange::HTTP;
        if range.min < http.min || range.max > http.max || range.min > range.max {
            c.err(
                format!("{at}.expect_status"),
                format!("{range} is not a range within {http}"),
            );
        }
    }
}

/// What may go into a request line or header unescaped: no spaces, no controls.
fn is_visible_ascii(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_graphic())
}
