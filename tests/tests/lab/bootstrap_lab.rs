//! The backend bootstrap script (`deploy/cloud-init/lb-backend.sh`, what a backend VM's
//! user data installs) run in a backend namespace of the lab against a running `lbd`'s
//! TCP admin API: `register` adds the backend once its own health check passes, with
//! a registration token limited to the service's backends (which adds no service and
//! touches no other service: 403), and traffic reaches it; `deregister` (the VM's shutdown) drains it, waits while a long
//! connection on it is open, and removes it only after that connection ended. On the
//! way, the scaling signals for the service show the new backend.
use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use lb_tests::{
    hold_via, http, lbd_metrics, scenario::*, Daemon, HeldConn, LabConfig, RunningLb, VIP, VIP_PORT,
};

const PER_CONN: Duration = Duration::from_secs(5);
const WAIT: Duration = Duration::from_secs(30);
const API_PORT: u16 = 9500;

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/cloud-init/lb-backend.sh")
}

/// Token files (0600) that are removed on drop: the operator's and web's registration
/// token.
struct TokenFiles {
    operator: PathBuf,
    registration: PathBuf,
}

impl TokenFiles {
    fn write(prefix: &str) -> Self {
        let file = |name: &str, token: &str| {
            let path = std::env::temp_dir().join(format!("{prefix}-{name}"));
            fs::write(&path, format!("{token}\n")).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
            path
        };
        Self {
            operator: file("operator.token", "bootstrap-operator-token-0123456789"),
            registration: file("web.token", REGISTRATION),
        }
    }
}

impl Drop for TokenFiles {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.operator);
        let _ = fs::remove_file(&self.registration);
    }
}

const REGISTRATION: &str = "bootstrap-registration-token-web-0123";

/// lbd serving b1 and b2 (b3 runs its app but is not in the service), with its admin
/// API on the backends' gateway address, and scaling signals on.
fn start() -> (RunningLb, TokenFiles) {
    let lab = three_zones();
    let tokens = TokenFiles::write(lab.prefix());
    let health = fast_health();
    // Longer than the test: the drain can only complete by the connection ending.
    let scaling = "scaling: { target_active_flows_per_backend: 1, min_backends: 1, max_backends: 10, scale_in_cooldown: 0s }";
    let full = LabConfig::new(&lab)
        .policy(&[&health, "deregistration_delay: 300s", scaling])
        .yaml();
    let b3 = format!("address: {},", lab.backend_addr(2));
    let mut config: String = full
        .lines()
        .filter(|l| !l.contains(&b3))
        .map(|l| format!("{l}\n"))
        .collect();
    let api = format!(
        "api:\n  listen: {}:{API_PORT}\n  token_file: {}\n  registration_tokens:\n    - {{ file: {}, services: [web] }}\n",
        lab.backend_gateway(),
        tokens.operator.display(),
        tokens.registration.display()
    );
    config = config.replacen("api:\n", &api, 1);
    let mut lb = RunningLb::start(lab, &config);
    lb.wait_healthy(0, &[0, 1], WAIT);
    (lb, tokens)
}

/// A request with web's registration token from backend `i`'s namespace: the status.
fn ask(lb: &RunningLb, i: usize, method: &str, path: &str, body: &str) -> u16 {
    let addr = std::net::SocketAddr::from((lb.lab.backend_gateway(), API_PORT));
    let (method, path, body) = (method.to_string(), path.to_string(), body.to_string());
    let auth = format!("Bearer {REGISTRATION}");
    lb.lab.run_in(lb.lab.backend_ns(i), move || {
        let headers = [
            ("Authorization", auth.as_str()),
            ("Content-Type", "application/json"),
        ];
        http::tcp(addr, &method, &path, &headers, Some(body.as_bytes()))
            .unwrap()
            .status
    })
}

/// `lb-backend.sh <verb>` in backend `i`'s namespace, as its unit would run it.
fn run_script(lb: &RunningLb, token: &Path, i: usize, verb: &str) -> Daemon {
    let api = format!("http://{}:{API_PORT}", lb.lab.backend_gateway());
    let address = lb.lab.backend_addr(i).to_string();
    let zone = lb.lab.backend_spec(i).zone.clone();
    let script = script();
    let env = [
        ("LB_API", api.as_str()),
        ("LB_TOKEN_FILE", token.to_str().unwrap()),
        ("LB_SERVICE", "web"),
        ("LB_BACKEND_ADDRESS", address.as_str()),
        ("LB_BACKEND_PORT", "8080"),
        ("LB_ZONE", zone.as_str()),
        ("LB_HEALTH_TIMEOUT", "20"),
        ("LB_DRAIN_TIMEOUT", "60"),
    ];
    Daemon::spawn_in_ns_with_env(
        lb.lab.backend_ns(i),
        Path::new("/bin/sh"),
        &[script.to_str().unwrap(), verb],
        &env,
    )
}

/// `deploy/autoscale/lb-autoscale.sh --once` in lbd's namespace; what it printed.
fn autoscale_once(lb: &RunningLb, command: Option<&str>) -> String {
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/autoscale/lb-autoscale.sh");
    let mut env = vec![("LB_METRICS_URL", "http://127.0.0.1:9464/metrics")];
    if let Some(command) = command {
        env.push(("LB_SCALE_COMMAND", command));
    }
    let mut run = Daemon::spawn_in_ns_with_env(
        lb.lab.lb_ns(),
        Path::new("/bin/sh"),
        &[script.to_str().unwrap(), "--once"],
        &env,
    );
    let status = run
        .wait_exit(WAIT)
        .expect("lb-autoscale --once ends within 30 s");
    assert!(status.success(), "lb-autoscale failed:\n{}", run.log());
    run.log()
}

