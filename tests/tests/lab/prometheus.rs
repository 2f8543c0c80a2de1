//! A real Prometheus (Debian's `prometheus` package) against `deploy/prometheus/`: its
//! config and rules pass `promtool check`, every alert has unit tests that pass
//! (`promtool test rules`), and, scraping a running `lbd` with `prometheus.yml` (its
//! target set to the lab lbd's metrics address), it answers queries for every series
//! the Grafana dashboard and the alert rules use.
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use lb_tests::{
    http, lab_config, lbd_metrics, output_within, scenario::three_zones, Daemon, RunningLb,
};

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// The `*.rules.yml` and `*.rules.test.yml` files of deploy/prometheus/.
fn rules_files(suffix: &str) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(deploy().join("prometheus"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(suffix))
        .collect();
    files.sort();
    files
}

fn promtool(args: &[&str]) -> String {
    let mut cmd = Command::new("promtool");
    cmd.args(args).current_dir(deploy().join("prometheus"));
    let out = output_within(cmd, Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("promtool {args:?} (cargo xtask setup installs it): {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

/// Every alert of the rules files has a test where it stays quiet and one where it fires.
#[test]
fn the_config_and_rules_pass_promtool_and_every_alert_has_passing_tests() {
    let rules = rules_files(".rules.yml");
    let tests = rules_files(".rules.test.yml");
    assert_eq!(rules.len(), tests.len(), "{rules:?} {tests:?}");
    promtool(&["check", "config", "prometheus.yml"]);
    let mut args = vec!["check", "rules"];
    args.extend(rules.iter().map(String::as_str));
    promtool(&args);
    let mut args = vec!["test", "rules"];
    args.extend(tests.iter().map(String::as_str));
    let out = promtool(&args);
    assert_eq!(out.matches("SUCCESS").count(), tests.len(), "{out}");

    let read =
        |name: &String| std::fs::read_to_string(deploy().join("prometheus").join(name)).unwrap();
    let alerts: BTreeSet<String> = rules
        .iter()
        .flat_map(|f| {
            read(f)
                .lines()
                .filter_map(|l| l.trim().strip_prefix("- alert: ").map(str::to_string))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(alerts.len() >= 9, "{alerts:?}");
    let (mut quiet, mut firing) = (BTreeSet::new(), BTreeSet::new());
    for file in &tests {
        let text = read(file);
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        for pair in lines.windows(2) {
            if let Some(name) = pair[0].strip_prefix("alertname: ") {
                match pair[1] {
                    "exp_alerts: []" => quiet.insert(name.to_string()),
                    "exp_alerts:" => firing.insert(name.to_string()),
                    other => panic!("{file}: {name} followed by {other}"),
                };
            }
        }
    }
    assert_eq!(quiet, alerts, "alerts tested quiet");
    assert_eq!(firing, alerts, "alerts tested firing");
}

/// Every `lb_*` name in `text` (queries of a dashboard or rules file).
fn lb_metric_names(text: &str) -> BTreeSet<String> {
    text.match_indices("lb_")
        .filter(|(at, _)| {
            !text[..*at]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        })
        .map(|(at, _)| {
            text[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Where Prometheus listens, inside the LB namespace.
const PROMETHEUS: &str = "127.0.0.1:9090";

/// One instant query through Prometheus's HTTP API: the result vector.
fn query(lb: &RunningLb, promql: &str) -> Vec<serde_json::Value> {
    let path = format!("/api/v1/query?query={promql}");
    let response = lb.lab.run_in(lb.lab.lb_ns(), move || {
        http::tcp(PROMETHEUS.parse().unwrap(), "GET", &path, &[], None)
    });
    match response {
        Ok(r) if r.status == 200 => r.json()["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

#[test]
fn prometheus_scrapes_lbd_and_returns_the_dashboards_series() {
    let lab = three_zones();
    let config = lab_config(&lab, &[1, 1, 1]);
    let mut lb = RunningLb::start(lab, &config);
    lb.wait_healthy(0, &[0, 1, 2], Duration::from_secs(60));
    let result = lb.burst(20, Duration::from_secs(3), Duration::from_secs(60));
    assert_eq!(result.ok, 20, "{:?}", result.failed);

    // prometheus.yml with its target templated to the lab lbd's metrics.listen.
    let dir = TempDir(std::env::temp_dir().join(format!("{}-prometheus", lb.lab.prefix())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let example = std::fs::read_to_string(deploy().join("prometheus/prometheus.yml")).unwrap();
    // lab_config leaves metrics.listen at its default.
    let target = lbd_metrics::METRICS_LISTEN;
    let templated = example.replace("\"127.0.0.1:9464\"", &format!("\"{target}\""));
    assert!(
        templated.contains(&format!("targets: [\"{target}\"]")),
        "{templated}"
    );
    std::fs::write(dir.0.join("prometheus.yml"), templated).unwrap();
    for rules in rules_files(".rules.yml") {
        std::fs::copy(deploy().join("prometheus").join(&rules), dir.0.join(&rules)).unwrap();
    }
    let config_arg = format!("--config.file={}", dir.0.join("prometheus.yml").display());
    let storage_arg = format!("--storage.tsdb.path={}", dir.0.join("data").display());
    let listen_arg = format!("--web.listen-address={PROMETHEUS}");
    let mut prometheus = Daemon::spawn_in_ns(
        lb.lab.lb_ns(),
        Path::new("prometheus"),
        &[&config_arg, &storage_arg, &listen_arg, "--log.level=warn"],
    );

    // Scraped (every 5 s), and every series the dashboard and the rules query is there.
    let dashboard = std::fs::read_to_string(deploy().join("grafana/lbd-dashboard.json")).unwrap();
    let mut wanted = lb_metric_names(&dashboard);
    assert!(wanted.len() > 8, "{wanted:?}");
    for rules in rules_files(".rules.yml") {
        wanted.extend(lb_metric_names(
            &std::fs::read_to_string(deploy().join("prometheus").join(rules)).unwrap(),
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    let missing = loop {
        let up = query(&lb, "up");
        let scraped = up.iter().any(|s| {
            s["metric"]["job"] == "lbd"
                && s["metric"]["lb_node"] == "gateway-1"
                && s["value"][1] == "1"
        });
        let missing: Vec<&String> = if scraped {
            wanted
                .iter()
                .filter(|name| query(&lb, name).is_empty())
                .collect()
        } else {
            wanted.iter().collect()
        };
        if missing.is_empty() || Instant::now() >= deadline {
            break missing;
        }
        assert!(
            prometheus.try_wait().is_none(),
            "prometheus exited: {}",
            prometheus.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        missing.is_empty(),
        "Prometheus has no series {missing:?} from lbd (up: {:?}); its log:\n{}",
        query(&lb, "up"),
        prometheus.log()
    );
    // The series carry lbd's values: the web service's new flows counted the burst.
    let flows = query(&lb, "lb_service_new_flows_total");
    let web = flows
        .iter()
        .find(|s| s["metric"]["service"] == "web")
        .unwrap_or_else(|| panic!("{flows:?}"));
    let count: f64 = web["value"][1].as_str().unwrap().parse().unwrap();
    assert!(count >= 20.0, "{web}");
    prometheus.stop();
}
