//! The operator surface end to end: `lbctl` and the admin API against a real `lbd` in a
//! namespace lab. Every verb, in tables and in JSON parsed back; bad requests refused
//! with a 4xx naming the problem and changing nothing; the socket closed to other
//! users; the TCP listener closed without the token.
use std::{os::unix::fs::MetadataExt as _, os::unix::fs::PermissionsExt as _, time::Duration};

use lb_tests::{http, lab_config, scenario::three_zones, RunningLb};
use serde_json::{json, Value};

fn running() -> RunningLb {
    let lab = three_zones();
    let config = lab_config(&lab, &[1, 1, 1]);
    RunningLb::start(lab, &config)
}

/// Waits (bounded) until the data path uses `want` as the backend's weight.
fn wait_effective_weight(ctl: &lb_tests::Lbctl, service: &str, address: &str, want: f64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let list = ctl.json(&["backend", "list", service]);
        let got = find(&list, "address", address)["effective_weight"].as_f64();
        if got == Some(want) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{service}/{address}: effective weight {got:?}, want {want}: {list:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn find<'v>(list: &'v Value, key: &str, value: &str) -> &'v Value {
    list.as_array()
        .expect("a JSON list")
        .iter()
        .find(|v| v[key] == value)
        .unwrap_or_else(|| panic!("no {key}={value} in {list:#}"))
}

/// `web`'s table digest is one number in `lbctl service list` (hex), its `-o json`
/// and `/metrics` (decimal). Probes may change it meanwhile, so the three are read
/// between two scrapes that agree (bounded retries).
fn assert_digest_shown_alike(lb: &RunningLb) {
    let series = "lb_service_table_digest{service=\"web\"}";
    let scrape = || {
        let body = lb_tests::lbd_metrics::get(&lb.lab, "/metrics").body;
        lb_tests::lbd_metrics::sample(&body, series).unwrap_or_else(|| panic!("no {series}"))
    };
    let ctl = lb.lbctl();
    for _ in 0..20 {
        let before = scrape();
        let table = ctl.ok(&["service", "list"]);
        let list = ctl.json(&["service", "list"]);
        if scrape() != before {
            std::thread::sleep(Duration::from_millis(200));
            continue;
        }
        let digest = find(&list, "name", "web")["table_digest"]
            .as_u64()
            .unwrap_or_else(|| panic!("no table digest in {list:#}"));
        assert!(digest > 0 && digest < 1 << 48, "{list:#}");
        assert_eq!(digest as f64, before);
        let row = table.lines().find(|l| l.starts_with("web ")).unwrap();
        assert!(row.contains(&format!("{digest:012x}")), "{table}");
        return;
    }
    panic!("{series} changed between every two scrapes");
}

