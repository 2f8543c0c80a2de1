//! `explain` of IPv6 tuples against the fake data path: the maps are set by hand to each
//! case `lb_v6` distinguishes, and the expected backend of a table pick is read from the
//! fake's ring array at the index the test computes from `lb_common`'s IPv6 hash, not
//! from `decide6`.
use std::{
    net::{SocketAddr, SocketAddrV6},
    time::Instant,
};

use lb_common::{
    flow::{FlowTarget, FLOW_F_CLOSED, FLOW_F_COUNTED, FLOW_F_DATAGRAM, FLOW_F_ESTABLISHED},
    hash::flow_hash6,
    limits::syn_cache_sets,
    service::ring_index,
    syn_cache::{syn_tag_for, SynEntry, SynSet, SynWay},
    syn_cache6::{syn_handshake_hash6_of_flow, syn_set6},
};

use super::{describe::flow_key6_of, explain_protocol, view::render, ExplainError, ExplainView};
use crate::{
    control::runtime::Runtime,
    control::tables::Controller,
    dataplane::FakeDataplane,
    model::config::{self, Protocol},
};

const RING: u32 = 1009;
const SEED: u32 = 7;
const WEB6: &str = "[2001:db8::100]:443";
const DNS6: &str = "[2001:db8::100]:53";
const CLIENT: &str = "[2001:db8:10::2]:40000";

const CONFIG: &str = r#"
node: { zone: az-a }
interfaces: [eth0]
cluster: { ring_size: 1009, hash_seed: 7 }
services:
  - name: web6
    vip: 2001:db8::100
    port: 443
    backends:
      - { address: 2001:db8:1::11, port: 8443, zone: az-a }
      - { address: 2001:db8:1::12, port: 8443, zone: az-a }
  - name: dns6
    vip: 2001:db8::100
    port: 53
    protocol: udp
    backends:
      - { address: 2001:db8:1::11, port: 5353, zone: az-a }
      - { address: 2001:db8:1::12, port: 5353, zone: az-a }
  - name: web
    vip: 10.0.0.100
    port: 443
    backends:
      - { address: 10.1.0.11, port: 8443, zone: az-a }
"#;

fn start() -> Runtime<FakeDataplane> {
    let config = config::parse(CONFIG).unwrap();
    let controller = Controller::new(FakeDataplane::new(RING, SEED), RING);
    Runtime::start(config, controller, Instant::now())
        .unwrap()
        .0
}

fn sa6(s: &str) -> SocketAddrV6 {
    s.parse().unwrap()
}

fn ask(rt: &Runtime<FakeDataplane>, vip: &str, protocol: Protocol) -> ExplainView {
    explain_protocol(rt, sa6(CLIENT), sa6(vip), protocol, Instant::now()).unwrap()
}

/// The id of `service`'s backend at `address` (the bare IPv6 address).
fn id_of(rt: &Runtime<FakeDataplane>, service: &str, address: &str) -> u32 {
    rt.controller()
        .plan()
        .unwrap()
        .backends
        .iter()
        .find(|b| b.at.service == service && b.at.address.to_string() == address)
        .unwrap()
        .id
}

fn service_id(rt: &Runtime<FakeDataplane>, name: &str) -> u32 {
    let plan = rt.controller().plan().unwrap();
    plan.services.iter().find(|s| s.name == name).unwrap().id
}

/// The bare address of the backend `service`'s live ring gives the tuple.
fn ring_backend(rt: &Runtime<FakeDataplane>, service: &str, vip: &str, proto: u8) -> String {
    let fake = rt.controller().dataplane();
    let key = flow_key6_of(sa6(CLIENT), sa6(vip), proto);
    let meta = fake
        .services6
        .values()
        .find(|m| m.id == service_id(rt, service));
    let meta = meta.expect("the service is published");
    let at = ring_index(meta.id, meta.active_slot, RING, flow_hash6(&key, SEED));
    // Unwritten array entries read as 0, as in the kernel.
    let id = fake.ring.get(&at).copied().unwrap_or(0);
    let plan = rt.controller().plan().unwrap();
    let backend = plan.backends.iter().find(|b| b.id == id).unwrap();
    backend.at.address.to_string()
}

