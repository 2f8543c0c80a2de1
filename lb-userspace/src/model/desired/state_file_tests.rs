use std::{
    os::unix::fs::{symlink, PermissionsExt},
    path::PathBuf,
};

use super::*;
use crate::model::config::{self, BackendConfig, BackendState};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lbd-state-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("state")).unwrap();
    std::fs::set_permissions(dir.join("state"), std::fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

fn services(backends: usize) -> Vec<ServiceConfig> {
    let list: Vec<String> = (0..backends)
        .map(|i| format!("{{ address: 10.1.0.{}, port: 8080, zone: az-a }}", i + 11))
        .collect();
    config::parse(&format!(
        "node: {{ zone: az-a }}\ninterfaces: [eth0]\ncluster: {{ ring_size: 1009 }}\n\
         services:\n  - {{ name: web, vip: 10.0.0.100, port: 80, backends: [{}] }}\n",
        list.join(", ")
    ))
    .unwrap()
    .services
}

fn put(services: &mut Vec<ServiceConfig>, i: u8, weight: u32) -> Op {
    let op = Op::PutBackend {
        service: "web".into(),
        backend: BackendConfig {
            address: std::net::Ipv4Addr::new(10, 1, 0, 100 + i).into(),
            port: 8080,
            zone: "az-a".into(),
            weight,
            state: BackendState::Active,
        },
    };
    journal::replay(services, op.clone()).unwrap();
    op
}

#[test]
fn changes_are_journaled_replayed_and_compacted_once_the_journal_outgrows_the_snapshot() {
    let dir = temp_dir("journal");
    let path = dir.join("state").join("state.yaml");
    let mut store = Store::new(&path);
    let mut state = services(2);
    assert_eq!(store.persist(&state, None).unwrap(), Undo::Snapshot);
    let snapshot = std::fs::read(&path).unwrap();
    let mut appended = 0;
    let mut i = 0;
    loop {
        let op = put(&mut state, i, 2);
        let before = store.bytes_written();
        let undo = store
            .persist(&state, Some(std::slice::from_ref(&op)))
            .unwrap();
        assert_eq!(
            read(&path).unwrap().unwrap().services,
            state,
            "after change {i}"
        );
        if undo == Undo::Snapshot {
            break;
        }
        assert_eq!(
            std::fs::read(&path).unwrap(),
            snapshot,
            "the snapshot is untouched"
        );
        assert_eq!(
            store.bytes_written() - before,
            journal::record(&op).len() as u64
        );
        appended += 1;
        i += 1;
    }
    // Compaction happens once the journal is larger than the snapshot, no sooner.
    let header = journal::header(0).len();
    let record = journal::record(&put(&mut services(2), 0, 2)).len();
    assert_eq!(appended, (snapshot.len() - header) / record + 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_undone_append_leaves_the_previous_state() {
    let dir = temp_dir("undo");
    let path = dir.join("state").join("state.yaml");
    let mut store = Store::new(&path);
    let before = services(2);
    store.persist(&before, None).unwrap();
    let mut after = before.clone();
    let op = put(&mut after, 1, 3);
    let undo = store.persist(&after, Some(&[op])).unwrap();
    assert!(matches!(undo, Undo::Truncate(_)));
    assert_eq!(read(&path).unwrap().unwrap().services, after);
    store.undo(undo, &before).unwrap();
    assert_eq!(read(&path).unwrap().unwrap().services, before);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_torn_last_record_is_ignored_and_damage_before_a_record_is_refused() {
    let dir = temp_dir("torn");
    let path = dir.join("state").join("state.yaml");
    let journal_path = dir.join("state").join("state.yaml.journal");
    let mut store = Store::new(&path);
    let mut state = services(2);
    store.persist(&state, None).unwrap();
    let op = put(&mut state, 1, 3);
    store.persist(&state, Some(&[op])).unwrap();
    let good = std::fs::read_to_string(&journal_path).unwrap();
    let next = journal::record(&put(&mut state.clone(), 2, 4));
    for torn in [
        &next[..next.len() - 1],
        &next[..10],
        &next.replace('4', "5"),
    ] {
        std::fs::write(&journal_path, format!("{good}{torn}")).unwrap();
        assert_eq!(
            read(&path).unwrap().unwrap().services,
            state,
            "a torn last record ({torn:?}) is ignored"
        );
    }
    let damaged = next.replace('4', "5");
    std::fs::write(&journal_path, format!("{good}{damaged}{next}")).unwrap();
    let e = read(&path).unwrap_err().to_string();
    assert!(
        e.contains(&format!(
            "{}: record 2 is damaged and more records follow",
            journal_path.display()
        )),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_journal_of_another_generation_is_ignored() {
    let dir = temp_dir("generation");
    let path = dir.join("state").join("state.yaml");
    let mut store = Store::new(&path);
    let mut state = services(2);
    store.persist(&state, None).unwrap();
    let op = put(&mut state, 1, 3);
    store.persist(&state, Some(&[op])).unwrap();
    let journal = std::fs::read(dir.join("state").join("state.yaml.journal")).unwrap();
    // A compaction cut short after its snapshot: the old journal is still there.
    let compacted = services(1);
    Store::new(&path).persist(&compacted, None).unwrap();
    std::fs::write(dir.join("state").join("state.yaml.journal"), journal).unwrap();
    assert_eq!(read(&path).unwrap().unwrap().services, compacted);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn symlinks_planted_at_any_name_the_writer_uses_are_not_followed() {
    let dir = temp_dir("symlink");
    let state_dir = dir.join("state");
    let path = state_dir.join("state.yaml");
    let victims: Vec<PathBuf> = (0..3).map(|i| dir.join(format!("victim-{i}"))).collect();
    for v in &victims {
        std::fs::write(v, "precious\n").unwrap();
    }
    // The state file, its journal, and the temporary name earlier versions used.
    symlink(&victims[0], &path).unwrap();
    symlink(&victims[1], state_dir.join("state.yaml.journal")).unwrap();
    let old_temp = state_dir.join(format!(".state.yaml.tmp-{}", std::process::id()));
    symlink(&victims[2], &old_temp).unwrap();
    let mut store = Store::new(&path);
    let mut state = services(2);
    store.persist(&state, None).unwrap();
    let op = put(&mut state, 1, 3);
    store.persist(&state, Some(&[op])).unwrap();
    write_atomic(
        &path,
        &StateDoc {
            generation: 0,
            drained_since: None,
            services: state.clone(),
        },
    )
    .unwrap();
    for v in &victims {
        assert_eq!(
            std::fs::read_to_string(v).unwrap(),
            "precious\n",
            "{}",
            v.display()
        );
    }
    assert!(std::fs::symlink_metadata(&path).unwrap().is_file());
    assert_eq!(read(&path).unwrap().unwrap().services, state);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_state_directory_others_may_write_is_refused_naming_it() {
    let dir = temp_dir("shared-dir");
    let state_dir = dir.join("state");
    let path = state_dir.join("state.yaml");
    for mode in [0o770, 0o707, 0o1777] {
        std::fs::set_permissions(&state_dir, std::fs::Permissions::from_mode(mode)).unwrap();
        let want = format!(
            "state directory {} (mode {mode:04o}, owner uid {}) is writable by group or others",
            state_dir.display(),
            // SAFETY: geteuid has no preconditions and cannot fail.
            unsafe { libc::geteuid() }
        );
        let e = Store::new(&path)
            .persist(&services(1), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains(&want), "{e}");
        assert!(!path.exists(), "nothing was written");
        let e = super::super::state_dir::check_existing(&state_dir).unwrap_err();
        assert!(e.contains(&want), "{e}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_state_file_removed_or_replaced_behind_lbds_back_is_written_whole_again() {
    let dir = temp_dir("removed");
    let path = dir.join("state").join("state.yaml");
    let mut store = Store::new(&path);
    let mut state = services(2);
    store.persist(&state, None).unwrap();
    std::fs::remove_file(&path).unwrap();
    let op = put(&mut state, 1, 3);
    assert_eq!(store.persist(&state, Some(&[op])).unwrap(), Undo::Snapshot);
    assert_eq!(read(&path).unwrap().unwrap().services, state);
    std::fs::remove_file(dir.join("state").join("state.yaml.journal")).unwrap();
    let op = put(&mut state, 2, 3);
    assert_eq!(store.persist(&state, Some(&[op])).unwrap(), Undo::Snapshot);
    assert_eq!(read(&path).unwrap().unwrap().services, state);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Replaying an edit's records on the state before it gives exactly the state after it,
/// for every kind of edit the journal records.
#[test]
fn every_edits_records_replay_to_the_state_it_produced() {
    use super::super::edit::{self, Edit};
    let current = config::parse(
        "node: { zone: az-a }\ninterfaces: [eth0]\ncluster: { ring_size: 1009 }\n\
         services:\n  - { name: web, vip: 10.0.0.100, port: 80, backends: [\
         { address: 10.1.0.11, port: 8080, zone: az-a }, { address: 10.1.0.12, port: 8080, zone: az-b } ] }\n\
         \x20 - { name: api, vip: 10.0.0.101, port: 80, backends: [ { address: 10.1.0.21, port: 8080, zone: az-b } ] }\n",
    )
    .unwrap();
    let at = |s: &str| s.parse().unwrap();
    let mut new_service = current.services[1].clone();
    new_service.name = "db".into();
    new_service.vip = "10.0.0.102".parse().unwrap();
    let edits = [
        Edit::AddService(new_service),
        Edit::RemoveService("api".into()),
        Edit::AddBackend {
            service: "web".into(),
            backend: BackendConfig {
                address: "10.1.0.13".parse().unwrap(),
                port: 8080,
                zone: "az-c".into(),
                weight: 2,
                state: BackendState::Draining,
            },
        },
        Edit::RemoveBackend {
            service: "web".into(),
            backend: at("10.1.0.11:8080"),
        },
        Edit::SetBackendState {
            service: "web".into(),
            backend: at("10.1.0.12:8080"),
            state: BackendState::Draining,
        },
        Edit::SetWeight {
            service: "api".into(),
            backend: at("10.1.0.21:8080"),
            weight: 7,
        },
        Edit::SetZoneDrained {
            zone: "az-b".into(),
            service: Some("web".into()),
            drained: true,
        },
        Edit::SetZoneDrained {
            zone: "az-b".into(),
            service: None,
            drained: true,
        },
    ];
    for e in &edits {
        let next = edit::apply(&current, e).unwrap();
        let ops = journal::ops(e, &next).expect("recorded in the journal");
        let mut replayed = current.services.clone();
        for op in ops {
            // Through the record's text, as start-up reads it.
            let line = journal::record(&op);
            let json = line.splitn(3, ' ').nth(2).unwrap().trim_end();
            journal::replay(&mut replayed, serde_json::from_str(json).unwrap()).unwrap();
        }
        assert_eq!(replayed, next.services, "{e:?}");
    }
}
