//! A change within one service re-plans and rewrites that service alone, and ends in
//! exactly the kernel state the whole re-plan gives.
use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use lb_common::{
    flow::FlowKey,
    net::FAMILY_IPV4,
    service::{ring_slot_base, ServiceKey},
};

use super::*;
use crate::{
    control::health::machine::Failure,
    dataplane::{FakeDataplane, Write},
    model::config::{self, BackendConfig, BackendState},
    model::desired::edit::{self, BackendAddr, Edit},
};

const RING: u32 = 1009;

fn address(service: usize, i: usize) -> Ipv4Addr {
    Ipv4Addr::new(
        10,
        100 + (service / 250) as u8,
        (service % 250) as u8,
        i as u8 + 1,
    )
}

/// `services` services; the first, `web`, has 10 backends, the others share the rest
/// of `total` backends evenly.
fn fleet_config(services: usize, total: usize) -> Config {
    let mut text = format!(
        "node: {{ zone: az-a }}\ninterfaces: [eth0]\nlimits: {{ max_backends: 16384, max_services: 128 }}\n\
         cluster: {{ ring_size: {RING}, hash_seed: 7 }}\nservices:\n"
    );
    let others = services - 1;
    for s in 0..services {
        let n = match s {
            0 => 10,
            _ => (total - 10) / others + usize::from(s - 1 < (total - 10) % others),
        };
        let name = if s == 0 {
            "web".to_string()
        } else {
            format!("s{s}")
        };
        let list: Vec<String> = (0..n)
            .map(|i| format!("{{ address: {}, port: 8080, zone: az-a }}", address(s, i)))
            .collect();
        text.push_str(&format!(
            "  - {{ name: {name}, vip: 10.0.{}.{}, port: 80, backends: [{}] }}\n",
            s / 250,
            s % 250 + 1,
            list.join(", ")
        ));
    }
    let c = config::parse(&text).unwrap();
    assert_eq!(
        c.services.iter().map(|s| s.backends.len()).sum::<usize>(),
        total
    );
    c
}

fn start(config: Config, now: Instant) -> Runtime<FakeDataplane> {
    let controller = Controller::new(FakeDataplane::new(RING, 7), RING);
    Runtime::start(config, controller, now).unwrap().0
}

fn web(i: usize) -> BackendAddr {
    BackendAddr {
        address: address(0, i).into(),
        port: 8080,
    }
}

/// What one change wrote: the summary, the writes other than prefilter words (which
/// depend on which other addresses share a bit), and the backends it planned.
fn change(
    rt: &mut Runtime<FakeDataplane>,
    edit: &Edit,
    now: Instant,
) -> (ApplySummary, Vec<Write>, u64) {
    let next = edit::apply(rt.config(), edit).unwrap();
    let (service, _) = edit.backend().unwrap();
    let service = service.to_string();
    rt.controller_mut().dataplane_mut().log.clear();
    let planned = rt.controller().backends_planned();
    let summary = rt.reload_service(next, &service, now).unwrap();
    let writes = rt
        .controller()
        .dataplane()
        .log
        .iter()
        .filter(|w| !matches!(w, Write::Filter(_)))
        .cloned()
        .collect();
    (
        summary,
        writes,
        rt.controller().backends_planned() - planned,
    )
}

/// A write with backend ids named by backend (a new backend's id depends on how many
/// ids the other services hold).
fn named(rt: &Runtime<FakeDataplane>, w: &Write) -> String {
    let plan = rt.controller().plan().unwrap();
    let name = |id: &u32| {
        plan.backends
            .iter()
            .find(|b| b.id == *id)
            .map_or(format!("freed slot {id}"), |b| b.at.to_string())
    };
    match w {
        Write::Backend(id) => format!("backend {}", name(id)),
        Write::PurgeFlows(id) => format!("purge {}", name(id)),
        other => format!("{other:?}"),
    }
}

fn edits() -> Vec<Edit> {
    let service = || "web".to_string();
    vec![
        Edit::SetWeight {
            service: service(),
            backend: web(3),
            weight: 3,
        },
        Edit::SetBackendState {
            service: service(),
            backend: web(4),
            state: BackendState::Draining,
        },
        Edit::RemoveBackend {
            service: service(),
            backend: web(5),
        },
        Edit::AddBackend {
            service: service(),
            backend: BackendConfig {
                address: address(0, 200).into(),
                port: 8080,
                zone: "az-a".into(),
                weight: 1,
                state: BackendState::Active,
            },
        },
    ]
}

