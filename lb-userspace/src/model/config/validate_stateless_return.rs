//! The rule of `stateless_return`: the reverse map translates a reply by its source, the
//! backend's address:port, alone, so that address:port must serve one VIP:port. A backend
//! shared with another service would have its replies sent from the wrong VIP on every
//! node that holds no return entry for them; such a config is refused, naming both
//! services, rather than guessed at.
use std::{collections::HashMap, net::IpAddr};

use super::{collector::Collector, model::Config};

/// Reports every backend address:port of a `stateless_return` service that another
/// service lists too. Cost: one pass over every backend of every service, and nothing
/// when no service has `stateless_return`.
pub(super) fn check_stateless_return(c: &mut Collector, config: &Config) {
    if !config.services.iter().any(|s| s.stateless_return) {
        return;
    }
    let mut first: HashMap<(IpAddr, u16), usize> = HashMap::new();
    for (i, s) in config.services.iter().enumerate() {
        for (j, b) in s.backends.iter().enumerate() {
            let Some(&k) = first.get(&(b.address, b.port)) else {
                first.insert((b.address, b.port), i);
                continue;
            };
            let other = &config.services[k];
            if k == i || !(s.stateless_return || other.stateless_return) {
                continue;
            }
            let stateless = if s.stateless_return { s } else { other };
            c.err(
                format!("services[{i}].backends[{j}].address"),
                format!(
                    "{}:{} serves both `{}` and `{}`; `{}` has stateless_return, whose \
                     reverse map can name only one VIP:port per backend address:port \
                     (give the backend another port, or turn stateless_return off)",
                    b.address, b.port, other.name, s.name, stateless.name
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::model::config::{parse, validate_scoped, Scope};

    const TWO: &str = r#"
node: { zone: az-a }
interfaces: [eth0]
services:
  - name: web
    vip: 10.0.0.100
    port: 80
    stateless_return: STATELESS
    backends:
      - { address: 10.1.0.11, port: 8080, zone: az-a }
      - { address: 10.1.0.12, port: 8080, zone: az-a }
  - name: admin
    vip: 10.0.0.101
    port: 80
    backends:
      - { address: 10.1.0.12, port: SHARED, zone: az-a }
"#;

    fn config(stateless: bool, shared: u16) -> String {
        TWO.replace("STATELESS", &stateless.to_string())
            .replace("SHARED", &shared.to_string())
    }

    #[test]
    fn a_backend_of_a_stateless_return_service_serving_another_is_refused_naming_both() {
        let err = parse(&config(true, 8080)).unwrap_err();
        assert_eq!(err.errors.len(), 1, "{err}");
        let e = &err.errors[0];
        assert_eq!(e.field, "services[1].backends[0].address");
        assert!(
            e.message.starts_with(
                "10.1.0.12:8080 serves both `web` and `admin`; `web` has stateless_return"
            ),
            "{}",
            e.message
        );
        // The API's scoped checks say the same.
        let c: crate::model::config::Config = serde_yaml_ng::from_str(&config(true, 8080)).unwrap();
        for scope in [
            Scope::Service("admin"),
            Scope::Backend("admin", "10.1.0.12".parse().unwrap(), 8080),
        ] {
            let err = validate_scoped(&c, scope).unwrap_err();
            assert_eq!(err.errors, vec![e.clone()], "{scope:?}");
        }
    }

    #[test]
    fn an_ipv6_backend_of_a_stateless_return_service_serving_another_is_refused_too() {
        let six = config(true, 8080)
            .replace("10.0.0.100", "\"2001:db8::100\"")
            .replace("10.0.0.101", "\"2001:db8::101\"")
            .replace("10.1.0.11", "\"2001:db8:1::11\"")
            .replace("10.1.0.12", "\"2001:db8:1::12\"");
        let err = parse(&six).unwrap_err();
        assert_eq!(err.errors.len(), 1, "{err}");
        let e = &err.errors[0];
        assert_eq!(e.field, "services[1].backends[0].address");
        assert!(
            e.message.starts_with(
                "2001:db8:1::12:8080 serves both `web` and `admin`; `web` has stateless_return"
            ),
            "{}",
            e.message
        );
        // On another port, the IPv6 backend serves each service alone.
        parse(
            &config(true, 9090)
                .replace("10.0.0.100", "\"2001:db8::100\"")
                .replace("10.0.0.101", "\"2001:db8::101\"")
                .replace("10.1.0.11", "\"2001:db8:1::11\"")
                .replace("10.1.0.12", "\"2001:db8:1::12\""),
        )
        .unwrap();
    }

    #[test]
    fn sharing_is_allowed_without_stateless_return_or_on_another_port() {
        parse(&config(false, 8080)).unwrap();
        parse(&config(true, 9090)).unwrap();
        assert!(!parse(&config(false, 9090)).unwrap().services[0].stateless_return);
    }

    #[test]
    fn passive_ejection_is_off_unless_set_and_refused_when_set_with_stateless_return() {
        let tier = parse(&config(true, 9090)).unwrap();
        let one = parse(&config(false, 9090)).unwrap();
        let ratio = |c: &crate::model::config::Config| {
            let s = &c.services[0];
            s.health.passive_failure_ratio(s.stateless_return)
        };
        assert_eq!((ratio(&tier), ratio(&one)), (0.0, 0.5));

        let asked = |value: &str, stateless: bool| {
            parse(&config(stateless, 9090).replacen(
                "    backends:",
                &format!("    health: {{ passive_failure_ratio: {value} }}\n    backends:"),
                1,
            ))
        };
        let err = asked("0.5", true).unwrap_err();
        assert_eq!(err.errors.len(), 1, "{err}");
        assert_eq!(
            err.errors[0].field,
            "services[0].health.passive_failure_ratio"
        );
        assert!(
            err.errors[0]
                .message
                .starts_with("0.5 with stateless_return"),
            "{}",
            err.errors[0].message
        );
        assert_eq!(ratio(&asked("0", true).unwrap()), 0.0);
        assert_eq!(ratio(&asked("0.3", false).unwrap()), 0.3);
    }
}