#[test]
fn every_lbctl_verb_against_a_running_lbd() {
    let lb = running();
    let ctl = lb.lbctl();

    // service list|show|add
    let table = ctl.ok(&["service", "list"]);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(
        table.contains("web") && table.contains("10.0.0.100:80"),
        "{table}"
    );
    let list = ctl.json(&["service", "list"]);
    assert_eq!(find(&list, "name", "web")["backends"], 3);
    assert_digest_shown_alike(&lb);
    let web = ctl.json(&["service", "show", "web"]);
    assert_eq!(web["vip"], "10.0.0.100");
    assert_eq!(web["backends"].as_array().unwrap().len(), 3);
    let out = ctl.ok(&[
        "service",
        "add",
        "api",
        "--vip",
        "10.0.0.101",
        "--port",
        "81",
    ]);
    assert!(out.contains("+ service api"), "{out}");
    assert_eq!(ctl.json(&["service", "list"]).as_array().unwrap().len(), 2);

    // backend add|list|set-weight|drain|undrain|remove
    let out = ctl.ok(&[
        "backend",
        "add",
        "api",
        "10.1.0.11:8080",
        "--zone",
        "az-a",
        "--weight",
        "2",
    ]);
    assert!(out.contains("+ backend api/10.1.0.11:8080"), "{out}");
    let backends = ctl.json(&["backend", "list", "api"]);
    assert_eq!(backends[0]["weight"], 2);
    // A backend added to a running service takes flows once its probes pass.
    wait_effective_weight(&ctl, "api", "10.1.0.11", 2.0);
    let out = ctl.ok(&["backend", "set-weight", "api", "10.1.0.11:8080", "5"]);
    assert!(out.contains("weight: 2 -> 5"), "{out}");
    let out = ctl.ok(&["backend", "drain", "web", "10.1.0.12:8080"]);
    assert!(out.contains("state: active -> draining"), "{out}");
    let out = ctl.ok(&["backend", "drain", "web", "10.1.0.12:8080"]);
    assert!(out.contains("no change"), "draining twice: {out}");
    let all = ctl.json(&["backend", "list"]);
    assert_eq!(all.as_array().unwrap().len(), 4);
    let b2 = all
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["address"] == "10.1.0.12")
        .unwrap();
    assert_eq!(b2["state"], "draining");
    let table = ctl.ok(&["backend", "list", "web"]);
    assert!(table.contains("draining"), "{table}");
    ctl.ok(&["backend", "undrain", "web", "10.1.0.12:8080"]);
    assert_eq!(ctl.json(&["backend", "list", "web"])[1]["state"], "active");
    let out = ctl.ok(&["backend", "remove", "api", "10.1.0.11:8080"]);
    assert!(out.contains("- backend api/10.1.0.11:8080"), "{out}");

    // zone list|drain|undrain
    let zones = ctl.json(&["zone", "list"]);
    assert_eq!(zones.as_array().unwrap().len(), 3);
    assert_eq!(find(&zones, "zone", "az-a")["local"], true);
    let out = ctl.ok(&["zone", "drain", "az-c", "--service", "web"]);
    assert!(out.contains("drained_zones"), "{out}");
    assert_eq!(
        find(&ctl.json(&["zone", "list"]), "zone", "az-c")["drained_in"],
        json!(["web"])
    );
    assert!(ctl.ok(&["zone", "list"]).contains("az-c"));
    ctl.ok(&["zone", "undrain", "az-c"]);
    assert_eq!(
        find(&ctl.json(&["zone", "list"]), "zone", "az-c")["drained_in"],
        json!([])
    );

    // health: the probes' verdicts, last result and latency (bounded wait: probes run
    // every 2 s by default and two must pass).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let health = ctl.json(&["health"]);
        let list = health.as_array().unwrap();
        assert_eq!(list.len(), 3, "{health:#}");
        let all_healthy = list.iter().all(|h| {
            h["state"] == "healthy"
                && h["last_probe"] == "ok"
                && h["latency_ms"].is_number()
                && h["last_probe_age_ms"].is_number()
                && h["probe_failures"] == 0
        });
        if all_healthy {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not all healthy: {health:#}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let table = ctl.ok(&["health"]);
    assert!(
        table.contains("healthy")
            && table.contains("consecutive probes passed")
            && table.contains("AGE")
            && table.contains("FAILED"),
        "{table}"
    );

    // stats after known traffic, and top.
    let result = lb.burst(30, Duration::from_secs(3), Duration::from_secs(60));
    result.assert_all_answered(30);
    let stats = ctl.json(&["stats"]);
    assert_eq!(
        find(&stats["services"], "service", "web")["connections"],
        30
    );
    let per_backend: u64 = stats["backends"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["service"] == "web")
        .map(|b| b["connections"].as_u64().unwrap())
        .sum();
    assert_eq!(per_backend, 30);
    let zone_total: u64 = stats["zones"]
        .as_array()
        .unwrap()
        .iter()
        .map(|z| z["connections"].as_u64().unwrap())
        .sum();
    assert_eq!(zone_total, 30);
    let table = ctl.ok(&["stats"]);
    assert!(
        table.contains("SERVICE") && table.contains("BACKEND") && table.contains("ZONE"),
        "{table}"
    );
    let top = ctl.ok(&["top", "--duration", "1"]);
    assert!(top.contains("lbd top") && top.contains("web"), "{top}");
    for frame in top.split("lbd top").filter(|f| !f.trim().is_empty()) {
        assert!(
            frame.lines().count() <= 24,
            "frame taller than 24 lines:\n{frame}"
        );
    }
    assert!(top.lines().all(|l| l.chars().count() <= 80), "{top}");

    // config dump, apply (dry run, then for real).
    let dump = ctl.ok(&["config", "dump"]);
    assert!(
        dump.contains("services:") && dump.contains("name: api"),
        "{dump}"
    );
    let config = ctl.json(&["config", "dump"]);
    assert_eq!(config["services"].as_array().unwrap().len(), 2);
    let file = lb_tests::lab_run_dir(&lb.lab).join("apply.yaml");
    let without_api = dump.replace(&dump[dump.find("- name: api").unwrap()..], "");
    std::fs::write(&file, &without_api).unwrap();
    let dry = ctl.ok(&["apply", "-f", file.to_str().unwrap(), "--dry-run"]);
    assert!(
        dry.contains("- service api") && dry.contains("dry run"),
        "{dry}"
    );
    assert_eq!(ctl.json(&["service", "list"]).as_array().unwrap().len(), 2);
    let applied = ctl.json(&["apply", "-f", file.to_str().unwrap()]);
    assert_eq!(applied["applied"], true);
    assert_eq!(applied["changes"][0]["kind"], "removed");
    assert_eq!(ctl.json(&["service", "list"]).as_array().unwrap().len(), 1);
    let again = ctl.ok(&["apply", "-f", file.to_str().unwrap()]);
    assert!(again.contains("no change"), "{again}");

    // service remove, then completions and man.
    ctl.ok(&[
        "service",
        "add",
        "tmp",
        "--vip",
        "10.0.0.102",
        "--port",
        "80",
    ]);
    let out = ctl.ok(&["service", "remove", "tmp"]);
    assert!(out.contains("- service tmp"), "{out}");
    assert!(ctl.ok(&["completions", "bash"]).contains("lbctl"));
    assert!(ctl.ok(&["man"]).contains(".TH lbctl"));
}

#[test]
fn lbctl_errors_are_one_line_and_non_zero() {
    let lb = running();
    let ctl = lb.lbctl();
    let cases: &[(&[&str], &str)] = &[
        (
            &["backend", "list", "nope"],
            "service `nope` does not exist (HTTP 404)",
        ),
        (
            &["backend", "add", "web", "10.1.0.11:8080", "--zone", "az-a"],
            "already has backend 10.1.0.11:8080 (HTTP 409)",
        ),
        (
            &["backend", "set-weight", "web", "10.1.0.11:8080", "0"],
            "weight: 0 is out of range 1..=1000 (HTTP 400)",
        ),
        (
            &["zone", "drain", "az-q"],
            "zone `az-q` has no backend in any service (HTTP 404)",
        ),
    ];
    for (args, message) in cases {
        let out = ctl.run(args);
        assert_eq!(out.code, Some(1), "{args:?}: {out:?}");
        assert_eq!(out.stderr.lines().count(), 1, "{args:?}: {}", out.stderr);
        assert!(
            out.stderr.starts_with("lbctl: ") && out.stderr.contains(message),
            "{args:?}: {}",
            out.stderr
        );
    }
    let bad_addr = ctl.run(&["backend", "drain", "web", "10.1.0.300:8080"]);
    assert_eq!(
        bad_addr.code,
        Some(2),
        "a malformed address is a usage error: {bad_addr:?}"
    );
    assert!(
        bad_addr.stderr.contains("not an IPv4 address"),
        "{}",
        bad_addr.stderr
    );

    let gone = lb_tests::Lbctl::new(&lb_tests::lab_run_dir(&lb.lab).join("nothing-here.sock"));
    let out = gone.run(&["service", "list"]);
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("lbd is not running"), "{}", out.stderr);
}