#[test]
fn a_one_backend_change_writes_and_plans_only_its_service_at_10_and_10000_backends() {
    let t0 = Instant::now();
    let mut small = start(fleet_config(1, 10), t0);
    let mut large = start(fleet_config(100, 10_000), t0);
    let web_key = *small.controller().plan().unwrap().services[0]
        .key
        .v4()
        .unwrap();
    assert_eq!(
        large.controller().plan().unwrap().services[0].key.v4(),
        Some(&web_key)
    );
    let web_id = 0;
    // Writes that belong to `web`: its backend slots, both slots of its ring, its
    // service entry (it is a Maglev service: no policy table).
    let ring_range = ring_slot_base(web_id, 0, RING)..ring_slot_base(web_id, 1, RING) + RING;
    // (backend slots, services flipped, ring entries) written; ring entries are those
    // of the idle slot that differ from the new ring.
    let mut expected = vec![
        // weight 1 -> 3: its slot and a new ring in the idle slot, flipped.
        (1, 1, 171),
        // draining: its slot (weight 0) and a ring without it, flipped.
        (1, 1, 252),
        // removed: it retires (weight 0 in its slot, which stays for its flows) and
        // leaves the ring.
        (1, 1, 191),
        // added: waits for its probes at weight 0, so only its slot is written.
        (1, 0, 0),
    ]
    .into_iter();
    for edit in edits() {
        let (a, writes_a, planned_a) = change(&mut small, &edit, t0);
        let (b, writes_b, planned_b) = change(&mut large, &edit, t0);
        assert_eq!(a, b, "{edit:?}: the same summary at 10 and 10,000 backends");
        let named_a: Vec<String> = writes_a.iter().map(|w| named(&small, w)).collect();
        let named_b: Vec<String> = writes_b.iter().map(|w| named(&large, w)).collect();
        assert_eq!(named_a, named_b, "{edit:?}: the same writes");
        // Only web was planned: its 10 backends, one more after the add... exactly the
        // members it has after the change.
        let members = small.controller().plan().unwrap().services[0]
            .backends
            .len() as u64;
        assert_eq!((planned_a, planned_b), (members, members), "{edit:?}");
        let (backends, flips, ring) = expected.next().unwrap();
        assert_eq!(a.backends_written, backends, "{edit:?}");
        assert_eq!(a.services_flipped, flips, "{edit:?}");
        assert_eq!(a.ring_entries_written, ring, "{edit:?}");
        let web_ids = &large.controller().plan().unwrap().services[0].backends;
        for w in &writes_b {
            match w {
                Write::Backend(id) | Write::PurgeFlows(id) => {
                    assert!(web_ids.contains(id), "{edit:?}: slot {id} is not web's")
                }
                Write::Ring(i) => assert!(ring_range.contains(i), "{edit:?}: ring entry {i}"),
                Write::Service(key, _) => assert_eq!(*key, web_key, "{edit:?}"),
                other => panic!("{edit:?}: unexpected write {other:?}"),
            }
        }
    }
    // A probe verdict: the same, and only web's backends planned.
    let victim = BackendRef {
        service: "web".into(),
        address: address(0, 0).into(),
        port: 8080,
    };
    let probe = |rt: &mut Runtime<FakeDataplane>| {
        let planned = rt.controller().backends_planned();
        // Failures until the verdict turns: the one that turns it writes.
        let summary = (0..10)
            .map(|_| {
                rt.on_probe(&victim, &Err(Failure::Refused), Duration::ZERO, t0)
                    .unwrap()
            })
            .find(|s| *s != ApplySummary::default())
            .expect("the backend turns unhealthy");
        (summary, rt.controller().backends_planned() - planned)
    };
    let (a, planned_a) = probe(&mut small);
    let (b, planned_b) = probe(&mut large);
    assert_eq!(a, b);
    assert_eq!(
        (
            a.backends_written,
            a.services_flipped,
            a.ring_entries_written
        ),
        (1, 1, 203)
    );
    assert_eq!((planned_a, planned_b), (11, 11));
}

