//! `lbctl explain` against a real `lbd` in a namespace lab: for a live connection it
//! names the backend that actually holds the connection (the one that answered), in
//! JSON and in the human form, over IPv4 and over IPv6; bad tuples are refused naming
//! the field.
use std::{net::SocketAddr, time::Duration};

use lb_tests::{
    hold_via, http, vip, Family, HeldConn, Lab, LabConfig, LabSpec, RunningLb, VIP_PORT,
};

#[test]
fn lbctl_explain_names_the_backend_holding_a_real_connection() {
    let (lb, held) = explain_a_held_connection(Family::V4);
    let client = held.local.to_string();
    let vip = SocketAddr::new(vip(Family::V4), VIP_PORT);

    let bad = http::unix(
        &lb.socket(),
        "GET",
        &format!("/v1/explain?client=10.10.0.2&vip={vip}"),
        None,
    );
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(
        bad.body
            .contains("client: \\\"10.10.0.2\\\" is not an IPv4 address and port"),
        "{}",
        bad.body
    );
    let none = http::unix(
        &lb.socket(),
        "GET",
        &format!("/v1/explain?client={client}&vip={}:81", vip.ip()),
        None,
    );
    assert_eq!(none.status, 404, "{}", none.body);
    assert!(
        none.body.contains("vip: no service listens on"),
        "{}",
        none.body
    );
    held.close();
}

#[test]
fn over_ipv6_lbctl_explain_names_the_backend_holding_a_real_connection() {
    let (_lb, held) = explain_a_held_connection(Family::V6);
    held.close();
}

/// A connection held through the VIP of `family`, and `lbctl explain` of its tuple: the
/// flow entry names the backend that answered, and explaining changed nothing.
fn explain_a_held_connection(family: Family) -> (RunningLb, HeldConn) {
    let lab = Lab::build(&LabSpec::three_zones().family(family));
    let config = LabConfig::new(&lab).family(family).yaml();
    let lb = RunningLb::start(lab, &config);
    let ctl = lb.lbctl();
    let mut held = hold_via(
        lb.lab.client_ns(),
        vip(family),
        VIP_PORT,
        Duration::from_secs(10),
    )
    .expect("a connection through the VIP");
    assert_eq!(held.local.ip(), lb.lab.client_ip(family));
    let i = lb.lab.backend_index(&held.backend);
    let holder = lb.backend_socket(i, family).to_string();
    let client = held.local.to_string();
    let vip = SocketAddr::new(vip(family), VIP_PORT).to_string();

    let v = ctl.json(&["explain", &client, &vip]);
    assert_eq!(
        (v["client"].as_str(), v["vip"].as_str()),
        (Some(&*client), Some(&*vip))
    );
    assert_eq!(v["service"]["name"], "web", "{v:#}");
    assert_eq!(v["existing_connection"]["by"], "flow_entry", "{v:#}");
    assert_eq!(
        v["existing_connection"]["backend"]["address"], holder,
        "{v:#}"
    );
    assert_eq!(v["flow_entry"]["backend"]["address"], holder, "{v:#}");
    assert_eq!(
        v["flow_entry"]["flags"],
        serde_json::json!(["counted", "established"]),
        "{v:#}"
    );
    let text = ctl.ok(&["explain", &client, &vip]);
    assert!(
        text.contains(&format!("existing connection: {holder} (id ")),
        "{text}"
    );
    // Explaining changed nothing: the connection still reaches its backend.
    assert_eq!(
        held.echo("ping\n", Duration::from_secs(5)).unwrap(),
        "ping\n"
    );
    (lb, held)
}
