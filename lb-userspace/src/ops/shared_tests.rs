use std::{path::PathBuf, sync::Arc, time::Instant};

use lb_common::{
    backend::Backend,
    counters::{BackendSignals, TrafficCounters},
    flow::{FlowKey, FlowTarget},
    service::{ServiceKey, ServiceMeta},
    syn_cache::SynSet,
};

use super::*;
use crate::{
    control::tables::Controller,
    dataplane::{Counters, FakeDataplane, Lookups, Write},
    model::config::{self, BackendConfig, BackendState, FlowTimeouts},
    model::desired::state_file,
};

/// The in-memory data path, failing every write while `fail` is set.
struct Flaky {
    fake: FakeDataplane,
    fail: bool,
}

impl Flaky {
    fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(!self.fail, "injected map write failure");
        Ok(())
    }
}

impl Dataplane for Flaky {
    fn set_backend(&mut self, id: u32, backend: &Backend) -> crate::dataplane::WriteResult {
        self.check()?;
        self.fake.set_backend(id, backend)
    }
    fn set_ring_entries(&mut self, entries: &[(u32, u32)]) -> crate::dataplane::WriteResult {
        self.check()?;
        self.fake.set_ring_entries(entries)
    }
    fn set_policy_entries(&mut self, entries: &[(u32, u32)]) -> crate::dataplane::WriteResult {
        self.check()?;
        self.fake.set_policy_entries(entries)
    }
    fn set_filter_words(&mut self, words: &[(u32, u32)]) -> crate::dataplane::WriteResult {
        self.check()?;
        self.fake.set_filter_words(words)
    }
    fn set_service(
        &mut self,
        key: &ServiceKey,
        meta: &ServiceMeta,
    ) -> crate::dataplane::WriteResult {
        self.check()?;
        self.fake.set_service(key, meta)
    }
    fn remove_service(&mut self, key: &ServiceKey) -> crate::dataplane::WriteResult {
        self.check()?;
        self.fake.remove_service(key)
    }
    fn purge_flows(&mut self, ids: &[u32]) -> anyhow::Result<usize> {
        self.check()?;
        self.fake.purge_flows(ids)
    }
    fn backend_signals(&self, id: u32) -> anyhow::Result<BackendSignals> {
        self.fake.backend_signals(id)
    }
    fn set_clock(&mut self, seconds: u32) -> anyhow::Result<()> {
        self.fake.set_clock(seconds)
    }
    fn expire_flows(&mut self, now: u32, timeouts: &FlowTimeouts) -> anyhow::Result<usize> {
        self.fake.expire_flows(now, timeouts)
    }
    fn bump_nexthop_generation(&mut self) -> anyhow::Result<()> {
        self.fake.bump_nexthop_generation()
    }
    fn reconcile_active_flows(&mut self, backends: &[u32]) -> anyhow::Result<Vec<(u32, u64)>> {
        self.fake.reconcile_active_flows(backends)
    }
    fn ensure_attached(&mut self) -> Vec<crate::dataplane::LinkChange> {
        self.fake.ensure_attached()
    }
    fn interface_states(&self) -> Vec<(String, bool)> {
        self.fake.interface_states()
    }
}

/// Reads go to the fake: only writes fail.
impl Lookups for Flaky {
    fn service(&self, key: &ServiceKey) -> anyhow::Result<Option<ServiceMeta>> {
        self.fake.service(key)
    }
    fn backend(&self, id: u32) -> anyhow::Result<Option<Backend>> {
        self.fake.backend(id)
    }
    fn ring_entry(&self, index: u32) -> anyhow::Result<Option<u32>> {
        self.fake.ring_entry(index)
    }
    fn policy_entry(&self, index: u32) -> anyhow::Result<Option<u32>> {
        self.fake.policy_entry(index)
    }
    fn flow(&self, key: &FlowKey) -> anyhow::Result<Option<FlowTarget>> {
        self.fake.flow(key)
    }
    fn syn_set(&self, index: u32) -> anyhow::Result<Option<SynSet>> {
        self.fake.syn_set(index)
    }
    fn active_flows_of(&self, id: u32) -> anyhow::Result<u64> {
        self.fake.active_flows_of(id)
    }
    fn rr_cursors(&self, service_id: u32) -> anyhow::Result<Vec<u32>> {
        self.fake.rr_cursors(service_id)
    }
    fn clock(&self) -> anyhow::Result<u32> {
        Lookups::clock(&self.fake)
    }
}

impl Counters for Flaky {
    fn service_counters(&self, id: u32) -> anyhow::Result<TrafficCounters> {
        self.fake.service_counters(id)
    }
    fn backend_counters(&self, id: u32) -> anyhow::Result<TrafficCounters> {
        self.fake.backend_counters(id)
    }
    fn active_flows(&self, id: u32) -> anyhow::Result<u64> {
        self.fake.active_flows(id)
    }
    fn reason_counters(&self) -> anyhow::Result<Vec<u64>> {
        self.fake.reason_counters()
    }
    fn flow_entries(&self) -> u64 {
        self.fake.flow_entries()
    }
}

fn runtime(name: &str) -> (SharedRuntime<Flaky>, PathBuf) {
    let dir = std::env::temp_dir().join(format!("lbd-runtime-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let state = dir.join("state.yaml");
    let c = config::parse(&format!(
        "node: {{ zone: az-a }}\ninterfaces: [eth0]\ncluster: {{ ring_size: 1009 }}\nstate_file: {}\n\
         services:\n  - {{ name: web, vip: 10.0.0.100, port: 80 }}\n",
        state.display()
    ))
    .unwrap();
    let controller = Controller::new(
        Flaky {
            fake: FakeDataplane::new(1009, 1),
            fail: false,
        },
        1009,
    );
    let (runtime, _) = Runtime::start(c, controller, Instant::now()).unwrap();
    (SharedRuntime::new(runtime), dir)
}

fn add(i: u8) -> Edit {
    Edit::AddBackend {
        service: "web".into(),
        backend: BackendConfig {
            address: std::net::Ipv4Addr::new(10, 1, 0, 10 + i),
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
    let kernel_backends = rt.with(|r| r.controller().dataplane().fake.backends.len());
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
    rt.with(|r| r.controller_mut().dataplane_mut().fail = true);
    let e = rt.change(&add(2)).unwrap_err();
    assert!(matches!(e, ChangeError::Apply(_)), "{e}");
    rt.with(|r| r.controller_mut().dataplane_mut().fail = false);

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
            .fake
            .services
            .keys()
            .map(|k| u16::from_be(k.port))
            .collect()
    });
    assert_eq!(ports, [8080]);
}

/// A runtime over `n` backends of service `web` (ring 65537, so 10,000 fit).
fn runtime_with(name: &str, n: usize) -> (SharedRuntime<Flaky>, PathBuf) {
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
    let controller = Controller::new(
        Flaky {
            fake: FakeDataplane::new(65537, 1),
            fail: false,
        },
        65537,
    );
    let (runtime, _) = Runtime::start(c, controller, Instant::now()).unwrap();
    (SharedRuntime::new(runtime), dir)
}

/// What one change costs, counted rather than timed: the bytes written to persist it,
/// and the ring entries written to apply it.
fn cost_of(rt: &SharedRuntime<Flaky>, edit: &Edit) -> (u64, usize) {
    let bytes = rt.persisted_bytes();
    let ring_writes = |rt: &SharedRuntime<Flaky>| {
        rt.with(|r| {
            let log = &r.controller().dataplane().fake.log;
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