/// A tiny deterministic generator (xorshift), so a failing sequence replays exactly.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// The kernel state that matters: services, backend slots, ring and policy entries,
/// prefilter words, and which backend every flow is pinned to.
type KernelState = (
    BTreeMap<[u8; 8], (u32, u32, u32, u32, u32)>,
    BTreeMap<u32, [u32; 4]>,
    BTreeMap<u32, u32>,
    BTreeMap<u32, u32>,
    BTreeMap<u32, u32>,
    BTreeMap<(u32, u16, u32), u32>,
);

fn kernel(d: &FakeDataplane) -> KernelState {
    let key = |k: &ServiceKey| {
        let mut out = [0; 8];
        out[..4].copy_from_slice(&k.addr.to_ne_bytes());
        out[4..6].copy_from_slice(&k.port.to_ne_bytes());
        out
    };
    (
        d.services
            .iter()
            .map(|(k, m)| {
                (
                    key(k),
                    (m.id, m.active_slot, m.policy, m.flags, m.table_len),
                )
            })
            .collect(),
        d.backends
            .iter()
            .map(|(id, b)| {
                (
                    *id,
                    [b.addr, u32::from(b.port), b.flags as u32, b.weight_milli],
                )
            })
            .collect(),
        d.ring.iter().map(|(k, v)| (*k, *v)).collect(),
        d.policy_table.iter().map(|(k, v)| (*k, *v)).collect(),
        d.filter.iter().map(|(k, v)| (*k, *v)).collect(),
        d.flows
            .iter()
            .map(|(k, t)| ((k.dst_addr, k.src_port, k.src_addr), t.backend))
            .collect(),
    )
}

/// Five services of mixed policies, three backends each; two keep new flows in the local
/// zone while it is healthy enough (one of them failing closed), so that changes move
/// services between modes.
fn mixed_config() -> Config {
    let policies = [
        "maglev",
        "round_robin",
        "least_conn",
        "source_hash",
        "maglev",
    ];
    let mut text = format!(
        "node: {{ zone: az-a }}\ninterfaces: [eth0]\n\
         cluster: {{ ring_size: {RING}, hash_seed: 7 }}\nservices:\n"
    );
    for (s, policy) in policies.iter().enumerate() {
        let list: Vec<String> = (0..3)
            .map(|i| {
                let zone = if i == 2 { "az-b" } else { "az-a" };
                format!("{{ address: {}, port: 8080, zone: {zone} }}", address(s, i))
            })
            .collect();
        text.push_str(&format!(
            "  - {{ name: s{s}, vip: 10.0.0.{}, port: 80, policy: {policy}, {}\
             deregistration_delay: {}, slow_start: {}, backends: [{}] }}\n",
            s + 1,
            match s {
                1 => "cross_zone: false, ",
                2 => "cross_zone: false, on_all_unhealthy: fail_closed, ",
                _ => "",
            },
            // The last one frees a removed backend's slot at once.
            if s == 4 { "0s" } else { "2s" },
            // Two services ramp a backend that starts serving again.
            if s == 0 || s == 3 { "3s" } else { "0s" },
            list.join(", ")
        ));
    }
    config::parse(&text).unwrap()
}

fn random_edit(rng: &mut Rng, config: &Config) -> Option<Edit> {
    let s = &config.services[rng.below(config.services.len())];
    let service = s.name.clone();
    let pick = |rng: &mut Rng| {
        let b = &s.backends[rng.below(s.backends.len())];
        BackendAddr {
            address: b.address,
            port: b.port,
        }
    };
    match rng.below(5) {
        0 => Some(Edit::AddBackend {
            service,
            backend: BackendConfig {
                address: address(
                    config.services.iter().position(|x| x.name == s.name)?,
                    rng.below(12),
                )
                .into(),
                port: 8080,
                zone: if rng.below(2) == 0 { "az-a" } else { "az-b" }.into(),
                weight: 1 + rng.below(3) as u32,
                state: BackendState::Active,
            },
        }),
        1 if s.backends.len() > 1 => Some(Edit::RemoveBackend {
            service,
            backend: pick(rng),
        }),
        2 => Some(Edit::SetWeight {
            service,
            backend: pick(rng),
            weight: 1 + rng.below(4) as u32,
        }),
        _ => Some(Edit::SetBackendState {
            service,
            backend: pick(rng),
            state: if rng.below(2) == 0 {
                BackendState::Draining
            } else {
                BackendState::Active
            },
        }),
    }
}

