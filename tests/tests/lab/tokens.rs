//! Scoped tokens on the TCP admin listener against a real `lbd`: the operator's token
//! may do everything; a registration token only adds, drains and removes backends of
//! its service (403 for anything else, including another service's backends); a token
//! file that others can read stops lbd at start and fails `lbd --check` (exit 78).
use std::{net::SocketAddr, os::unix::fs::PermissionsExt as _, path::PathBuf, time::Duration};

use lb_tests::{http, lab_config, lbd_metrics, lbd_path, scenario::three_zones, Lab, RunningLb};
use serde_json::{json, Value};

const OPERATOR: &str = "operator-token-of-the-lab-0123456789";
const REGISTRATION: &str = "registration-token-for-web-0123456";
const LISTEN: &str = "127.0.0.1:9501";

/// Token files, removed on drop.
struct TokenFiles {
    operator: PathBuf,
    registration: PathBuf,
}

impl TokenFiles {
    fn write(lab: &Lab, registration_mode: u32) -> Self {
        let file = |name: &str, token: &str, mode: u32| {
            let path = std::env::temp_dir().join(format!("{}-{name}", lab.prefix()));
            std::fs::write(&path, format!("{token}\n")).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            path
        };
        Self {
            operator: file("operator.token", OPERATOR, 0o600),
            registration: file("web.token", REGISTRATION, registration_mode),
        }
    }

    /// `lab_config` with the TCP listener and both tokens.
    fn config(&self, lab: &Lab) -> String {
        lab_config(lab, &[1, 1, 1]).replace(
            "api:\n",
            &format!(
                "api:\n  listen: {LISTEN}\n  token_file: {}\n  registration_tokens:\n    \
                 - {{ file: {}, services: [web] }}\n",
                self.operator.display(),
                self.registration.display()
            ),
        )
    }
}

impl Drop for TokenFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.operator);
        let _ = std::fs::remove_file(&self.registration);
    }
}

/// One request over TCP in the LB namespace with `token`: status and JSON body.
fn ask(lb: &RunningLb, token: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let addr: SocketAddr = LISTEN.parse().unwrap();
    let auth = format!("Bearer {token}");
    let (method, path) = (method.to_string(), path.to_string());
    let r = lb.lab.run_in(lb.lab.lb_ns(), move || {
        let body = body.map(|b| b.to_string());
        http::tcp(
            addr,
            &method,
            &path,
            &[("Authorization", &auth)],
            body.as_deref().map(str::as_bytes),
        )
        .unwrap()
    });
    let json = serde_json::from_str(&r.body).unwrap_or(Value::Null);
    (r.status, json)
}