fn other_than(address: &str) -> &'static str {
    if address == "2001:db8:1::11" {
        "2001:db8:1::12"
    } else {
        "2001:db8:1::11"
    }
}

fn entry(
    rt: &mut Runtime<FakeDataplane>,
    service: &str,
    vip: &str,
    proto: u8,
    to: &str,
    state: u64,
) {
    let key = flow_key6_of(sa6(CLIENT), sa6(vip), proto);
    let target = FlowTarget {
        backend: id_of(rt, service, to),
        service: service_id(rt, service),
        state,
        last_seen: 0,
        _pad: 0,
    };
    rt.controller_mut()
        .dataplane_mut()
        .flows6
        .insert(key, target);
}

fn pick(c: &super::view::ChoiceView) -> (Option<String>, &str) {
    (c.backend.as_ref().map(|b| b.address.clone()), c.by.as_str())
}

/// A SYN-cache slot holding the IPv6 handshake `CLIENT` -> `vip` sent to `backend`, as
/// `syn_cache6` writes it (the service id in the middle field); its set.
fn put_slot6(rt: &mut Runtime<FakeDataplane>, vip: &str, service: u32, backend: u32) -> u32 {
    let flow = flow_key6_of(sa6(CLIENT), sa6(vip), 6);
    let mask = syn_cache_sets(lb_common::limits::DEFAULT_FLOW_TABLE_SIZE) - 1;
    let set = syn_set6(SEED, &flow.src_addr, flow.src_port, mask);
    let tag = syn_tag_for(syn_handshake_hash6_of_flow(SEED, &flow), backend);
    let way = SynWay::new(SynEntry::new(tag, service, backend));
    let ways = [SynWay::default(), way];
    let dp = rt.controller_mut().dataplane_mut();
    dp.syn_cache.insert(set, SynSet { ways });
    set
}

#[test]
fn an_ipv6_tcp_tuple_is_placed_by_the_table_then_follows_its_entry_or_its_syn_cache_slot() {
    let mut rt = start();
    let v = ask(&rt, WEB6, Protocol::Tcp);
    assert_eq!((v.client.as_str(), v.vip.as_str()), (CLIENT, WEB6));
    assert_eq!(v.service.name, "web6");
    let table = ring_backend(&rt, "web6", WEB6, 6);
    let at = format!("[{table}]:8443");
    assert_eq!(pick(&v.new_connection), (Some(at.clone()), "policy"));
    assert_eq!(pick(&v.existing_connection), (Some(at.clone()), "table"));
    assert_eq!(
        v.new_connection.why,
        format!(
            "a SYN records no flow and is placed by the table: Maglev ring slot {}",
            v.table.ring_index
        )
    );
    assert!(v.flow_entry.is_none() && v.syn_cache.is_none());
    assert_eq!(
        v.table.ring_backend.as_ref().map(|b| b.address.as_str()),
        Some(at.as_str())
    );

    // A handshake in flight on the other backend: its SYN (a retransmit) and its ACK go
    // where the slot says.
    let other = other_than(&table);
    let held = format!("[{other}]:8443");
    let web6 = service_id(&rt, "web6");
    let other_id = id_of(&rt, "web6", other);
    let set = put_slot6(&mut rt, WEB6, web6, other_id);
    let v = ask(&rt, WEB6, Protocol::Tcp);
    assert_eq!(pick(&v.new_connection), (Some(held.clone()), "syn_cache"));
    assert_eq!(
        pick(&v.existing_connection),
        (Some(held.clone()), "syn_cache")
    );
    let slot = v.syn_cache.as_ref().expect("the slot is shown");
    assert_eq!((slot.set, slot.way), (set, 1));
    assert!(
        render(&v).contains(&format!(
            "SYN cache:   set {set} way 1: backend {held} (id "
        )),
        "{}",
        render(&v)
    );
    rt.controller_mut().dataplane_mut().syn_cache.clear();

    // An entry on the other backend: a later packet follows it; a SYN records no flow
    // and looks up none, so it goes by the table.
    entry(
        &mut rt,
        "web6",
        WEB6,
        6,
        other,
        FLOW_F_COUNTED | FLOW_F_ESTABLISHED,
    );
    let v = ask(&rt, WEB6, Protocol::Tcp);
    assert_eq!(
        pick(&v.existing_connection),
        (Some(held.clone()), "flow_entry")
    );
    assert_eq!(pick(&v.new_connection), (Some(at.clone()), "policy"));
    let flow = v.flow_entry.as_ref().expect("the entry is shown");
    assert_eq!(
        flow.backend.as_ref().map(|b| b.address.as_str()),
        Some(held.as_str())
    );
    assert_eq!(flow.flags, ["counted", "established"]);
    assert!(
        render(&v).contains("SYN cache:   no slot holds this handshake\n"),
        "{}",
        render(&v)
    );
    assert!(
        render(&v).contains(&format!("existing connection: {held} (id ")),
        "{}",
        render(&v)
    );

    // Closed: a new connection is placed by the table, a late packet still follows it
    // (no handshake of the tuple went through the SYN cache since).
    entry(
        &mut rt,
        "web6",
        WEB6,
        6,
        other,
        FLOW_F_COUNTED | FLOW_F_CLOSED,
    );
    let v = ask(&rt, WEB6, Protocol::Tcp);
    assert_eq!(pick(&v.new_connection), (Some(at), "policy"));
    assert_eq!(pick(&v.existing_connection), (Some(held), "flow_entry"));
}

