//! `explain` against the fake data path: the maps are set by hand to each case the data
//! path distinguishes, and the expected backend comes from the fake's own ring lookup
//! (`FakeDataplane::select`) or the applied plan's tables, not from `decide`.
use std::{
    net::{Ipv4Addr, SocketAddrV4},
    time::Instant,
};

use lb_common::{
    flow::{FlowTarget, FLOW_F_CLOSED, FLOW_F_COUNTED, FLOW_F_ESTABLISHED},
    limits::syn_cache_sets,
    syn_cache::{
        forwarded_hash, syn_handshake_hash_of_flow, syn_set, syn_tag_for, SynEntry, SynSet, SynWay,
    },
};

use super::{describe::flow_key, explain, ExplainError, ExplainView};
use crate::{config, controller::Controller, dataplane::FakeDataplane, runtime::Runtime};

const RING: u32 = 1009;
const SEED: u32 = 7;
const FLOWS: u32 = 4096;

const CONFIG: &str = r#"
node: { zone: az-a }
interfaces: [eth0]
cluster: { ring_size: 1009, hash_seed: 7 }
limits: { flow_table_size: 4096, max_services: 8, max_backends: 64 }
services:
  - name: web
    vip: 10.0.0.100
    port: 80
    on_all_unhealthy: fail_closed
    backends:
      - { address: 10.1.0.11, port: 8080, zone: az-a }
      - { address: 10.1.0.12, port: 8080, zone: az-a }
      - { address: 10.1.0.13, port: 8080, zone: az-a, state: draining }
  - name: rr
    vip: 10.0.0.110
    port: 80
    policy: round_robin
    backends:
      - { address: 10.1.0.11, port: 8080, zone: az-a, weight: 3 }
      - { address: 10.1.0.12, port: 8080, zone: az-a, weight: 1 }
  - name: lc
    vip: 10.0.0.111
    port: 80
    policy: least_conn
    backends:
      - { address: 10.1.0.11, port: 8080, zone: az-a }
      - { address: 10.1.0.12, port: 8080, zone: az-a }
  - name: sh
    vip: 10.0.0.112
    port: 80
    policy: source_hash
    backends:
      - { address: 10.1.0.11, port: 8080, zone: az-a }
      - { address: 10.1.0.12, port: 8080, zone: az-a }
"#;

fn start() -> Runtime<FakeDataplane> {
    let config = config::parse(CONFIG).unwrap();
    let controller = Controller::new(FakeDataplane::new(RING, SEED), RING);
    Runtime::start(config, controller, Instant::now())
        .unwrap()
        .0
}

fn sa(s: &str) -> SocketAddrV4 {
    s.parse().unwrap()
}

fn id_of(rt: &Runtime<FakeDataplane>, service: &str, last: u8) -> u32 {
    rt.controller()
        .plan()
        .unwrap()
        .backends
        .iter()
        .find(|b| b.at.service == service && b.at.address == Ipv4Addr::new(10, 1, 0, last))
        .unwrap()
        .id
}

fn ask(rt: &Runtime<FakeDataplane>, client: &str, vip: &str) -> ExplainView {
    explain(rt, sa(client), sa(vip), Instant::now()).unwrap()
}

/// The backend the fake's own ring lookup gives the tuple.
fn ring_backend(rt: &Runtime<FakeDataplane>, client: &str, vip: &str) -> u32 {
    let flow = flow_key(sa(client), sa(vip));
    let dp = rt.controller().dataplane();
    let b = dp.select(&flow.service_key(), &flow).unwrap();
    rt.controller()
        .plan()
        .unwrap()
        .backends
        .iter()
        .find(|p| p.value == b)
        .unwrap()
        .id
}

fn choice(v: &super::view::ChoiceView) -> (Option<u32>, &str) {
    (v.backend.as_ref().map(|b| b.id), v.by.as_str())
}

/// A SYN-cache slot holding the handshake `client` -> `vip` sent to `backend`.
fn put_slot(rt: &mut Runtime<FakeDataplane>, client: &str, vip: &str, backend: u32) -> u32 {
    let flow = flow_key(sa(client), sa(vip));
    let mask = syn_cache_sets(FLOWS) - 1;
    let set = syn_set(SEED, flow.src_addr, flow.src_port, mask);
    let tag = syn_tag_for(syn_handshake_hash_of_flow(SEED, &flow), backend);
    let dp = rt.controller_mut().dataplane_mut();
    dp.syn_cache.insert(
        set,
        SynSet {
            ways: [
                SynWay::default(),
                SynWay::new(SynEntry::new(tag, 0, backend)),
            ],
        },
    );
    set
}

