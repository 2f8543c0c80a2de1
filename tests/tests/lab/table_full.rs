//! A change the kernel's tables have no room for, through the real lbd and lbctl: a
//! removed backend keeps its slot while its flows drain, so with `max_backends` slots
//! all taken, an add is refused with its own status and exit code, and nothing changes.
use lb_tests::RunningLb;
use lb_tests::{lab_run_dir, lbd_metrics, running_lb::pin_dir, scenario::three_zones, LabConfig};

/// A pinned map's entries as bpftool dumps them (JSON).
fn dump(lb: &RunningLb, map: &str) -> String {
    let path = pin_dir(&lb.lab).join("maps").join(map);
    let out = std::process::Command::new("bpftool")
        .args(["-j", "map", "dump", "pinned"])
        .arg(&path)
        .output()
        .expect("bpftool runs");
    assert!(
        out.status.success(),
        "bpftool map dump {}: {out:?}",
        path.display()
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The state file and its journal.
fn saved(lb: &RunningLb) -> (String, String) {
    let journal = lab_run_dir(&lb.lab).join("state.yaml.journal");
    (
        lb.saved_state(),
        std::fs::read_to_string(journal).unwrap_or_default(),
    )
}

#[test]
fn an_add_with_every_backend_slot_taken_is_refused_and_changes_nothing() {
    let lab = three_zones();
    let config = LabConfig::new(&lab)
        .policy(&["deregistration_delay: 60s"])
        .yaml()
        + "limits: { max_backends: 3 }\n";
    let lb = RunningLb::start(lab, &config);
    let ctl = lb.lbctl();
    let removed = format!("{}:8080", lb.lab.backend_addr(2));
    ctl.ok(&["backend", "remove", "web", &removed]);
    let saved_before = saved(&lb);
    let kernel_before = (dump(&lb, "BACKENDS"), dump(&lb, "ADDR_FILTER"));

    let out = ctl.run(&["backend", "add", "web", "10.1.0.99:8080", "--zone", "az-a"]);
    assert_eq!(out.code, Some(73), "{out:?}");
    assert_eq!(
        out.stderr,
        "lbctl: no room in the data path: writing backend 10.1.0.99 (id 3): map BACKENDS is \
         full: 3 entries (sized by limits.max_backends) (nothing was changed) (HTTP 507)\n"
    );
    let text = lbd_metrics::get(&lb.lab, "/metrics").body;
    assert_eq!(
        lbd_metrics::sample(&text, "lb_api_changes_refused_total{reason=\"table_full\"}"),
        Some(1.0),
        "{text}"
    );
    assert!(
        lb.lbd
            .log()
            .contains("change refused: no room in the data path"),
        "{}",
        lb.lbd.log()
    );
    assert_eq!(saved(&lb), saved_before, "the state file and its journal");
    assert_eq!(
        (dump(&lb, "BACKENDS"), dump(&lb, "ADDR_FILTER")),
        kernel_before,
        "the kernel's backend slots and address prefilter"
    );
}
