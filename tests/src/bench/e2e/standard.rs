//! The saturated rows: Debian's `wrk` and `iperf3` run as they are, from the client
//! namespace, with as many requests in flight as they can keep, beside the
//! latency-bound rows of [`super::load`] (a few blocking connections).
//!
//! - `wrk` with [`WRK_CONNECTIONS`] connections on [`WRK_THREADS`] threads, either
//!   keep-alive (`/keep`) or a new connection per request (`/close` with
//!   `Connection: close`, which the server answers with `Connection: close` too, so wrk
//!   closes first and reconnects);
//! - `iperf3`, one stream, upload (client -> server) or download (`-R`), against one
//!   `iperf3 -s` on backend 0: its control and data connections must reach the same
//!   server, so every variant sends [`IPERF_PORT`] of the VIP to that one backend.
//!
//! Both are child processes of this one, reaped before the run's CPU is read, so their
//! CPU time is counted through `RUSAGE_CHILDREN` (see [`super::cpu`]). Each run is
//! bounded by its duration plus [`SLACK`]; a failed start, a wrong answer (wrk counts
//! non-2xx answers and socket errors) or no traffic is a failure of the run.
use std::{
    net::SocketAddrV4,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

use super::load::LoadResult;
use crate::{netns, process::output_within};

/// Connections wrk keeps open, as the issue's measurement did.
pub const WRK_CONNECTIONS: usize = 50;
/// wrk's threads: one per core of this machine.
pub const WRK_THREADS: usize = 2;
/// The VIP port (and backend 0's port) of the iperf3 rows.
pub const IPERF_PORT: u16 = 5201;
/// How much longer than its duration a client may take before it is killed.
const SLACK: Duration = Duration::from_secs(15);

/// Where Debian's `wrk` and `iperf3` packages put the binaries.
pub const WRK: &str = "/usr/bin/wrk";
pub const IPERF3: &str = "/usr/bin/iperf3";

/// Runs `program args` in namespace `ns`, killed after `duration` + [`SLACK`]; its
/// stdout (also when it failed, if it wrote one: iperf3 -J writes its errors there),
/// or why it did not run to its end.
fn run_client(
    ns: &str,
    program: &str,
    args: &[&str],
    duration: Duration,
) -> Result<String, String> {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={}", netns::netns_path(ns).display()))
        .arg("--")
        .arg(program)
        .args(args);
    let out = output_within(cmd, duration + SLACK)?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() && stdout.trim().is_empty() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(format!(
            "{program} {}: {}: {}",
            args.join(" "),
            out.status,
            stderr.trim()
        ));
    }
    Ok(stdout)
}

/// `wrk` against `target`: keep-alive requests, or (`close`) one request per connection.
pub fn wrk(ns: &str, target: SocketAddrV4, close: bool, duration: Duration) -> LoadResult {
    let url = format!("http://{target}/{}", if close { "close" } else { "keep" });
    let (threads, conns) = (WRK_THREADS.to_string(), WRK_CONNECTIONS.to_string());
    let secs = format!("{}s", duration.as_secs_f64().ceil().max(1.0) as u64);
    let mut args = vec!["-t", &threads, "-c", &conns, "-d", &secs, "--timeout", "2s"];
    if close {
        args.extend(["-H", "Connection: close"]);
    }
    args.push(&url);
    match run_client(ns, WRK, &args, duration) {
        Ok(out) => parse_wrk(&out).unwrap_or_else(|e| failed(format!("wrk {url}: {e}"))),
        Err(e) => failed(e),
    }
}

/// `iperf3` against `target` (an `iperf3 -s` behind it), one stream, upload or download.
pub fn iperf3(ns: &str, target: SocketAddrV4, download: bool, duration: Duration) -> LoadResult {
    let (host, port) = (target.ip().to_string(), target.port().to_string());
    let secs = duration.as_secs_f64().ceil().max(1.0).to_string();
    let mut args = vec!["-c", &host, "-p", &port, "-t", &secs, "-J"];
    if download {
        args.push("-R");
    }
    // The server takes one test at a time and may still be closing the last one (a
    // proxy in between closes its side of the control connection a moment later):
    // iperf3 then refuses at once, and the test is tried again, for a bounded time.
    let give_up = Instant::now() + BUSY_WAIT;
    loop {
        // iperf3 -J reports its own errors in the JSON (and exits 1): read them there.
        let result = run_client(ns, IPERF3, &args, duration)
            .and_then(|out| parse_iperf3(&out))
            .map_err(|e| format!("iperf3 {target}: {e}"));
        match result {
            Err(e) if e.contains(SERVER_BUSY) && Instant::now() < give_up => {
                thread::sleep(Duration::from_millis(200));
            }
            Ok(r) => return r,
            Err(e) => return failed(e),
        }
    }
}

