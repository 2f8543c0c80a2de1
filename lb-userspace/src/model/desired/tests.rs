use std::path::PathBuf;

use serde_json::json;

use super::{diff::ChangeKind, edit::*, state_file::StateDoc, *};
use crate::model::config::BackendState;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lbd-desired-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn config_text(state_file: &std::path::Path) -> String {
    format!(
        "node: {{ zone: az-a }}\ninterfaces: [eth0]\ncluster: {{ ring_size: 1009 }}\nstate_file: {}\n\
         services:\n  - name: web\n    vip: 10.0.0.100\n    port: 80\n    backends:\n\
         \x20     - {{ address: 10.1.0.11, port: 8080, zone: az-a }}\n",
        state_file.display()
    )
}

#[test]
fn the_state_file_wins_over_the_config_files_services_once_written() {
    let dir = temp_dir("wins");
    let state = dir.join("sub").join("state.yaml");
    let config_path = dir.join("lb.yaml");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(&config_path, config_text(&state)).unwrap();

    let (file, source) = load(&config_path).unwrap();
    assert_eq!(source, Source::ConfigFile);
    let changed = edit::apply(
        &file,
        &Edit::SetBackendState {
            service: "web".into(),
            backend: "10.1.0.11:8080".parse().unwrap(),
            state: BackendState::Draining,
        },
    )
    .unwrap();
    state_file::write_atomic(
        &state,
        &StateDoc {
            generation: 0,
            drained_since: None,
            services: changed.services.clone(),
        },
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&state).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let leftovers: Vec<_> = std::fs::read_dir(state.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        leftovers.len(),
        1,
        "no temporary file is left: {leftovers:?}"
    );

    let (again, source) = load(&config_path).unwrap();
    assert_eq!(source, Source::StateFile);
    assert_eq!(again, changed);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_broken_state_file_stops_start_up_naming_the_file() {
    let dir = temp_dir("broken");
    std::fs::create_dir_all(&dir).unwrap();
    let state = dir.join("state.yaml");
    let config_path = dir.join("lb.yaml");
    std::fs::write(&config_path, config_text(&state)).unwrap();
    std::fs::write(&state, "services: [ { name: web } ]\n").unwrap();
    let e = load(&config_path).unwrap_err().to_string();
    assert!(
        e.contains(&format!("state file {}", state.display())),
        "{e}"
    );
    std::fs::write(
        &state,
        "services:\n  - { name: web, vip: 10.0.0.100, port: 80, backends: [ { address: 10.1.0.11, port: 8080, zone: az-a, weight: 0 } ] }\n",
    )
    .unwrap();
    let e = load(&config_path).unwrap_err().to_string();
    assert!(
        e.contains("services[0].backends[0].weight: 0 is out of range"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn apply_documents_change_services_only() {
    let dir = temp_dir("apply");
    let current = crate::model::config::parse(&config_text(&dir.join("s.yaml"))).unwrap();
    let mut doc = serde_json::to_value(&current).unwrap();
    doc["services"][0]["backends"][0]["weight"] = json!(3);
    let services = apply_doc::services(&current, doc.clone()).unwrap();
    assert_eq!(services[0].backends[0].weight, 3);

    let only = json!({ "services": [] });
    assert!(apply_doc::services(&current, only).unwrap().is_empty());

    doc["node"]["zone"] = json!("az-b");
    let e = apply_doc::services(&current, doc).unwrap_err().to_string();
    assert!(
        e.starts_with("node: differs from the running config"),
        "{e}"
    );

    let unknown = json!({ "services": [], "bogus": 1 });
    let e = apply_doc::services(&current, unknown)
        .unwrap_err()
        .to_string();
    assert!(e.contains("bogus"), "{e}");
    let bad = json!({ "services": [ { "name": "web", "vip": "10.0.0.300", "port": 80 } ] });
    let e = apply_doc::services(&current, bad).unwrap_err().to_string();
    assert!(e.contains("services[0].vip"), "{e}");
    let missing = json!({ "node": { "zone": "az-a" } });
    assert!(apply_doc::services(&current, missing).is_err());
}

#[test]
fn diffs_name_every_added_removed_and_changed_thing() {
    let dir = temp_dir("diff");
    let from = crate::model::config::parse(&config_text(&dir.join("s.yaml"))).unwrap();
    let mut to = from.clone();
    to.services[0].backends[0].weight = 4;
    to.services[0].backends[0].state = BackendState::Draining;
    to.services[0].drained_zones.push("az-b".into());
    let mut extra = to.services[0].backends[0].clone();
    extra.address = "10.1.0.12".parse().unwrap();
    to.services[0].backends.push(extra);
    let changes = diff::services(&from, &to);
    let lines: Vec<String> = changes.iter().map(|c| c.to_string()).collect();
    assert_eq!(
        lines,
        [
            "~ service web: drained_zones: [] -> [\"az-b\"]",
            "~ backend web/10.1.0.11:8080: state: active -> draining, weight: 1 -> 4",
            "+ backend web/10.1.0.12:8080: zone az-a weight 4",
        ]
    );
    let gone = diff::services(
        &to,
        &Config {
            services: vec![],
            ..to.clone()
        },
    );
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0].kind, ChangeKind::Removed);
    assert!(diff::services(&to, &to).is_empty());
}
