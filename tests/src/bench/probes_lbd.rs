//! Health probes end to end through `lbd`: N backends (addresses on `lo` of one lab
//! namespace, one responder for all their probes, see `many_backends`) probed every
//! second by a real `lbd`, which must apply every result on its loop. Counted over a
//! fixed window once every backend has its first verdict, from lbd's own `/metrics`:
//! results applied per second (`lb_probe_results_total`), the lag from a probe's
//! completion to its application (`lb_probe_apply_lag_seconds`), how late the loop
//! handles its timer (`lb_loop_lag_seconds`), the loop's busy time
//! (`lb_loop_busy_seconds_total`), and lbd's whole CPU (`/proc/<pid>/stat`: probes,
//! loop, metrics, everything).
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    thread,
    time::{Duration, Instant},
};

use serde_json::{json, Value};

use super::table::{fixed, Table};
use crate::{
    http,
    many_backends::{self, ProbeResponder},
    running_lb::{LabConfig, RunningLb},
    topology::{Lab, LabSpec},
};

pub struct Options {
    /// Backend counts, one row each.
    pub backends: Vec<usize>,
    /// The counting window of each row.
    pub seconds: f64,
}

const PROBE_PORT: u16 = 9090;
const INTERVAL: Duration = Duration::from_secs(1);
const METRICS: &str = "127.0.0.1:9464";
/// How long every backend may take to get its first verdict.
const VERDICT_WAIT: Duration = Duration::from_secs(60);

/// Samples of one scrape: `name{labels}` -> value.
type Scrape = BTreeMap<String, f64>;

fn scrape(lb: &RunningLb) -> Scrape {
    let addr: SocketAddr = METRICS.parse().expect("an address");
    let r = lb
        .lab
        .run_in(lb.lab.lb_ns(), move || {
            http::tcp(addr, "GET", "/metrics", &[], None)
        })
        .unwrap_or_else(|e| panic!("scraping lbd: {e}"));
    r.body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.to_string(), value.parse().ok()?))
        })
        .collect()
}

fn delta(a: &Scrape, b: &Scrape, key: &str) -> f64 {
    b.get(key).copied().unwrap_or(0.0) - a.get(key).copied().unwrap_or(0.0)
}

/// The `q` quantile of histogram `name` between two scrapes, as the upper bound of the
/// bucket it falls in (seconds).
fn quantile(a: &Scrape, b: &Scrape, name: &str, q: f64) -> f64 {
    let prefix = format!("{name}_bucket{{le=\"");
    let mut buckets: Vec<(f64, f64)> = b
        .keys()
        .filter_map(|k| {
            let le = k.strip_prefix(&prefix)?.strip_suffix("\"}")?;
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((bound, delta(a, b, k)))
        })
        .collect();
    buckets.sort_by(|x, y| x.0.total_cmp(&y.0));
    let total = buckets.last().map_or(0.0, |(_, n)| *n);
    buckets
        .iter()
        .find(|(_, n)| *n >= q * total && total > 0.0)
        .map_or(f64::NAN, |(bound, _)| *bound)
}