fn hold_on(lb: &RunningLb, backend: &str) -> HeldConn {
    for _ in 0..100 {
        let conn = hold_via(lb.lab.client_ns(), VIP, VIP_PORT, PER_CONN).unwrap();
        if conn.backend == backend {
            return conn;
        }
        conn.close();
    }
    panic!("no connection landed on {backend} in 100 tries");
}

/// The `address:port` -> state of service web's backends, as `lbctl` lists them.
fn backends(lb: &RunningLb) -> Vec<(String, String)> {
    let list = lb.lbctl().json(&["backend", "list", "web"]);
    list.as_array()
        .expect("a list")
        .iter()
        .map(|b| {
            let at = format!("{}:{}", b["address"].as_str().unwrap(), b["port"]);
            (at, b["state"].as_str().unwrap().to_string())
        })
        .collect()
}

/// Polls /metrics until `series` reads `want`.
fn wait_sample(lb: &RunningLb, series: &str, want: f64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let body = lbd_metrics::get(&lb.lab, "/metrics").body;
        if lbd_metrics::sample(&body, series) == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{series} is not {want} within {WAIT:?}:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_backend_registers_itself_takes_traffic_and_on_stop_drains_before_it_is_removed() {
    let (mut lb, tokens) = start();
    let b3 = format!("{}:8080", lb.lab.backend_addr(2));
    wait_sample(
        &lb,
        "lb_service_healthy_backends{service=\"web\",zone=\"az-b\"}",
        1.0,
    );
    let body = lbd_metrics::get(&lb.lab, "/metrics").body;
    let az_c = "lb_service_healthy_backends{service=\"web\",zone=\"az-c\"}";
    assert_eq!(
        lbd_metrics::sample(&body, az_c),
        None,
        "no backend in az-c yet"
    );

    let mark = lb.lbd.log_len();
    let mut register = run_script(&lb, &tokens.registration, 2, "register");
    let status = register.wait_exit(WAIT).expect("register ends within 30 s");
    assert!(status.success(), "register failed:\n{}", register.log());
    assert!(register
        .log()
        .contains(&format!("registered {b3} in web (zone az-c, weight 1)")));
    assert!(backends(&lb).contains(&(b3.clone(), "active".to_string())));
    lb.wait_healthy(mark, &[2], WAIT);
    // The same token adds no service and touches no other service.
    let service = r#"{"name": "shop", "vip": "10.0.0.101", "port": 80}"#;
    assert_eq!(ask(&lb, 2, "POST", "/v1/services", service), 403);
    let backend = r#"{"address": "10.1.0.13", "port": 8080, "zone": "az-c"}"#;
    assert_eq!(
        ask(&lb, 2, "POST", "/v1/services/shop/backends", backend),
        403
    );
    assert_eq!(ask(&lb, 2, "GET", "/v1/events?service=shop", ""), 403);
    assert_eq!(ask(&lb, 2, "GET", "/v1/config", ""), 403);
    wait_sample(
        &lb,
        "lb_service_healthy_backends{service=\"web\",zone=\"az-c\"}",
        1.0,
    );

    // Traffic reaches it: a long connection lands on b3.
    let mut held = hold_on(&lb, "b3");
    // One active flow at a target of 1 per backend, no cooldown: one backend wanted.
    wait_sample(&lb, "lb_service_desired_backends{service=\"web\"}", 1.0);
    // The example autoscaler reads the same: it would go from 3 to 1, and with a
    // command it runs it.
    assert_eq!(
        autoscale_once(&lb, None),
        "web: desired 1, healthy 3: would scale to 1 (set LB_SCALE_COMMAND to act)\n"
    );
    assert_eq!(
        autoscale_once(&lb, Some("echo scaled")),
        "web: desired 1, healthy 3: running echo scaled web 1\nscaled web 1\n"
    );

    let mut deregister = run_script(&lb, &tokens.registration, 2, "deregister");
    let deadline = Instant::now() + WAIT;
    while !backends(&lb).contains(&(b3.clone(), "draining".to_string())) {
        assert!(Instant::now() < deadline, "b3 not draining within {WAIT:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // While the connection is open the script waits and b3 stays.
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        deregister.is_running(),
        "deregister ended early:\n{}",
        deregister.log()
    );
    assert!(backends(&lb).contains(&(b3.clone(), "draining".to_string())));
    assert_eq!(held.echo("in flight\n", PER_CONN).unwrap(), "in flight\n");

    let closed = Instant::now();
    held.close();
    let status = deregister
        .wait_exit(WAIT)
        .expect("deregister ends within 30 s");
    let took = closed.elapsed();
    let script_log = deregister.log();
    assert!(status.success(), "deregister failed:\n{script_log}");
    assert!(
        script_log.contains("\"event\":\"backend_drained\"")
            && script_log.contains(&format!("removed {b3} from web")),
        "{script_log}"
    );
    assert!(
        backends(&lb).iter().all(|(at, _)| *at != b3),
        "b3 is removed"
    );

    // In lbd's own order: drained (no flows left), and only then removed.
    let log = lb.lbd.log();
    let drained = log
        .find(&format!("backend web/{b3}: drained: no flows left"))
        .unwrap_or_else(|| panic!("no drain in lbd's log:\n{log}"));
    let removed = log
        .find(&format!("backend web/{b3}: removed from the config"))
        .unwrap_or_else(|| panic!("no removal in lbd's log:\n{log}"));
    assert!(drained < removed, "removed before drained:\n{log}");
    println!(
        "bootstrap: registered and healthy, held connection on b3 kept through the drain; \
         deregister ended {} ms after the connection closed",
        took.as_millis()
    );
}