#[test]
fn scoped_changes_end_in_the_same_kernel_state_as_whole_replans() {
    let (mut in_place, mut ramping, mut moved_mode) = (0, 0, 0);
    for seed in 1..=20u64 {
        let t0 = Instant::now();
        let mut scoped = start(mixed_config(), t0);
        let mut whole = start(mixed_config(), t0);
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        for step in 0..60u32 {
            let now = t0 + Duration::from_millis(500) * step;
            match rng.below(4) {
                // A probe result for some backend: the scoped runtime re-plans its
                // service, the whole one everything.
                0 => {
                    let (s, b) = {
                        let c = scoped.config();
                        let s = &c.services[rng.below(c.services.len())];
                        (
                            s.name.clone(),
                            s.backends[rng.below(s.backends.len())].clone(),
                        )
                    };
                    let at = BackendRef {
                        service: s,
                        address: b.address,
                        port: b.port,
                    };
                    let outcome = if rng.below(2) == 0 {
                        Ok(())
                    } else {
                        Err(Failure::Refused)
                    };
                    scoped.on_probe(&at, &outcome, Duration::ZERO, now).unwrap();
                    whole.fleet.observe(&at, &outcome, Duration::ZERO, now);
                    whole.sync(now).unwrap();
                }
                // Timers: deregistration delays pass, slots are freed.
                1 => {
                    scoped.tick(now).unwrap();
                    whole.tick_with(now, false).unwrap();
                }
                _ => {
                    let Some(edit) = random_edit(&mut rng, scoped.config()) else {
                        continue;
                    };
                    let Ok(next) = edit::apply(scoped.config(), &edit) else {
                        continue;
                    };
                    let (service, at) = edit.backend().unwrap();
                    if rng.below(2) == 0 {
                        scoped.reload_service(next.clone(), service, now).unwrap();
                    } else {
                        // The admin API's path: the edit made in place, one backend
                        // re-planned.
                        edit::apply_in_place(scoped.config_mut(), &edit).unwrap();
                        assert_eq!(scoped.config(), &next, "seed {seed} step {step}");
                        let at = BackendRef {
                            service: service.to_string(),
                            address: at.address,
                            port: at.port,
                        };
                        let before = scoped.fleet.basis_of(service);
                        scoped.edited(Edited::Backend(&at), now).unwrap();
                        moved_mode += usize::from(scoped.fleet.basis_of(service) != before);
                    }
                    whole.reload(next, now).unwrap();
                }
            }
            // A ramp steps at the tick (the scoped runtime re-plans a ramping service
            // then, the whole one at every change): compared after it.
            scoped.tick(now).unwrap();
            whole.tick_with(now, false).unwrap();
            ramping += scoped.fleet.ramping_services().len();
            // Some traffic to every service, so that purges have flows to remove.
            for s in 0..5u32 {
                let key = *scoped.controller().plan().unwrap().services[s as usize]
                    .key
                    .v4()
                    .unwrap();
                for port in 0..4u16 {
                    let flow = FlowKey {
                        src_addr: u32::from_ne_bytes([10, 10, 0, 2]),
                        dst_addr: key.addr,
                        src_port: (1000 + step as u16 * 4 + port).to_be(),
                        dst_port: 80u16.to_be(),
                        proto: 6,
                        family: FAMILY_IPV4,
                        _pad: [0; 2],
                    };
                    let a = scoped
                        .controller_mut()
                        .dataplane_mut()
                        .packet(&key, &flow, true);
                    let b = whole
                        .controller_mut()
                        .dataplane_mut()
                        .packet(&key, &flow, true);
                    assert_eq!(a, b, "seed {seed} step {step}: the same pick");
                }
            }
            assert_eq!(
                kernel(scoped.controller().dataplane()),
                kernel(whole.controller().dataplane()),
                "seed {seed} step {step}: the same kernel state"
            );
            assert_eq!(
                scoped.controller().plan(),
                whole.controller().plan(),
                "seed {seed} step {step}: the same plan"
            );
            assert_eq!(
                scoped.fleet.weights(now),
                whole.fleet.weights(now),
                "seed {seed} step {step}: the same effective weights"
            );
            assert!(
                scoped.fleet.serving_counts_agree(),
                "seed {seed} step {step}: the running counts of serving backends"
            );
            assert!(
                scoped.fleet.totals_agree(),
                "seed {seed} step {step}: the running totals that choose the modes"
            );
        }
        in_place += scoped.controller().backends_applied_in_place();
    }
    // The in-place path was taken often enough to be held to the whole re-plan (an add
    // waits for its probes at weight 0; a drained or removed backend that was unhealthy
    // had no ring share).
    assert!(in_place >= 40, "{in_place} changes applied in place");
    // Slow starts began and ran while the scoped runtime was held to the whole one.
    assert!(ramping >= 20, "{ramping} steps with a ramping service");
    // One-backend changes that moved their service to another mode, so that every other
    // backend's weight had to be recomputed.
    assert!(
        moved_mode >= 10,
        "{moved_mode} one-backend changes moved a mode"
    );
    eprintln!("{in_place} in place, {ramping} ramping, {moved_mode} moved a mode");
}