fn service_names(lb: &RunningLb) -> Vec<String> {
    let (status, list) = ask(lb, OPERATOR, "GET", "/v1/services", None);
    assert_eq!(status, 200, "{list}");
    list.as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_registration_token_manages_its_services_backends_and_nothing_else() {
    let lab = three_zones();
    let files = TokenFiles::write(&lab, 0o600);
    let config = files.config(&lab);
    let lb = RunningLb::start(lab, &config);
    let shop = json!({"name": "shop", "vip": "10.0.0.101", "port": 80});
    let backend = json!({"address": "10.1.0.99", "port": 8080, "zone": "az-a"});
    let one = "/v1/services/web/backends/10.1.0.99:8080";

    let (status, body) = ask(
        &lb,
        REGISTRATION,
        "POST",
        "/v1/services",
        Some(shop.clone()),
    );
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        body["error"],
        "this registration token may only add, drain, undrain and remove backends of \
         service web and list their backends and events; POST /v1/services is not allowed"
    );
    assert_eq!(service_names(&lb), ["web"], "nothing was added");
    let (status, body) = ask(&lb, OPERATOR, "POST", "/v1/services", Some(shop));
    assert_eq!(status, 200, "{body}");

    // Another service's backends, or anything but backends, are out of scope.
    for (method, path, body) in [
        ("POST", "/v1/services/shop/backends", Some(backend.clone())),
        ("DELETE", "/v1/services/shop", None),
        ("DELETE", "/v1/services/web", None),
        (
            "PUT",
            "/v1/services/web/backends/10.1.0.11:8080/weight",
            Some(json!({"weight": 5})),
        ),
        ("POST", "/v1/zones/az-a/drain", None),
        ("GET", "/v1/config", None),
        ("GET", "/v1/backends", None),
        ("GET", "/v1/backends?service=shop", None),
        ("POST", "/v1/apply", Some(json!({"services": []}))),
    ] {
        let (status, answer) = ask(&lb, REGISTRATION, method, path, body);
        assert_eq!(status, 403, "{method} {path}: {answer}");
    }
    let (_, shop_backends) = ask(&lb, OPERATOR, "GET", "/v1/backends?service=shop", None);
    assert_eq!(shop_backends, json!([]), "nothing reached shop");

    // Its own service's backends: add, list, drain, remove.
    let (status, body) = ask(
        &lb,
        REGISTRATION,
        "POST",
        "/v1/services/web/backends",
        Some(backend),
    );
    assert_eq!(status, 200, "{body}");
    let (status, list) = ask(&lb, REGISTRATION, "GET", "/v1/backends?service=web", None);
    assert_eq!(status, 200, "{list}");
    assert_eq!(list.as_array().unwrap().len(), 4, "{list:#}");
    let (status, body) = ask(&lb, REGISTRATION, "POST", &format!("{one}/drain"), None);
    assert_eq!(status, 200, "{body}");
    let (status, body) = ask(&lb, REGISTRATION, "DELETE", one, None);
    assert_eq!(status, 200, "{body}");
    let (status, body) = ask(&lb, REGISTRATION, "DELETE", one, None);
    assert_eq!(status, 404, "removed once: {body}");

    let (status, _) = ask(
        &lb,
        "not-a-token-of-this-lbd-at-all",
        "GET",
        "/v1/services",
        None,
    );
    assert_eq!(status, 401);
    let (status, body) = ask(&lb, OPERATOR, "DELETE", "/v1/services/shop", None);
    assert_eq!(status, 200, "{body}");
    assert!(lb.lbd.log().contains("refused (403)"), "{}", lb.lbd.log());
    let metrics = lbd_metrics::get(&lb.lab, "/metrics").body;
    let refused = |reason: &str| {
        let series = format!(
            "lb_listener_requests_refused_total{{listener=\"admin_tcp\",reason=\"{reason}\"}}"
        );
        lbd_metrics::sample(&metrics, &series).unwrap_or_else(|| panic!("{series}: {metrics}"))
    };
    assert_eq!(refused("forbidden"), 10.0, "one 403 per refused request");
    assert_eq!(refused("unauthorized"), 1.0);
}

/// A registration token readable by its group: `lbd --check` and the start both refuse
/// it with exit 78, naming the key, the file and its mode.
#[test]
fn a_token_file_others_can_read_is_refused_at_check_and_at_start() {
    let lab = three_zones();
    let files = TokenFiles::write(&lab, 0o640);
    let config_path = std::env::temp_dir().join(format!("{}-tokens.yaml", lab.prefix()));
    std::fs::write(&config_path, files.config(&lab)).unwrap();
    let lbd = lbd_path();
    let config = config_path.to_str().unwrap();
    for args in [
        vec!["--check", "--config", config],
        vec!["--config", config],
    ] {
        let mut d = lab.spawn_daemon(lab.lb_ns(), &lbd, &args);
        let status = d
            .wait_exit(Duration::from_secs(30))
            .unwrap_or_else(|| panic!("lbd {args:?} did not exit: {}", d.log()));
        let log = d.log();
        assert_eq!(status.code(), Some(78), "{args:?}: {log}");
        assert!(
            log.contains(&format!(
                "api.registration_tokens[0].file {} can be read or written by users other \
                 than its owner",
                files.registration.display()
            )) && log.contains("mode 0640"),
            "{args:?}: {log}"
        );
    }
    let _ = std::fs::remove_file(&config_path);
    let _ = std::fs::remove_dir_all(lb_tests::lab_run_dir(&lab));
}
