use super::*;
use crate::model::config;

const BASE: &str = r#"
node: { zone: az-a }
interfaces: [eth0]
cluster: { ring_size: 1009 }
services:
  - name: web
    vip: 10.0.0.100
    port: 80
    backends:
      - { address: 10.1.0.11, port: 8080, zone: az-a }
      - { address: 10.1.0.12, port: 8080, zone: az-b, weight: 2 }
"#;

fn base() -> Config {
    config::parse(BASE).unwrap()
}

fn at(s: &str) -> BackendAddr {
    s.parse().unwrap()
}

fn backend(addr: &str, zone: &str, weight: u32) -> BackendConfig {
    BackendConfig {
        address: addr.parse().unwrap(),
        port: 8080,
        zone: zone.into(),
        weight,
        state: BackendState::Active,
    }
}

#[test]
fn backend_addresses_parse_and_print() {
    assert_eq!(at("10.1.0.11:8080").to_string(), "10.1.0.11:8080");
    assert!("10.1.0.11"
        .parse::<BackendAddr>()
        .unwrap_err()
        .contains("ADDRESS:PORT"));
    assert!("10.1.0.300:80"
        .parse::<BackendAddr>()
        .unwrap_err()
        .contains("IPv4"));
    assert!("10.1.0.1:99999"
        .parse::<BackendAddr>()
        .unwrap_err()
        .contains("port"));
}

#[test]
fn add_drain_weight_and_remove_a_backend() {
    let c = base();
    let add = Edit::AddBackend {
        service: "web".into(),
        backend: backend("10.1.0.13", "az-c", 1),
    };
    let c = apply(&c, &add).unwrap();
    assert_eq!(c.services[0].backends.len(), 3);
    let drain = Edit::SetBackendState {
        service: "web".into(),
        backend: at("10.1.0.13:8080"),
        state: BackendState::Draining,
    };
    let c = apply(&c, &drain).unwrap();
    assert_eq!(c.services[0].backends[2].state, BackendState::Draining);
    let weight = Edit::SetWeight {
        service: "web".into(),
        backend: at("10.1.0.11:8080"),
        weight: 5,
    };
    let c = apply(&c, &weight).unwrap();
    assert_eq!(c.services[0].backends[0].weight, 5);
    let remove = Edit::RemoveBackend {
        service: "web".into(),
        backend: at("10.1.0.13:8080"),
    };
    let c = apply(&c, &remove).unwrap();
    assert_eq!(c.services[0].backends.len(), 2);
}

#[test]
fn bad_changes_are_refused_with_what_is_wrong_and_leave_the_state_alone() {
    let c = base();
    let before = c.clone();
    let cases: Vec<(Edit, &str)> = vec![
        (
            Edit::AddBackend {
                service: "nope".into(),
                backend: backend("10.1.0.13", "az-c", 1),
            },
            "service `nope` does not exist",
        ),
        (
            Edit::AddBackend {
                service: "web".into(),
                backend: backend("10.1.0.11", "az-c", 1),
            },
            "service `web` already has backend 10.1.0.11:8080",
        ),
        (
            Edit::AddBackend {
                service: "web".into(),
                backend: backend("10.1.0.13", "az-c", 0),
            },
            "services[0].backends[2].weight: 0 is out of range 1..=1000",
        ),
        (
            Edit::SetWeight {
                service: "web".into(),
                backend: at("10.1.0.11:8080"),
                weight: 1001,
            },
            "services[0].backends[0].weight: 1001 is out of range",
        ),
        (
            Edit::RemoveBackend {
                service: "web".into(),
                backend: at("10.1.0.99:8080"),
            },
            "service `web` has no backend 10.1.0.99:8080",
        ),
        (
            Edit::SetZoneDrained {
                zone: "az-x".into(),
                service: None,
                drained: true,
            },
            "zone `az-x` has no backend in any service",
        ),
        (
            Edit::RemoveService("api".into()),
            "service `api` does not exist",
        ),
        (
            Edit::AddService(base().services[0].clone()),
            "service `web` already exists",
        ),
    ];
    for (edit, message) in cases {
        let e = apply(&c, &edit).unwrap_err().to_string();
        assert!(e.contains(message), "{edit:?}: {e}");
    }
    assert_eq!(c, before);
}