/// Each bad request gets a 4xx with a JSON message naming the problem, and neither the
/// desired state nor the state file changes.
#[test]
fn bad_requests_get_a_4xx_naming_the_problem_and_change_nothing() {
    let lb = running();
    let socket = lb.socket();
    let before = http::unix(&socket, "GET", "/v1/config", None).json();
    let backend = |body: Value| body.to_string().into_bytes();
    let huge = vec![b' '; 2 << 20];
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        (
            "POST",
            "/v1/services/nope/backends",
            backend(json!({"address": "10.1.0.20", "port": 8080, "zone": "az-a"})),
            404,
            "service `nope` does not exist",
        ),
        (
            "POST",
            "/v1/services/web/backends",
            backend(json!({"address": "10.1.0.11", "port": 8080, "zone": "az-a"})),
            409,
            "already has backend 10.1.0.11:8080",
        ),
        (
            "POST",
            "/v1/services/web/backends",
            backend(json!({"address": "10.1.0.300", "port": 8080, "zone": "az-a"})),
            400,
            "address: invalid IP address syntax",
        ),
        (
            "POST",
            "/v1/services/web/backends",
            backend(json!({"address": "10.1.0.20", "port": 8080, "zone": "az-a", "weight": 0})),
            400,
            "weight: 0 is out of range 1..=1000",
        ),
        (
            "PUT",
            "/v1/services/web/backends/10.1.0.11:8080/weight",
            backend(json!({"weight": 5000})),
            400,
            "weight: 5000 is out of range 1..=1000",
        ),
        (
            "POST",
            "/v1/services/web/backends",
            b"{\"address\": \"10.1.0.20\", ".to_vec(),
            400,
            "malformed JSON",
        ),
        (
            "POST",
            "/v1/services/web/backends",
            backend(json!({"address": "10.1.0.20", "port": 8080, "zone": "az-a", "color": "red"})),
            400,
            "unknown field `color`",
        ),
        (
            "POST",
            "/v1/services/web/backends",
            huge,
            413,
            "length limit",
        ),
        (
            "POST",
            "/v1/services",
            backend(json!({"name": "web", "vip": "10.0.0.100", "port": 80})),
            409,
            "service `web` already exists",
        ),
        (
            "DELETE",
            "/v1/services/web/backends/10.1.0.99:8080",
            Vec::new(),
            404,
            "service `web` has no backend 10.1.0.99:8080",
        ),
        (
            "POST",
            "/v1/services/web/backends/nonsense/drain",
            Vec::new(),
            400,
            "backend: `nonsense` is not ADDRESS:PORT",
        ),
        (
            "POST",
            "/v1/apply",
            backend(json!({"services": [], "node": {"zone": "az-z"}})),
            400,
            "node: differs from the running config",
        ),
        ("GET", "/v1/nothing", Vec::new(), 404, "no such endpoint"),
    ];
    for (method, path, body, status, message) in cases {
        let r = http::unix(&socket, method, path, Some(&body));
        assert_eq!(r.status, status, "{method} {path}: {}", r.body);
        let error = r.json()["error"].as_str().unwrap_or_default().to_string();
        assert!(error.contains(message), "{method} {path}: {error}");
    }
    let after = http::unix(&socket, "GET", "/v1/config", None).json();
    assert_eq!(before, after, "a refused request changed the desired state");
    assert!(
        !lb.state_file().exists(),
        "a refused request wrote the state file"
    );
}