/// CPU seconds (user + system) of process `pid`.
fn process_cpu(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at state.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

struct Outcome {
    backends: usize,
    /// Backends with a verdict when counting started.
    verdicts: usize,
    verdicts_after_s: f64,
    applied_per_second: f64,
    lag_median_ms: f64,
    lag_p99_ms: f64,
    lag_mean_ms: f64,
    loop_lag_p99_ms: f64,
    loop_busy_share: f64,
    lbd_cpu_share: f64,
    us_per_result: f64,
}

fn row(backends: usize, window: Duration) -> Outcome {
    let lab = Lab::build(&LabSpec::with_backends(1));
    many_backends::add_addresses(&lab, backends);
    let _responder = ProbeResponder::start(lab.backend_ns(0), PROBE_PORT);
    let health = format!(
        "health: {{ port: {PROBE_PORT}, interval: {}ms, timeout: 500ms, passive_failure_ratio: 0 }}",
        INTERVAL.as_millis()
    );
    let mut yaml = format!(
        "limits: {{ max_backends: 16384 }}\n{}",
        LabConfig::new(&lab).policy(&[&health]).yaml()
    );
    let zone = lab.backend_spec(0).zone.clone();
    for i in 0..backends {
        yaml.push_str(&format!(
            "      - {{ address: {}, port: 8080, zone: {zone} }}\n",
            many_backends::address(i)
        ));
    }
    let started = Instant::now();
    let lb = RunningLb::start(lab, &yaml);
    let all = backends + 1;
    // A bench measures and reports: an lbd that cannot keep up gets its row anyway,
    // with the count of verdicts it reached.
    let deadline = started + VERDICT_WAIT;
    let verdicts = |lb: &RunningLb| {
        lb.lbd
            .log()
            .lines()
            .filter(|l| l.contains("unknown -> healthy"))
            .count()
    };
    let mut reached = verdicts(&lb);
    while reached < all && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
        reached = verdicts(&lb);
    }
    let verdicts_after_s = if reached == all {
        started.elapsed().as_secs_f64()
    } else {
        f64::NAN
    };
    thread::sleep(INTERVAL);
    let pid = lb.lbd.pid();
    let (a, cpu_a, t_a) = (scrape(&lb), process_cpu(pid), Instant::now());
    thread::sleep(window);
    let (b, cpu_b, t_b) = (scrape(&lb), process_cpu(pid), Instant::now());
    let elapsed = (t_b - t_a).as_secs_f64();
    let results = delta(&a, &b, "lb_probe_results_total");
    let busy = delta(&a, &b, "lb_loop_busy_seconds_total{event=\"probe\"}")
        + delta(&a, &b, "lb_loop_busy_seconds_total{event=\"tick\"}");
    let lag_count = delta(&a, &b, "lb_probe_apply_lag_seconds_count");
    Outcome {
        backends,
        verdicts: reached,
        verdicts_after_s,
        applied_per_second: results / elapsed,
        lag_median_ms: quantile(&a, &b, "lb_probe_apply_lag_seconds", 0.5) * 1e3,
        lag_p99_ms: quantile(&a, &b, "lb_probe_apply_lag_seconds", 0.99) * 1e3,
        lag_mean_ms: delta(&a, &b, "lb_probe_apply_lag_seconds_sum") / lag_count.max(1.0) * 1e3,
        loop_lag_p99_ms: quantile(&a, &b, "lb_loop_lag_seconds", 0.99) * 1e3,
        loop_busy_share: busy / elapsed,
        lbd_cpu_share: (cpu_b - cpu_a) / elapsed,
        us_per_result: (cpu_b - cpu_a) * 1e6 / results.max(1.0),
    }
}

pub fn run(opts: &Options) -> Value {
    let window = Duration::from_secs_f64(opts.seconds);
    let outcomes: Vec<Outcome> = opts.backends.iter().map(|n| row(*n, window)).collect();
    let mut table = Table::new(
        format!(
            "health probes through lbd: TCP, every {} s, {:.1} s counted per row",
            INTERVAL.as_secs(),
            opts.seconds
        ),
        &[
            "backends",
            "offered/s",
            "verdicts after",
            "applied/s",
            "apply lag med/p99 ms",
            "lag mean ms",
            "loop lag p99 ms",
            "loop busy",
            "lbd CPU",
            "lbd CPU us/result",
        ],
    );
    for o in &outcomes {
        table.row(vec![
            o.backends.to_string(),
            (o.backends as u64 * 1000 / INTERVAL.as_millis() as u64).to_string(),
            if o.verdicts_after_s.is_nan() {
                format!(
                    "{} of {} in {} s",
                    o.verdicts,
                    o.backends + 1,
                    VERDICT_WAIT.as_secs()
                )
            } else {
                format!("{:.1} s", o.verdicts_after_s)
            },
            fixed(o.applied_per_second, 0),
            format!("{} / {}", fixed(o.lag_median_ms, 1), fixed(o.lag_p99_ms, 1)),
            fixed(o.lag_mean_ms, 2),
            fixed(o.loop_lag_p99_ms, 1),
            format!("{:.1}% of a core", o.loop_busy_share * 100.0),
            format!("{:.1}% of a core", o.lbd_cpu_share * 100.0),
            fixed(o.us_per_result, 1),
        ]);
    }
    table.note("verdicts after: lbd start to every backend's first `healthy` (two results each)");
    table.note(
        "apply lag: a probe's completion to lbd's loop applying it (histogram bucket bounds); \
         loop busy: the loop's time handling results and timer ticks",
    );
    table.note("lbd CPU: the whole process (probe tasks, loop, metrics), from /proc/<pid>/stat");
    table.print();
    json!(outcomes
        .iter()
        .map(|o| json!({
            "backends": o.backends,
            "interval_ms": INTERVAL.as_millis() as u64,
            "verdicts": o.verdicts,
            "verdicts_after_s": o.verdicts_after_s,
            "results_applied_per_second": o.applied_per_second,
            "apply_lag_median_ms": o.lag_median_ms,
            "apply_lag_p99_ms": o.lag_p99_ms,
            "apply_lag_mean_ms": o.lag_mean_ms,
            "loop_lag_p99_ms": o.loop_lag_p99_ms,
            "loop_busy_cores": o.loop_busy_share,
            "lbd_cpu_cores": o.lbd_cpu_share,
            "lbd_cpu_us_per_result": o.us_per_result,
        }))
        .collect::<Vec<_>>())
}