#[test]
fn zones_drain_in_every_service_or_one_and_undrain() {
    let mut c = base();
    let mut api = c.services[0].clone();
    api.name = "api".into();
    api.port = 81;
    c.services.push(api);
    let drain = |service: Option<&str>, drained| Edit::SetZoneDrained {
        zone: "az-b".into(),
        service: service.map(String::from),
        drained,
    };
    let all = apply(&c, &drain(None, true)).unwrap();
    assert!(all.services.iter().all(|s| s.drained_zones == ["az-b"]));
    let again = apply(&all, &drain(None, true)).unwrap();
    assert_eq!(again, all, "draining twice is a no-op");
    let one = apply(&all, &drain(Some("api"), false)).unwrap();
    assert_eq!(one.services[0].drained_zones, ["az-b"]);
    assert!(one.services[1].drained_zones.is_empty());
}

#[test]
fn removing_a_service_and_replacing_all() {
    let c = base();
    let gone = apply(&c, &Edit::RemoveService("web".into())).unwrap();
    assert!(gone.services.is_empty());
    let back = apply(&gone, &Edit::ReplaceServices(c.services.clone())).unwrap();
    assert_eq!(back, c);
}

#[test]
fn an_edit_in_place_is_taken_back_exactly_and_a_refused_one_changes_nothing() {
    let mut c = base();
    let mut api = c.services[0].clone();
    api.name = "api".into();
    api.port = 81;
    c.services.push(api.clone());
    let web = || "web".to_string();
    let edits = vec![
        Edit::AddBackend {
            service: web(),
            backend: backend("10.1.0.13", "az-c", 1),
        },
        // Refused by validation after the change was made: taken back.
        Edit::AddBackend {
            service: web(),
            backend: backend("10.1.0.14", "az-c", 0),
        },
        Edit::SetWeight {
            service: web(),
            backend: at("10.1.0.12:8080"),
            weight: 5,
        },
        Edit::SetWeight {
            service: web(),
            backend: at("10.1.0.12:8080"),
            weight: 1001,
        },
        Edit::SetBackendState {
            service: web(),
            backend: at("10.1.0.11:8080"),
            state: BackendState::Draining,
        },
        // The first of three: its index matters when it is put back.
        Edit::RemoveBackend {
            service: web(),
            backend: at("10.1.0.11:8080"),
        },
        Edit::SetZoneDrained {
            zone: "az-b".into(),
            service: None,
            drained: true,
        },
        Edit::SetZoneDrained {
            zone: "az-b".into(),
            service: Some("api".into()),
            drained: false,
        },
        Edit::RemoveService(web()),
        Edit::AddService({
            let mut s = api.clone();
            s.name = "other".into();
            s.port = 82;
            s
        }),
        Edit::ReplaceServices(vec![api]),
    ];
    let mut refused = 0;
    for edit in &edits {
        let before = c.clone();
        match apply_in_place(&mut c, edit) {
            Ok(revert) => {
                let after = c.clone();
                assert_ne!(after, before, "{edit:?} changed something");
                assert_eq!(after, apply(&before, edit).unwrap(), "{edit:?}");
                revert.undo(&mut c);
                assert_eq!(c, before, "{edit:?} taken back");
                c = after;
            }
            Err(_) => {
                refused += 1;
                assert_eq!(c, before, "{edit:?} refused, nothing changed");
            }
        }
    }
    assert_eq!(refused, 2);
}

#[test]
fn taking_the_last_allow_rule_away_needs_open() {
    let mut c = base();
    let net: SourceNet = "192.0.2.0/24".parse().unwrap();
    let other: SourceNet = "198.51.100.0/24".parse().unwrap();
    c.services[0].filter.allow = vec![net, other];
    let edit = |rule, open| Edit::SetFilterRule {
        service: "web".into(),
        rule,
        open,
    };
    // One of two goes without the flag.
    let c = apply(&c, &edit(FilterEdit::Remove(other), false)).unwrap();
    assert_eq!(c.services[0].filter.allow, [net]);
    for rule in [FilterEdit::Remove(net), FilterEdit::Deny(net)] {
        assert_eq!(
            apply(&c, &edit(rule, false)),
            Err(EditError::WouldOpen("web".into(), net)),
            "{rule:?}"
        );
        let opened = apply(&c, &edit(rule, true)).unwrap();
        assert!(opened.services[0].filter.allow.is_empty(), "{rule:?}");
    }
    // Allowing it again changes nothing and needs nothing.
    assert_eq!(apply(&c, &edit(FilterEdit::Allow(net), false)).unwrap(), c);
}