#[test]
fn an_ipv6_udp_tuple_goes_by_the_table_then_by_its_entry() {
    let mut rt = start();
    let v = ask(&rt, DNS6, Protocol::Udp);
    assert_eq!(
        (v.protocol, v.service.name.as_str()),
        (Protocol::Udp, "dns6")
    );
    let table = ring_backend(&rt, "dns6", DNS6, 17);
    let at = format!("[{table}]:5353");
    assert_eq!(pick(&v.new_connection), (Some(at.clone()), "table"));
    assert_eq!(v.new_connection, v.existing_connection);

    let other = other_than(&table);
    let state = FLOW_F_COUNTED | FLOW_F_ESTABLISHED | FLOW_F_DATAGRAM;
    entry(&mut rt, "dns6", DNS6, 17, other, state);
    let v = ask(&rt, DNS6, Protocol::Udp);
    assert_eq!(
        pick(&v.new_connection),
        (Some(format!("[{other}]:5353")), "flow_entry")
    );
    assert_eq!(v.new_connection, v.existing_connection);
    assert_eq!(
        v.flow_entry.map(|e| e.flags),
        Some(vec![
            "counted".into(),
            "established".into(),
            "datagram".into()
        ])
    );
}

#[test]
fn an_ipv6_tuple_without_a_service_or_of_mixed_families_is_refused() {
    let rt = start();
    let none = explain_protocol(
        &rt,
        sa6(CLIENT),
        sa6("[2001:db8::100]:80"),
        Protocol::Tcp,
        Instant::now(),
    );
    assert!(
        matches!(none, Err(ExplainError::NoService(SocketAddr::V6(_)))),
        "{none:?}"
    );
    // TCP to the UDP service's port is no service's.
    let tcp = explain_protocol(&rt, sa6(CLIENT), sa6(DNS6), Protocol::Tcp, Instant::now());
    assert!(matches!(tcp, Err(ExplainError::NoService(_))), "{tcp:?}");
    let v4: SocketAddr = "10.0.0.100:443".parse().unwrap();
    let mixed = explain_protocol(&rt, sa6(CLIENT), v4, Protocol::Tcp, Instant::now()).unwrap_err();
    assert_eq!(
        mixed.to_string(),
        "client [2001:db8:10::2]:40000 and vip 10.0.0.100:443 are of different address families"
    );
}