/// The socket is 0600 and root's: another user cannot connect even when the directory
/// lets them through.
#[test]
fn a_non_owner_cannot_use_the_socket() {
    let lb = running();
    let socket = lb.socket();
    let meta = std::fs::metadata(&socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.uid(), 0);
    let dir = socket.parent().unwrap();
    assert_eq!(
        std::fs::metadata(dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let nobody = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
    ];
    let denied = lb.lbctl().run_wrapped(&nobody, &["service", "list"]);
    assert_eq!(denied.code, Some(1), "{denied:?}");
    assert!(
        denied.stderr.contains("permission denied"),
        "{}",
        denied.stderr
    );
    // Open the directory: the socket's own mode must still keep the user out.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711)).unwrap();
    let denied = lb.lbctl().run_wrapped(&nobody, &["service", "list"]);
    assert_eq!(denied.code, Some(1), "{denied:?}");
    assert!(
        denied.stderr.contains("permission denied"),
        "{}",
        denied.stderr
    );
    assert!(
        lb.lbctl().ok(&["service", "list"]).contains("web"),
        "root still can"
    );
}

#[test]
fn the_tcp_listener_requires_the_bearer_token() {
    let lab = three_zones();
    let token_file = std::env::temp_dir().join(format!("{}-token", lab.prefix()));
    let token = "s3cret-token-for-the-lab-0123456789";
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    // Owner-only, or lbd refuses it.
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = lab_config(&lab, &[1, 1, 1]).replace(
        "api:\n",
        &format!(
            "api:\n  listen: 127.0.0.1:9500\n  token_file: {}\n",
            token_file.display()
        ),
    );
    let lb = RunningLb::start(lab, &config);
    let addr = "127.0.0.1:9500".parse().unwrap();
    let ask = |headers: Vec<(&'static str, String)>| {
        lb.lab.run_in(lb.lab.lb_ns(), move || {
            let h: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            http::tcp(addr, "GET", "/v1/services", &h, None).unwrap()
        })
    };
    let missing = ask(vec![]);
    assert_eq!(missing.status, 401, "{}", missing.body);
    assert!(missing.json()["error"]
        .as_str()
        .unwrap()
        .contains("missing bearer token"));
    assert_eq!(missing.header("www-authenticate"), Some("Bearer"));
    let wrong = ask(vec![("Authorization", "Bearer not-the-token".into())]);
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    assert!(wrong.json()["error"]
        .as_str()
        .unwrap()
        .contains("wrong bearer token"));
    let right = ask(vec![("Authorization", format!("Bearer {token}"))]);
    assert_eq!(right.status, 200, "{}", right.body);
    assert_eq!(right.json()[0]["name"], "web");

    // lbctl over the listener, inside the LB's namespace where it listens.
    let ns = format!("--net=/run/netns/{}", lb.lab.lb_ns());
    let in_ns = ["nsenter", ns.as_str()];
    let url = "http://127.0.0.1:9500";
    let token_arg = token_file.display().to_string();
    let ctl = lb.lbctl();
    let listed = ctl.run_wrapped(
        &in_ns,
        &[
            "--api",
            url,
            "--token-file",
            &token_arg,
            "-o",
            "json",
            "service",
            "list",
        ],
    );
    assert!(listed.success(), "{listed:?}");
    let listed: Value = serde_json::from_str(&listed.stdout).unwrap();
    assert_eq!(listed[0]["name"], "web");
    // The socket and the listener are one node: its digests agree with themselves.
    let socket = lb.socket().display().to_string();
    let compared = ctl.run_wrapped(
        &in_ns,
        &[
            "--token-file",
            &token_arg,
            "-o",
            "json",
            "service",
            "compare",
            &socket,
            url,
        ],
    );
    assert_eq!(compared.code, Some(0), "{compared:?}");
    let compared: Value = serde_json::from_str(&compared.stdout).unwrap();
    assert_eq!(compared[0]["service"], "web");
    assert_eq!(compared[0]["tables_agree"], true);
    assert_eq!(compared[0]["nodes"][1]["node"], url);
    let wrong_file = std::env::temp_dir().join(format!("{}-wrong-token", lb.lab.prefix()));
    std::fs::write(&wrong_file, "not-the-token\n").unwrap();
    let refused = ctl.run_wrapped(
        &in_ns,
        &[
            "--api",
            url,
            "--token-file",
            &wrong_file.display().to_string(),
            "service",
            "list",
        ],
    );
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(refused.stderr.contains("wrong bearer token"), "{refused:?}");
    let _ = std::fs::remove_file(&wrong_file);
    let _ = std::fs::remove_file(&token_file);
}

/// Twenty clients add a backend each at the same moment: every one lands, in the
/// desired state, the state file and the data path.
#[test]
fn concurrent_changes_through_the_api_all_land() {
    let lb = running();
    let socket = lb.socket();
    let threads: Vec<_> = (0..20)
        .map(|i| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                let body =
                    json!({"address": format!("10.1.1.{}", i + 1), "port": 8080, "zone": "az-b"});
                http::unix(
                    &socket,
                    "POST",
                    "/v1/services/web/backends",
                    Some(body.to_string().as_bytes()),
                )
            })
        })
        .collect();
    for t in threads {
        let r = t.join().unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let backends = lb.lbctl().json(&["backend", "list", "web"]);
    let list = backends.as_array().unwrap();
    assert_eq!(list.len(), 23, "{backends:#}");
    let saved = lb.saved_state();
    assert_eq!(saved.matches("\"address\":").count(), 23, "{saved}");
}
