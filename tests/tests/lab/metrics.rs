//! `/metrics`, `/healthz` and `/readyz` of a real `lbd` after known traffic: the
//! counters match what was sent, and the output is valid exposition text (checked line
//! by line here, and parsed with the `prometheus-parse` crate).
use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use lb_tests::{http, lab_config, lbd_metrics, scenario::three_zones, Lab, LabSpec, RunningLb};

fn get(lb: &RunningLb, path: &'static str) -> http::Response {
    lbd_metrics::get(&lb.lab, path)
}
/// A strict reading of the text format: `# HELP`/`# TYPE` before a family's samples,
/// names and labels well formed, every value a number, `# EOF` last. Returns every
/// sample as (name, labels, value).
fn strict_parse(text: &str) -> Vec<(String, BTreeMap<String, String>, f64)> {
    let is_name = |s: &str| {
        !s.is_empty()
            && s.chars().enumerate().all(|(i, c)| {
                c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
            })
    };
    let mut typed: Vec<String> = Vec::new();
    let mut samples = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.last(),
        Some(&"# EOF"),
        "exposition must end with # EOF"
    );
    for line in &lines[..lines.len() - 1] {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(is_name(name), "bad family name in {line:?}");
            assert!(
                ["counter", "gauge", "histogram", "info", "unknown"].contains(&kind),
                "{line:?}"
            );
            typed.push(name.to_string());
            continue;
        }
        if line.starts_with("# HELP ") || line.starts_with("# UNIT ") {
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment {line:?}");
        let (series, value) = line.rsplit_once(' ').expect("sample has a value");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels in {line:?}"));
                let mut labels = BTreeMap::new();
                for pair in body.split("\",").filter(|p| !p.is_empty()) {
                    let (k, v) = pair
                        .split_once("=\"")
                        .unwrap_or_else(|| panic!("bad label in {line:?}"));
                    assert!(is_name(k), "bad label name in {line:?}");
                    labels.insert(k.to_string(), v.trim_end_matches('"').to_string());
                }
                (name, labels)
            }
        };
        assert!(is_name(name), "bad metric name in {line:?}");
        let family_known = typed.iter().any(|f| {
            name == f
                || ["_total", "_bucket", "_sum", "_count", "_created"]
                    .iter()
                    .any(|s| name == format!("{f}{s}"))
        });
        assert!(family_known, "sample before its # TYPE: {line:?}");
        samples.push((name.to_string(), labels, value));
    }
    samples
}

fn value(
    samples: &[(String, BTreeMap<String, String>, f64)],
    name: &str,
    labels: &[(&str, &str)],
) -> f64 {
    let hits: Vec<f64> = samples
        .iter()
        .filter(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| *v)
        .collect();
    assert!(!hits.is_empty(), "no {name}{labels:?}");
    hits.iter().sum()
}

/// prometheus-parse and the strict parser see the same series. prometheus-parse gathers
/// a histogram's `_bucket` lines into one sample named after the family (its `_sum` and
/// `_count` keep their names), so bucket lines count under the family's name here.
fn assert_same_series_names(body: &str) {
    let parsed = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string())))
        .expect("prometheus-parse reads the exposition");
    let from_parse: std::collections::BTreeSet<String> =
        parsed.samples.iter().map(|s| s.metric.clone()).collect();
    let from_strict: std::collections::BTreeSet<String> = strict_parse(body)
        .into_iter()
        .map(|(name, _, _)| match name.strip_suffix("_bucket") {
            Some(family) if body.contains(&format!("# TYPE {family} histogram")) => {
                family.to_string()
            }
            _ => name,
        })
        .collect();
    assert_eq!(
        from_parse, from_strict,
        "both parsers see the same series names"
    );
}