/// A ring large enough for 10,000 backends.
const BIG_RING: u32 = 65_537;

/// One service, `web`, of `n` backends.
fn one_service_config(n: usize) -> Config {
    let list: Vec<String> = (0..n)
        .map(|i| {
            let address = Ipv4Addr::new(10, 100, (i / 250) as u8, (i % 250) as u8 + 1);
            format!("{{ address: {address}, port: 8080, zone: az-a }}")
        })
        .collect();
    config::parse(&format!(
        "node: {{ zone: az-a }}\ninterfaces: [eth0]\nlimits: {{ max_backends: 16384 }}\n\
         cluster: {{ ring_size: {BIG_RING}, hash_seed: 7 }}\nservices:\n  \
         - {{ name: web, vip: 10.0.0.1, port: 80, backends: [{}] }}\n",
        list.join(", ")
    ))
    .unwrap()
}

#[test]
fn a_backend_without_a_ring_share_is_changed_in_place_at_10_and_10000_backends_in_one_service() {
    let t0 = Instant::now();
    for n in [10, 10_000] {
        let controller = Controller::new(FakeDataplane::new(BIG_RING, 7), BIG_RING);
        let mut rt = Runtime::start(one_service_config(n), controller, t0)
            .unwrap()
            .0;
        let added = BackendConfig {
            address: Ipv4Addr::new(10, 200, 0, 1).into(),
            port: 8080,
            zone: "az-a".into(),
            weight: 1,
            state: BackendState::Active,
        };
        let at = BackendRef {
            service: "web".into(),
            address: added.address,
            port: added.port,
        };
        let edits = [
            // Waits for its probes at weight 0.
            Edit::AddBackend {
                service: "web".into(),
                backend: added,
            },
            Edit::SetWeight {
                service: "web".into(),
                backend: web_addr(&at),
                weight: 3,
            },
            Edit::SetBackendState {
                service: "web".into(),
                backend: web_addr(&at),
                state: BackendState::Draining,
            },
        ];
        for edit in edits {
            let planned = rt.controller().backends_planned();
            rt.controller_mut().dataplane_mut().log.clear();
            edit::apply_in_place(rt.config_mut(), &edit).unwrap();
            let summary = rt.edited(Edited::Backend(&at), t0).unwrap();
            // Only its slot: the ring and the service entry stay, and only it is planned.
            let writes: Vec<Write> = rt
                .controller()
                .dataplane()
                .log
                .iter()
                .filter(|w| !matches!(w, Write::Filter(_)))
                .cloned()
                .collect();
            let id = rt.controller().backend_id(&at).unwrap();
            let expected_writes = match edit {
                // Its configured weight changes nothing the kernel holds while it has no
                // ring share.
                Edit::SetWeight { .. } | Edit::SetBackendState { .. } => vec![],
                _ => vec![Write::Backend(id)],
            };
            assert_eq!(writes, expected_writes, "{n} backends, {edit:?}");
            assert_eq!(summary.services_flipped, 0, "{n} backends, {edit:?}");
            assert_eq!(
                rt.controller().backends_planned() - planned,
                1,
                "{n} backends, {edit:?}: only it is planned"
            );
        }
        assert_eq!(rt.controller().backends_applied_in_place(), 3);
    }
}

fn web_addr(at: &BackendRef) -> BackendAddr {
    BackendAddr {
        address: at.address,
        port: at.port,
    }
}