fn put_entry(
    rt: &mut Runtime<FakeDataplane>,
    client: &str,
    vip: &str,
    backend: u32,
    state: u64,
    last_seen: u32,
) {
    let flow = flow_key(sa(client), sa(vip));
    let service = rt.controller().dataplane().services[&flow.service_key()].id;
    rt.controller_mut().dataplane_mut().flows.insert(
        flow,
        FlowTarget {
            backend,
            service,
            state,
            last_seen,
            _pad: 0,
        },
    );
}

/// A client port whose ring pick in `vip`'s service is the backend `last`.
fn port_placed_on(rt: &Runtime<FakeDataplane>, vip: &str, service: &str, last: u8) -> String {
    let want = id_of(rt, service, last);
    (40000..41000)
        .map(|p| format!("10.10.0.2:{p}"))
        .find(|c| ring_backend(rt, c, vip) == want)
        .unwrap()
}

const WEB: &str = "10.0.0.100:80";

#[test]
fn a_tuple_without_state_is_placed_by_the_ring_for_both_packets() {
    let rt = start();
    let client = "10.10.0.2:40000";
    let want = ring_backend(&rt, client, WEB);
    let v = ask(&rt, client, WEB);
    assert_eq!(v.service.name, "web");
    assert_eq!(v.service.policy, "maglev");
    assert_eq!(v.service.on_all_unhealthy, "fail_closed");
    assert!(v.service.stateless_syn);
    assert_eq!(choice(&v.new_connection), (Some(want), "policy"));
    assert_eq!(choice(&v.existing_connection), (Some(want), "table"));
    assert_eq!(
        v.existing_connection.why,
        format!(
            "no flow entry: placed by the table, statelessly: Maglev ring slot {}",
            v.table.ring_index
        )
    );
    assert_eq!(v.table.ring_backend.as_ref().map(|b| b.id), Some(want));
    assert_eq!(v.flow_entry, None);
    assert_eq!(v.syn_cache, None);
}

#[test]
fn an_existing_connection_follows_its_entry_and_a_new_one_the_ring() {
    let mut rt = start();
    let client = port_placed_on(&rt, WEB, "web", 11);
    let other = id_of(&rt, "web", 12);
    put_entry(
        &mut rt,
        &client,
        WEB,
        other,
        FLOW_F_COUNTED | FLOW_F_ESTABLISHED,
        0,
    );
    let v = ask(&rt, &client, WEB);
    assert_eq!(choice(&v.existing_connection), (Some(other), "flow_entry"));
    // A hash-placed service's SYN looks up no flow: the ring's backend.
    assert_eq!(
        choice(&v.new_connection),
        (Some(id_of(&rt, "web", 11)), "policy")
    );
    let e = v.flow_entry.unwrap();
    assert_eq!(e.backend.unwrap().address, "10.1.0.12:8080");
    assert_eq!(e.flags, ["counted", "established"]);
}

#[test]
fn a_handshake_in_flight_is_followed_by_its_syn_cache_slot() {
    let mut rt = start();
    let client = port_placed_on(&rt, WEB, "web", 11);
    let slot_backend = id_of(&rt, "web", 12);
    let set = put_slot(&mut rt, &client, WEB, slot_backend);
    let v = ask(&rt, &client, WEB);
    assert_eq!(choice(&v.new_connection), (Some(slot_backend), "syn_cache"));
    assert_eq!(
        choice(&v.existing_connection),
        (Some(slot_backend), "syn_cache")
    );
    let slot = v.syn_cache.unwrap();
    assert_eq!(
        (slot.set, slot.way, slot.backend_id),
        (set, 1, slot_backend)
    );
    // A slot naming a draining backend: a SYN is placed afresh, the ACK still follows.
    let draining = id_of(&rt, "web", 13);
    put_slot(&mut rt, &client, WEB, draining);
    let v = ask(&rt, &client, WEB);
    assert_eq!(
        choice(&v.new_connection),
        (Some(id_of(&rt, "web", 11)), "policy")
    );
    assert_eq!(
        choice(&v.existing_connection),
        (Some(draining), "syn_cache")
    );
    let b = v.existing_connection.backend.unwrap();
    assert_eq!((b.state.as_str(), b.takes_new_flows), ("draining", false));
}

