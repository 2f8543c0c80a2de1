//! `lbctl explain` against a real `lbd` in a namespace lab: for a live connection it
//! names the backend that actually holds the connection (the one that answered), in
//! JSON and in the human form; bad tuples are refused naming the field.
use std::time::Duration;

use lb_tests::{
    hold_via, http, lab_config, scenario::three_zones, RunningLb, BACKEND_PORT, VIP, VIP_PORT,
};

#[test]
fn lbctl_explain_names_the_backend_holding_a_real_connection() {
    let lab = three_zones();
    let config = lab_config(&lab, &[1, 1, 1]);
    let lb = RunningLb::start(lab, &config);
    let ctl = lb.lbctl();
    let mut held = hold_via(lb.lab.client_ns(), VIP, VIP_PORT, Duration::from_secs(10))
        .expect("a connection through the VIP");
    let i = lb.lab.backend_index(&held.backend);
    let holder = format!("{}:{BACKEND_PORT}", lb.lab.backend_addr(i));
    let client = held.local.to_string();
    let vip = format!("{VIP}:{VIP_PORT}");

    let v = ctl.json(&["explain", &client, &vip]);
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
        &format!("/v1/explain?client={client}&vip={VIP}:81"),
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
