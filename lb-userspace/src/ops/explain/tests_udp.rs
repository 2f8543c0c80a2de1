//! `explain` of a UDP tuple against the fake data path: the expected backend comes from
//! the fake's own ring lookup or the entry set by hand, not from `decide`.
use std::{net::SocketAddrV4, time::Instant};

use lb_common::flow::{FlowTarget, FLOW_F_COUNTED, FLOW_F_DATAGRAM, FLOW_F_ESTABLISHED};

use super::{describe::flow_key_of, explain_protocol, view::render, ExplainView};
use crate::{
    control::runtime::Runtime,
    control::tables::Controller,
    dataplane::FakeDataplane,
    model::config::{self, Protocol},
};

const RING: u32 = 1009;
const DNS: &str = "10.0.0.120:53";

/// `dns` (UDP) and `dns-tcp` on one VIP:port, with backend ports of their own.
const CONFIG: &str = r#"
node: { zone: az-a }
interfaces: [eth0]
cluster: { ring_size: 1009, hash_seed: 7 }
services:
  - name: dns
    vip: 10.0.0.120
    port: 53
    protocol: udp
    backends:
      - { address: 10.1.0.11, port: 5353, zone: az-a }
      - { address: 10.1.0.12, port: 5353, zone: az-a }
  - name: dns-tcp
    vip: 10.0.0.120
    port: 53
    backends:
      - { address: 10.1.0.11, port: 8053, zone: az-a }
"#;

fn start() -> Runtime<FakeDataplane> {
    let config = config::parse(CONFIG).unwrap();
    let controller = Controller::new(FakeDataplane::new(RING, 7), RING);
    Runtime::start(config, controller, Instant::now())
        .unwrap()
        .0
}

fn ask(rt: &Runtime<FakeDataplane>, client: &str, protocol: Protocol) -> ExplainView {
    let (client, vip): (SocketAddrV4, SocketAddrV4) =
        (client.parse().unwrap(), DNS.parse().unwrap());
    explain_protocol(rt, client, vip, protocol, Instant::now()).unwrap()
}

fn udp_key(client: &str) -> lb_common::flow::FlowKey {
    let client: SocketAddrV4 = client.parse().unwrap();
    flow_key_of(client, DNS.parse().unwrap(), 17)
}

fn next(v: &ExplainView) -> (Option<String>, &str) {
    let c = &v.new_connection;
    assert_eq!(c, &v.existing_connection, "UDP: one way for both");
    (c.backend.as_ref().map(|b| b.address.clone()), c.by.as_str())
}

#[test]
fn a_udp_tuple_goes_by_the_table_then_by_its_entry_and_tcp_on_the_port_is_another_service() {
    let mut rt = start();
    let client = "10.10.0.2:40000";
    let v = ask(&rt, client, Protocol::Udp);
    assert_eq!(
        (v.protocol, v.service.name.as_str()),
        (Protocol::Udp, "dns")
    );
    let key = udp_key(client);
    let ring = rt
        .controller()
        .dataplane()
        .select(&key.service_key(), &key)
        .unwrap();
    let ring_addr = format!("{}:5353", std::net::Ipv4Addr::from(ring.addr.to_ne_bytes()));
    assert_eq!(next(&v), (Some(ring_addr.clone()), "table"));
    assert!(render(&v).contains("next datagram:"), "{}", render(&v));

    // An entry on the other backend is followed.
    let other = if ring_addr.starts_with("10.1.0.11") {
        "10.1.0.12"
    } else {
        "10.1.0.11"
    };
    let plan = rt.controller().plan().unwrap();
    let other_id = plan
        .backends
        .iter()
        .find(|b| b.at.service == "dns" && b.at.address.to_string() == other)
        .unwrap()
        .id;
    let service = plan.services.iter().find(|s| s.name == "dns").unwrap().id;
    rt.controller_mut().dataplane_mut().flows.insert(
        key,
        FlowTarget {
            backend: other_id,
            service,
            state: FLOW_F_COUNTED | FLOW_F_ESTABLISHED | FLOW_F_DATAGRAM,
            last_seen: 0,
            _pad: 0,
        },
    );
    let v = ask(&rt, client, Protocol::Udp);
    assert_eq!(next(&v), (Some(format!("{other}:5353")), "flow_entry"));
    let flags = v.flow_entry.map(|e| e.flags);
    assert_eq!(
        flags,
        Some(vec![
            "counted".into(),
            "established".into(),
            "datagram".into()
        ])
    );

    // TCP on the same VIP:port is `dns-tcp`'s.
    let v = ask(&rt, client, Protocol::Tcp);
    assert_eq!(
        (v.protocol, v.service.name.as_str()),
        (Protocol::Tcp, "dns-tcp")
    );

    // A martian source is dropped before it is placed.
    let v = ask(&rt, "0.1.2.3:40000", Protocol::Udp);
    assert_eq!(next(&v), (None, "dropped"));
}