#[test]
fn an_idle_entry_gives_way_to_a_newer_handshake_of_its_tuple_and_a_live_one_does_not() {
    let mut rt = start();
    let client = port_placed_on(&rt, WEB, "web", 11);
    let (old, new) = (id_of(&rt, "web", 12), id_of(&rt, "web", 11));
    put_slot(&mut rt, &client, WEB, new);
    rt.controller_mut().dataplane_mut().clock = 100;
    put_entry(
        &mut rt,
        &client,
        WEB,
        old,
        FLOW_F_COUNTED | FLOW_F_ESTABLISHED,
        99,
    );
    let v = ask(&rt, &client, WEB);
    assert_eq!(choice(&v.existing_connection), (Some(old), "flow_entry"));
    assert_eq!(v.flow_entry.unwrap().idle_secs, 1);
    put_entry(
        &mut rt,
        &client,
        WEB,
        old,
        FLOW_F_COUNTED | FLOW_F_ESTABLISHED,
        90,
    );
    let v = ask(&rt, &client, WEB);
    assert_eq!(choice(&v.existing_connection), (Some(new), "syn_cache"));
    assert!(v
        .existing_connection
        .why
        .starts_with("the entry belongs to an earlier connection"));
}

#[test]
fn round_robin_names_each_cpus_next_entry_and_a_live_entry_keeps_a_syn() {
    let mut rt = start();
    let vip = "10.0.0.110:80";
    let client = "10.10.0.2:40000";
    let service = rt
        .controller()
        .plan()
        .unwrap()
        .services
        .iter()
        .find(|s| s.name == "rr")
        .unwrap()
        .clone();
    let n = service.table.len();
    let differs = (0..n)
        .find(|p| service.table[*p] != service.table[0])
        .unwrap();
    let cursors = vec![0, differs as u32, (n + differs) as u32];
    rt.controller_mut()
        .dataplane_mut()
        .rr_cursors
        .insert(service.id, cursors);
    let v = ask(&rt, client, vip);
    let next: Vec<u32> = v
        .table
        .round_robin_next
        .iter()
        .map(|c| c.backend.as_ref().unwrap().id)
        .collect();
    assert_eq!(
        next,
        [
            service.table[0],
            service.table[differs],
            service.table[differs]
        ]
    );
    assert_eq!(v.new_connection.by, "policy");
    assert_eq!(
        v.new_connection.backend, None,
        "CPUs disagree: decided per packet"
    );
    // Every CPU's cursor at the same entry: that backend.
    rt.controller_mut()
        .dataplane_mut()
        .rr_cursors
        .insert(service.id, vec![differs as u32, (2 * n + differs) as u32]);
    assert_eq!(
        choice(&ask(&rt, client, vip).new_connection),
        (Some(service.table[differs]), "policy")
    );
    assert_eq!(
        choice(&v.existing_connection),
        (Some(ring_backend(&rt, client, vip)), "table")
    );
    // A stateful service's SYN looks the flow up: a live entry keeps it, a closed one
    // does not.
    let b = id_of(&rt, "rr", 12);
    put_entry(&mut rt, client, vip, b, FLOW_F_COUNTED, 0);
    assert_eq!(
        choice(&ask(&rt, client, vip).new_connection),
        (Some(b), "flow_entry")
    );
    put_entry(&mut rt, client, vip, b, FLOW_F_COUNTED | FLOW_F_CLOSED, 0);
    let v = ask(&rt, client, vip);
    assert_eq!(v.new_connection.by, "policy");
    assert_eq!(choice(&v.existing_connection), (Some(b), "flow_entry"));
}

#[test]
fn least_conn_lists_its_candidates_with_their_load() {
    let mut rt = start();
    let (a, b) = (id_of(&rt, "lc", 11), id_of(&rt, "lc", 12));
    let dp = rt.controller_mut().dataplane_mut();
    dp.active.insert(a, 7);
    dp.active.insert(b, 2);
    let v = ask(&rt, "10.10.0.2:40000", "10.0.0.111:80");
    let mut loads: Vec<(u32, u64)> = v
        .table
        .least_conn_candidates
        .iter()
        .map(|c| (c.backend.id, c.active_flows))
        .collect();
    loads.sort();
    let mut want = vec![(a, 7), (b, 2)];
    want.sort();
    assert_eq!(loads, want);
    assert_eq!(
        (
            v.new_connection.backend.as_ref(),
            v.new_connection.by.as_str()
        ),
        (None, "policy")
    );
}

