//! Edge protection through `lbctl` on a namespace lab, real TCP through `lbd`: `lbctl
//! filter deny` refuses the client's new connections while its established one keeps
//! going, `lbctl filter list` shows the rule with what it matched, and `lbctl filter
//! remove` lets the client in again (see docs/edge-protection.md); once over IPv4 and once
//! over IPv6 (an IPv6 VIP and client, a /128 rule).
use std::time::Duration;

use lb_tests::{hold_via, scenario::*, vip, Family, Lab, LabConfig, LabSpec, RunningLb, VIP_PORT};

const PER_CONN: Duration = Duration::from_secs(5);
/// How long a refused client's connect is given: its SYNs are dropped, so it times out.
const REFUSED_WITHIN: Duration = Duration::from_secs(2);
const WAIT: Duration = Duration::from_secs(30);

#[test]
fn lbctl_filter_deny_refuses_new_connections_and_keeps_the_established_one() {
    deny_then_remove(Family::V4);
}

#[test]
fn lbctl_filter_deny_of_an_ipv6_client_refuses_its_new_connections_and_keeps_the_established_one() {
    deny_then_remove(Family::V6);
}

fn deny_then_remove(family: Family) {
    let lab = Lab::build(&LabSpec::three_zones().family(family));
    let health = fast_health();
    let config = LabConfig::new(&lab)
        .family(family)
        .policy(&[&health])
        .yaml();
    let mut lb = RunningLb::start(lab, &config);
    lb.wait_healthy_in(family, 0, &[0, 1, 2], WAIT);
    let ctl = lb.lbctl();
    let vip = vip(family);
    let mut held = hold_via(lb.lab.client_ns(), vip, VIP_PORT, PER_CONN).unwrap();
    let host_len = match family {
        Family::V4 => 32,
        Family::V6 => 128,
    };
    let client = format!("{}/{host_len}", lb.lab.client_ip(family));

    let out = ctl.ok(&["filter", "deny", "web", &client]);
    assert!(out.contains("web"), "{out}");
    let refused = hold_via(lb.lab.client_ns(), vip, VIP_PORT, REFUSED_WITHIN);
    assert!(
        refused.is_err(),
        "a denied client connected: {:?}",
        refused.map(|c| c.backend)
    );
    assert_eq!(held.echo("still here\n", PER_CONN).unwrap(), "still here\n");

    let view = ctl.json(&["filter", "list", "web"]);
    let rules = view["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 1, "{view}");
    assert_eq!(rules[0]["verdict"], "deny");
    assert_eq!(rules[0]["rule"], client.as_str());
    // The refused connect's SYN and its retransmits, at least the first.
    assert!(rules[0]["matches"].as_u64().unwrap() >= 1, "{view}");
    let table = ctl.ok(&["filter", "list", "web"]);
    assert!(table.contains(&client) && table.contains("deny"), "{table}");

    ctl.ok(&["filter", "remove", "web", &client]);
    let again = hold_via(lb.lab.client_ns(), vip, VIP_PORT, PER_CONN).unwrap();
    again.close();
    let view = ctl.json(&["filter", "list", "web"]);
    assert_eq!(view["rules"], serde_json::json!([]), "{view}");
    held.close();
}
