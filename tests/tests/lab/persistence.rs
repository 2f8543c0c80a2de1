//! Changes made through the API survive a restart of `lbd`: the state file is written
//! atomically on every change and wins over the config file's services at start-up.
use lb_tests::{lab_config, scenario::three_zones, RunningLb};
use serde_json::Value;

#[test]
fn added_and_drained_backends_survive_an_lbd_restart() {
    let lab = three_zones();
    // The config file names only two of the three backends.
    let config = lab_config(&lab, &[1, 1, 1]);
    let config = config.replace(
        "      - { address: 10.1.0.13, port: 8080, zone: az-c, weight: 1 }\n",
        "",
    );
    let mut lb = RunningLb::start(lab, &config);
    let ctl = lb.lbctl();
    assert_eq!(ctl.json(&["backend", "list"]).as_array().unwrap().len(), 2);

    ctl.ok(&[
        "backend",
        "add",
        "web",
        "10.1.0.13:8080",
        "--zone",
        "az-c",
        "--weight",
        "3",
    ]);
    ctl.ok(&["backend", "drain", "web", "10.1.0.11:8080"]);
    ctl.ok(&["zone", "drain", "az-b"]);
    let saved = lb.saved_state();
    assert!(
        saved.contains("10.1.0.13") && saved.contains("draining"),
        "{saved}"
    );
    let expected = ctl.json(&["config", "dump"]);

    let log = lb.restart_lbd_after_sigterm().log();
    assert!(
        log.contains("desired state: + backend web/10.1.0.13:8080"),
        "{log}"
    );
    assert!(lb.lbd.log().contains("from state file"), "{}", lb.lbd.log());
    let ctl = lb.lbctl();
    let backends = ctl.json(&["backend", "list", "web"]);
    let by_addr = |a: &str| -> Value {
        backends
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["address"] == a)
            .cloned()
            .unwrap_or_else(|| panic!("{a} missing after restart: {backends:#}"))
    };
    assert_eq!(by_addr("10.1.0.13")["weight"], 3);
    assert_eq!(
        by_addr("10.1.0.13")["effective_weight"].as_f64(),
        Some(3.0),
        "programmed again"
    );
    assert_eq!(
        by_addr("10.1.0.11")["effective_weight"].as_f64(),
        Some(0.0),
        "draining: no new flows"
    );
    assert_eq!(by_addr("10.1.0.11")["state"], "draining");
    assert_eq!(
        ctl.json(&["service", "show", "web"])["drained_zones"][0],
        "az-b"
    );
    assert_eq!(ctl.json(&["config", "dump"]), expected);
    // No temporary file is left next to the state file.
    let dir = lb.state_file().parent().unwrap().to_path_buf();
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.contains(".tmp")), "{names:?}");
}