#[test]
fn metrics_match_the_traffic_sent_and_parse_as_prometheus_exposition() {
    let lab = three_zones();
    let config = lab_config(&lab, &[1, 1, 1]);
    let lb = RunningLb::start(lab, &config);
    assert_eq!(get(&lb, "/healthz").status, 200);
    assert_eq!(get(&lb, "/readyz").status, 200);

    let sent = 60;
    let result = lb.burst(sent, Duration::from_secs(3), Duration::from_secs(60));
    result.assert_all_answered(sent);

    let r = get(&lb, "/metrics");
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let samples = strict_parse(&r.body);
    let parsed = prometheus_parse::Scrape::parse(r.body.lines().map(|l| Ok(l.to_string())))
        .expect("prometheus-parse reads the exposition");
    let parsed_new_flows: f64 = parsed
        .samples
        .iter()
        .filter(|s| s.metric == "lb_service_new_flows_total")
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
            ref other => panic!("lb_service_new_flows_total parsed as {other:?}"),
        })
        .sum();
    assert_eq!(
        parsed_new_flows, sent as f64,
        "prometheus-parse reads the same value"
    );
    assert_same_series_names(&r.body);

    let web = [("service", "web")];
    assert_eq!(
        value(&samples, "lb_service_new_flows_total", &web),
        sent as f64
    );
    for (i, name) in ["b1", "b2", "b3"].iter().enumerate() {
        let got = result.per_backend.get(*name).copied().unwrap_or(0) as f64;
        let addr = format!("10.1.0.{}:8080", 11 + i);
        let labels = [("service", "web"), ("backend", addr.as_str())];
        assert_eq!(
            value(&samples, "lb_backend_new_flows_total", &labels),
            got,
            "{name}"
        );
        let zone = ["az-a", "az-b", "az-c"][i];
        assert_eq!(
            value(
                &samples,
                "lb_zone_new_flows_total",
                &[("service", "web"), ("zone", zone)]
            ),
            got,
            "{zone}"
        );
        // Exactly one state is set; a serving backend is never `unhealthy`.
        let state = |s: &str| {
            value(
                &samples,
                "lb_backend_health_state",
                &[("backend", addr.as_str()), ("state", s)],
            )
        };
        assert_eq!(
            state("healthy") + state("unhealthy") + state("unknown"),
            1.0
        );
        assert_eq!(state("unhealthy"), 0.0);
        assert_eq!(value(&samples, "lb_backend_effective_weight", &labels), 1.0);
        // One SYN through the VIP per connection, each accepted; lbd's own probes go
        // to the backends directly and are not counted.
        let signal = |s: &str| {
            value(
                &samples,
                "lb_backend_signals_total",
                &[("backend", addr.as_str()), ("signal", s)],
            )
        };
        assert_eq!((signal("syn"), signal("syn_ack")), (got, got), "{name}");
    }
    // Every packet of these connections found a flow entry or completed a handshake.
    assert_eq!(
        value(&samples, "lb_service_stateless_forwards_total", &web),
        0.0
    );
    assert_eq!(
        value(&samples, "lb_service_flows_from_replies_total", &web),
        0.0
    );
    // Each HTTP/1.0 exchange is at least SYN, ACK, request and FIN towards the backend,
    // and SYN-ACK, response and FIN back; the per-backend series add up to the service's.
    let to_backend = value(
        &samples,
        "lb_service_packets_total",
        &[("service", "web"), ("direction", "to_backend")],
    );
    let to_client = value(
        &samples,
        "lb_service_packets_total",
        &[("service", "web"), ("direction", "to_client")],
    );
    assert!(to_backend >= 4.0 * sent as f64, "{to_backend}");
    assert!(to_client >= 3.0 * sent as f64, "{to_client}");
    assert_eq!(
        value(
            &samples,
            "lb_backend_packets_total",
            &[("direction", "to_backend")]
        ),
        to_backend
    );
    assert!(value(&samples, "lb_service_bytes_total", &web) >= 54.0 * (to_backend + to_client));
    let forwarded = value(
        &samples,
        "lb_datapath_packets_total",
        &[("reason", "redirect_interface")],
    );
    assert!(
        forwarded >= to_backend + to_client - 2.0 * sent as f64,
        "{forwarded}"
    );
    assert_eq!(
        value(&samples, "lb_map_entries", &[("map", "backends")]),
        3.0
    );
    assert_eq!(
        value(&samples, "lb_map_capacity", &[("map", "flows")]),
        262144.0
    );
    assert_eq!(value(&samples, "lb_build_info", &[]), 1.0);
    let active = value(&samples, "lb_backend_active_flows", &[]);
    assert!(active <= sent as f64, "{active}");

    // Probes run every 2 s by default: within a few intervals every backend has a
    // latency histogram and is healthy.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let body = get(&lb, "/metrics").body;
        let samples = strict_parse(&body);
        let probed = samples
            .iter()
            .filter(|(n, _, v)| n == "lb_probe_duration_seconds_count" && *v >= 1.0)
            .count();
        let healthy = samples
            .iter()
            .filter(|(n, l, v)| {
                n == "lb_backend_health_state"
                    && l.get("state").map(String::as_str) == Some("healthy")
                    && *v == 1.0
            })
            .count();
        if probed == 3 && healthy == 3 {
            assert!(body.contains("# TYPE lb_probe_duration_seconds histogram"));
            // Now with histogram series, whose bucket lines the parsers name differently.
            assert_same_series_names(&body);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{probed} backends probed, {healthy} healthy:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Scrape cost with 1,000 backends (10 services x 100): every series is there, and the
/// time is printed for docs/metrics.md (not asserted: this machine is shared).
#[test]
fn a_scrape_with_1000_backends_has_every_series() {
    let lab = Lab::build(&LabSpec::with_backends(1));
    let mut config = lab_config(&lab, &[1]);
    config = config[..config.find("services:").unwrap()].to_string();
    config.push_str("services:\n");
    for s in 0..10 {
        config.push_str(&format!(
            "  - name: svc{s}\n    vip: 10.0.0.{}\n    port: 80\n    backends:\n",
            100 + s
        ));
        for b in 0..100 {
            config.push_str(&format!(
                "      - {{ address: 10.2.{s}.{}, port: 8080, zone: az-{} }}\n",
                b + 1,
                ["a", "b", "c"][b % 3]
            ));
        }
    }
    let lb = RunningLb::start(lab, &config);
    let _warm = get(&lb, "/metrics");
    let mut times = Vec::new();
    let mut body = String::new();
    for _ in 0..5 {
        let started = Instant::now();
        let r = get(&lb, "/metrics");
        times.push(started.elapsed());
        assert_eq!(r.status, 200);
        body = r.body;
    }
    let samples = strict_parse(&body);
    let backends = samples
        .iter()
        .filter(|(n, _, _)| n == "lb_backend_new_flows_total")
        .count();
    assert_eq!(backends, 1000);
    times.sort();
    eprintln!(
        "metrics scrape with 1000 backends: median {:?}, min {:?}, {} bytes, {} samples",
        times[2],
        times[0],
        body.len(),
        samples.len()
    );
}