/// What iperf3 says when its server still runs a test.
const SERVER_BUSY: &str = "the server is busy";
/// How long a client waits for a busy server.
const BUSY_WAIT: Duration = Duration::from_secs(10);

fn failed(error: String) -> LoadResult {
    LoadResult {
        failed: 1,
        first_error: Some(error),
        ..LoadResult::default()
    }
}

/// wrk's summary: `N requests in 5.00s, ... read`, its socket errors and non-2xx/3xx
/// answers (both failures).
pub fn parse_wrk(out: &str) -> Result<LoadResult, String> {
    let summary = out
        .lines()
        .find(|l| l.contains(" requests in "))
        .ok_or_else(|| format!("no summary in {out:?}"))?;
    let mut words = summary.split_whitespace();
    let ok: u64 = words
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("bad summary {summary:?}"))?;
    let took = words
        .nth(2)
        .map(|t| t.trim_end_matches(','))
        .and_then(wrk_duration)
        .ok_or_else(|| format!("bad duration in {summary:?}"))?;
    let errors: u64 = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Socket errors:"))
        .map(|e| {
            e.split(',')
                .filter_map(|f| f.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    let bad_answers: u64 = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Non-2xx or 3xx responses:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    let failed = errors + bad_answers;
    Ok(LoadResult {
        ok,
        failed,
        bytes: 0,
        elapsed: took,
        first_error: (failed > 0)
            .then(|| format!("wrk: {errors} socket errors, {bad_answers} bad answers: {summary}")),
    })
}

/// wrk's durations: `5.00s`, `850.00ms`, `1.00m`.
fn wrk_duration(text: &str) -> Option<Duration> {
    let (number, scale) = if let Some(ms) = text.strip_suffix("ms") {
        (ms, 1e-3)
    } else if let Some(s) = text.strip_suffix('s') {
        (s, 1.0)
    } else if let Some(m) = text.strip_suffix('m') {
        (m, 60.0)
    } else {
        return None;
    };
    Some(Duration::from_secs_f64(number.parse::<f64>().ok()? * scale))
}

/// iperf3's JSON: the receiver's byte count and seconds, or its `error`.
pub fn parse_iperf3(out: &str) -> Result<LoadResult, String> {
    let v: Value = serde_json::from_str(out).map_err(|e| format!("not JSON ({e}): {out:?}"))?;
    if let Some(e) = v.get("error").and_then(Value::as_str) {
        return Err(e.to_string());
    }
    let received = &v["end"]["sum_received"];
    let bytes = received["bytes"]
        .as_u64()
        .ok_or("no end.sum_received.bytes")?;
    let seconds = received["seconds"]
        .as_f64()
        .ok_or("no end.sum_received.seconds")?;
    if bytes == 0 {
        return Err("no bytes received".into());
    }
    Ok(LoadResult {
        ok: 1,
        failed: 0,
        bytes,
        elapsed: Duration::from_secs_f64(seconds),
        first_error: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_summary_gives_requests_time_and_failures() {
        let out = "Running 5s test @ http://10.0.0.100:80/keep\n  2 threads and 50 connections\n\
                   \x20 Thread Stats   Avg      Stdev     Max   +/- Stdev\n\
                   \x20 123456 requests in 5.01s, 12.34MB read\n\
                   \x20 Socket errors: connect 1, read 2, write 0, timeout 3\n\
                   \x20 Non-2xx or 3xx responses: 4\nRequests/sec:  24691.20\n";
        let r = parse_wrk(out).unwrap();
        assert_eq!((r.ok, r.failed), (123_456, 10));
        assert_eq!(r.elapsed, Duration::from_millis(5010));
        let clean = "  10 requests in 850.00ms, 1KB read\nRequests/sec: 11.7\n";
        let r = parse_wrk(clean).unwrap();
        assert_eq!((r.ok, r.failed, r.first_error), (10, 0, None));
        assert_eq!(r.elapsed, Duration::from_millis(850));
        assert!(parse_wrk("unable to connect").is_err());
    }

    #[test]
    fn iperf3_json_gives_bytes_or_its_error() {
        let ok = r#"{"end": {"sum_received": {"bytes": 1000000, "seconds": 2.5}}}"#;
        let r = parse_iperf3(ok).unwrap();
        assert_eq!((r.ok, r.bytes), (1, 1_000_000));
        assert_eq!(r.elapsed, Duration::from_millis(2500));
        let err = r#"{"start": {}, "error": "unable to connect to server: Connection refused"}"#;
        assert_eq!(
            parse_iperf3(err).unwrap_err(),
            "unable to connect to server: Connection refused"
        );
        assert!(parse_iperf3("{\"end\": {}}").is_err());
    }
}