#[test]
fn source_hash_hashes_the_client_address_alone() {
    let rt = start();
    let vip = "10.0.0.112:80";
    let one = ask(&rt, "10.10.0.2:40000", vip);
    let other = ask(&rt, "10.10.0.2:51234", vip);
    assert!(one.table.ring_by_source);
    assert_eq!(one.table.ring_index, other.table.ring_index);
    assert_eq!(one.new_connection.backend, other.new_connection.backend);
    assert!(one.new_connection.why.contains("source-hash ring slot"));
}

#[test]
fn a_tuple_to_no_service_is_refused_naming_the_vip() {
    let rt = start();
    let e = explain(&rt, sa("10.10.0.2:1"), sa("10.0.0.100:81"), Instant::now()).unwrap_err();
    assert!(matches!(e, ExplainError::NoService(_)));
    assert_eq!(
        e.to_string(),
        "vip: no service listens on 10.0.0.100:81 (the data path passes its packets to the kernel)"
    );
}

#[test]
fn the_human_form_names_backend_policy_and_mode() {
    let rt = start();
    let client = "10.10.0.2:40000";
    let v = ask(&rt, client, WEB);
    let text = super::view::render(&v);
    let first = text.lines().next().unwrap();
    assert_eq!(
        first,
        format!(
            "10.10.0.2:40000 -> 10.0.0.100:80: service web (id {}), policy maglev, mode {}, on all unhealthy: fail_closed",
            v.service.id, v.service.mode
        )
    );
    let b = v.new_connection.backend.as_ref().unwrap();
    assert!(
        text.contains(&format!("new connection:      {} (id {}", b.address, b.id)),
        "{text}"
    );
    assert!(text.contains("flow entry:  none"), "{text}");
}

#[test]
fn a_martian_client_is_dropped_unless_its_tuple_has_an_entry() {
    let mut rt = start();
    let client = "127.0.0.1:40000";
    let v = ask(&rt, client, WEB);
    assert_eq!(choice(&v.new_connection), (None, "dropped"));
    assert_eq!(choice(&v.existing_connection), (None, "dropped"));
    let b = id_of(&rt, "web", 12);
    put_entry(
        &mut rt,
        client,
        WEB,
        b,
        FLOW_F_COUNTED | FLOW_F_ESTABLISHED,
        0,
    );
    let v = ask(&rt, client, WEB);
    assert_eq!(choice(&v.existing_connection), (Some(b), "flow_entry"));
    assert_eq!(choice(&v.new_connection), (None, "dropped"));
    // The VIP itself as the source.
    let v = ask(&rt, "10.0.0.100:40000", WEB);
    assert_eq!(choice(&v.new_connection), (None, "dropped"));
}

#[test]
fn a_forwarded_packets_slot_is_shown_and_followed_by_no_client_packet() {
    let mut rt = start();
    let client = port_placed_on(&rt, WEB, "web", 11);
    let other = id_of(&rt, "web", 12);
    let flow = flow_key(sa(&client), sa(WEB));
    let set = syn_set(
        SEED,
        flow.src_addr,
        flow.src_port,
        syn_cache_sets(FLOWS) - 1,
    );
    let tag = syn_tag_for(
        forwarded_hash(syn_handshake_hash_of_flow(SEED, &flow)),
        other,
    );
    rt.controller_mut().dataplane_mut().syn_cache.insert(
        set,
        SynSet {
            ways: [SynWay::new(SynEntry::new(tag, 0, other)), SynWay::default()],
        },
    );
    let v = ask(&rt, &client, WEB);
    assert_eq!(v.syn_cache, None);
    let slot = v.forwarded_slot.unwrap();
    assert_eq!((slot.set, slot.way, slot.backend_id), (set, 0, other));
    let ring = id_of(&rt, "web", 11);
    assert_eq!(choice(&v.new_connection), (Some(ring), "policy"));
    assert_eq!(choice(&v.existing_connection), (Some(ring), "table"));
}
