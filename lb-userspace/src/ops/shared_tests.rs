use std::{path::PathBuf, sync::Arc, time::Instant};

use super::*;
use crate::{
    control::tables::Controller,
    dataplane::{FailWrites, FakeDataplane, Write},
    model::config::{self, BackendConfig, BackendState},
    model::desired::state_file,
};

fn runtime(name: &str) -> (SharedRuntime<FakeDataplane>, PathBuf) {
    let dir = std::env::temp_dir().join(format!("lbd-runtime-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let state = dir.join("state.yaml");
    let c = config::parse(&format!(
        "node: {{ zone: az-a }}\ninterfaces: [eth0]\ncluster: {{ ring_size: 1009 }}\nstate_file: {}\n\
         services:\n  - {{ name: web, vip: 10.0.0.100, port: 80 }}\n",
        state.display()
    ))
    .unwrap();
    let controller = Controller::new(FakeDataplane::new(1009, 1), 1009);
    let (runtime, _) = Runtime::start(c, controller, Instant::now()).unwrap();
    (SharedRuntime::new(runtime), dir)
}

fn add(i: u8) -> Edit {
    Edit::AddBackend {
        service: "web".into(),
        backend: BackendConfig {
            address: std::net::Ipv4Addr::new(10, 1, 0, 10 + i).into(),
            port: 8080,
            zone: "az-a".into(),
            weight: 1,
            state: BackendState::Active,
        },
    }
}

#[test]
fn concurrent_changes_are_serialized_and_none_is_lost() {
    let (rt, dir) = runtime("concurrent");
    let rt = Arc::new(rt);
    let threads: Vec<_> = (0..16)
        .map(|i| {
            let rt = rt.clone();
            std::thread::spawn(move || rt.change(&add(i)).unwrap())
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap().changes.len(), 1);
    }
    assert_eq!(rt.desired().services[0].backends.len(), 16);
    let saved = state_file::read(&dir.join("state.yaml")).unwrap().unwrap();
    assert_eq!(saved.services, rt.desired().services);
    let kernel_backends = rt.with(|r| r.controller().dataplane().backends.len());
    assert_eq!(kernel_backends, 16);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_refused_or_failed_change_changes_nothing() {
    let (rt, dir) = runtime("failed");
    rt.change(&add(1)).unwrap();
    let before = rt.desired();
    let saved_before = std::fs::read_to_string(dir.join("state.yaml")).unwrap();

    assert!(matches!(rt.change(&add(1)), Err(ChangeError::Refused(_))));
    rt.with(|r| r.controller_mut().dataplane_mut().fail_writes = FailWrites::All);
    let e = rt.change(&add(2)).unwrap_err();
    assert!(matches!(e, ChangeError::Apply(_)), "{e}");
    rt.with(|r| r.controller_mut().dataplane_mut().fail_writes = FailWrites::None);

    assert_eq!(rt.desired(), before);
    let saved_after = std::fs::read_to_string(dir.join("state.yaml")).unwrap();
    assert_eq!(saved_after, saved_before, "the state file was restored");
    let dry = rt.change_with(|c| edit::apply(c, &add(3)), true).unwrap();
    assert!(!dry.applied && dry.changes.len() == 1);
    assert_eq!(rt.desired(), before, "a dry run changes nothing");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_reload_applies_without_writing_the_state_file() {
    let (rt, dir) = runtime("reload");
    let mut next = rt.desired();
    next.services[0].port = 8080;
    let (r, _) = rt.reload(next.clone()).unwrap();
    assert_eq!(r.changes.len(), 1, "{:?}", r.changes);
    assert_eq!(rt.desired(), next);
    assert!(!dir.join("state.yaml").exists());
    let ports: Vec<u16> = rt.with(|r| {
        r.controller()
            .dataplane()
            .services
            .keys()
            .map(|k| u16::from_be(k.port))
            .collect()
    });
    assert_eq!(ports, [8080]);
}

/// A runtime over `n` backends of service `web` (ring 65537, so 10,000 fit).
fn runtime_with(name: &str, n: usize) -> (SharedRuntime<FakeDataplane>, PathBuf) {
    let dir = std::env::temp_dir().join(format!("lbd-runtime-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let backends: Vec<String> = (0..n)
        .map(|i| {
            format!(
                "      - {{ address: 10.2.{}.{}, port: 8080, zone: az-a }}\n",
                i / 200,
                i % 200 + 1
            )
        })
        .collect();
    let c = config::parse(&format!(
        "node: {{ zone: az-a }}\ninterfaces: [eth0]\nlimits: {{ max_backends: 16384 }}\nstate_file: {}\n\
         services:\n  - name: web\n    vip: 10.0.0.100\n    port: 80\n    backends:\n{}",
        dir.join("state.yaml").display(),
        backends.concat()
    ))
    .unwrap();
    let controller = Controller::new(FakeDataplane::new(65537, 1), 65537);
    let (runtime, _) = Runtime::start(c, controller, Instant::now()).unwrap();
    (SharedRuntime::new(runtime), dir)
}

/// What one change costs, counted rather than timed: the bytes written to persist it,
/// and the ring entries written to apply it.
fn cost_of(rt: &SharedRuntime<FakeDataplane>, edit: &Edit) -> (u64, usize) {
    let bytes = rt.persisted_bytes();
    let ring_writes = |rt: &SharedRuntime<FakeDataplane>| {
        rt.with(|r| {
            let log = &r.controller().dataplane().log;
            log.iter().filter(|w| matches!(w, Write::Ring(_))).count()
        })
    };
    let ring = ring_writes(rt);
    rt.change(edit).unwrap();
    (rt.persisted_bytes() - bytes, ring_writes(rt) - ring)
}

#[test]
fn a_change_to_one_backend_costs_the_same_at_10_and_10000_backends() {
    let mut costs = Vec::new();
    for n in [10, 10_000] {
        let (rt, dir) = runtime_with(&format!("cost-{n}"), n);
        // The first change of a process writes a whole snapshot: the journal it then
        // appends to must be one this process knows to extend that snapshot.
        rt.change(&add(1)).unwrap();
        let first = rt.persisted_bytes();
        assert!(
            first > 80 * n as u64,
            "a snapshot of {n} backends: {first} bytes"
        );
        let journal = dir.join("state.yaml.journal");
        let journal_before = std::fs::metadata(&journal).unwrap().len();
        let added = cost_of(&rt, &add(2));
        let weighted = cost_of(
            &rt,
            &Edit::SetWeight {
                service: "web".into(),
                backend: "10.1.0.12:8080".parse().unwrap(),
                weight: 3,
            },
        );
        let removed = cost_of(
            &rt,
            &Edit::RemoveBackend {
                service: "web".into(),
                backend: "10.1.0.12:8080".parse().unwrap(),
            },
        );
        let journal_after = std::fs::metadata(&journal).unwrap().len();
        assert_eq!(
            journal_after - journal_before,
            added.0 + weighted.0 + removed.0,
            "every byte went to the journal"
        );
        let saved = state_file::read(&dir.join("state.yaml")).unwrap().unwrap();
        assert_eq!(saved.services, rt.desired().services);
        costs.push((added, weighted, removed));
        std::fs::remove_dir_all(&dir).unwrap();
    }
    // One journal record each, the same bytes whatever the number of backends. A new
    // backend waits for its probes at weight 0, so neither adding it, nor changing its
    // weight, nor removing it before it ever served changes a ring entry.
    let expected = ((148, 0), (148, 0), (97, 0));
    assert_eq!(costs, [expected, expected]);
}

#[test]
fn a_change_that_cannot_be_persisted_is_refused_logged_and_counted() {
    use std::os::unix::fs::PermissionsExt;
    let (rt, dir) = runtime("unpersisted");
    rt.change(&add(1)).unwrap();
    let before = rt.desired();
    let rt = Arc::new(rt);
    let metrics = crate::ops::metrics::Metrics::new(rt.clone());
    let text = metrics.encode().unwrap();
    assert!(
        text.contains("\nlb_state_persist_failures_total 0\n"),
        "{text}"
    );
    // A directory that others may write is refused before anything is written.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let e = rt.change(&add(2)).unwrap_err();
    assert!(matches!(e, ChangeError::Persist(_)), "{e}");
    assert!(
        e.to_string().contains("is writable by group or others"),
        "{e}"
    );
    assert_eq!(rt.desired(), before, "nothing was applied");
    assert_eq!(rt.persist_failures(), 1);
    let text = metrics.encode().unwrap();
    assert!(
        text.contains("\nlb_state_persist_failures_total 1\n"),
        "{text}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
