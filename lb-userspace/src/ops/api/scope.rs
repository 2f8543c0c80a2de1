//! What a bearer token on the TCP listener may do. The operator's token
//! (`api.token_file`) may do everything; a registration token
//! (`api.registration_tokens[]`) only what a backend VM needs to join and leave its
//! service: add, drain, undrain and remove backends of the services it names, list
//! those services' backends, and read their lifecycle events (to see its own drain
//! complete). A backend's user data then never holds the keys to the whole load
//! balancer.
//!
//! The decision reads the request's method and raw path, exactly as the router matches
//! them (segments are not decoded: service names never need percent-encoding, so an
//! encoded name simply matches no service and is refused).
use std::collections::BTreeSet;

use axum::http::Method;

/// Who a token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenScope {
    /// Everything the API offers.
    Operator,
    /// Backends of these services only.
    Registration { services: BTreeSet<String> },
}

/// Why a request is outside its token's scope (answered 403).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "this registration token may only add, drain, undrain and remove backends of {services} \
     and list their backends and events; {method} {path} is not allowed"
)]
pub struct Denied {
    pub method: Method,
    pub path: String,
    /// The token's services, for the message.
    pub services: String,
}

impl TokenScope {
    /// Whether a request with `method` on `path` (and `query`) is within this scope.
    pub fn allows(&self, method: &Method, path: &str, query: Option<&str>) -> Result<(), Denied> {
        let TokenScope::Registration { services } = self else {
            return Ok(());
        };
        let own = |service: &str| services.contains(service);
        let segments: Vec<&str> = path.strip_prefix('/').unwrap_or("").split('/').collect();
        let allowed = match (method, segments.as_slice()) {
            (&Method::POST, ["v1", "services", service, "backends"]) => own(service),
            (&Method::DELETE, ["v1", "services", service, "backends", backend]) => {
                own(service) && !backend.is_empty()
            }
            (
                &Method::POST,
                ["v1", "services", service, "backends", backend, "drain" | "undrain"],
            ) => own(service) && !backend.is_empty(),
            (&Method::GET, ["v1", "backends"]) => listed_service(query).is_some_and(own),
            (&Method::GET, ["v1", "events"]) => events_service(query).is_some_and(own),
            _ => false,
        };
        if allowed {
            Ok(())
        } else {
            Err(Denied {
                method: method.clone(),
                path: path.to_string(),
                services: format!(
                    "service{} {}",
                    if services.len() == 1 { "" } else { "s" },
                    services.iter().cloned().collect::<Vec<_>>().join(", ")
                ),
            })
        }
    }
}

/// The one `service=` of a backends listing's query, if that is all it asks.
fn listed_service(query: Option<&str>) -> Option<&str> {
    let query = query?;
    let mut pairs = query.split('&');
    let service = pairs.next()?.strip_prefix("service=")?;
    if pairs.next().is_some() {
        return None;
    }
    Some(service)
}

/// The one `service=` of an events query whose other parameters only say which events
/// and how long (`since`, `follow`, `for`): a registration token reads its services'
/// events, not every service's.
fn events_service(query: Option<&str>) -> Option<&str> {
    let mut service = None;
    for pair in query?.split('&') {
        let (key, value) = pair.split_once('=')?;
        match key {
            "service" if service.is_none() => service = Some(value),
            "since" | "follow" | "for" => {}
            _ => return None,
        }
    }
    service
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registration(services: &[&str]) -> TokenScope {
        TokenScope::Registration {
            services: services.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn allowed(scope: &TokenScope, method: Method, target: &str) -> bool {
        let (path, query) = match target.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (target, None),
        };
        scope.allows(&method, path, query).is_ok()
    }

    /// Every route of the API, each with the method it takes.
    const ROUTES: &[(&str, &str)] = &[
        ("GET", "/v1/services"),
        ("POST", "/v1/services"),
        ("GET", "/v1/services/web"),
        ("DELETE", "/v1/services/web"),
        ("GET", "/v1/backends"),
        ("POST", "/v1/services/web/backends"),
        ("DELETE", "/v1/services/web/backends/10.1.0.11:8080"),
        ("POST", "/v1/services/web/backends/10.1.0.11:8080/drain"),
        ("POST", "/v1/services/web/backends/10.1.0.11:8080/undrain"),
        ("PUT", "/v1/services/web/backends/10.1.0.11:8080/weight"),
        ("GET", "/v1/zones"),
        ("POST", "/v1/zones/az-a/drain"),
        ("POST", "/v1/zones/az-a/undrain"),
        ("GET", "/v1/health"),
        ("GET", "/v1/stats"),
        ("GET", "/v1/config"),
        ("GET", "/v1/explain?client=10.9.0.1:5000&vip=10.0.0.100:80"),
        ("POST", "/v1/services/web/trace"),
        ("POST", "/v1/apply"),
        ("GET", "/v1/backends?service=web"),
        ("GET", "/v1/events"),
        ("GET", "/v1/events?service=web&since=3&follow=1&for=10m"),
    ];

    fn method(name: &str) -> Method {
        Method::from_bytes(name.as_bytes()).unwrap()
    }

    #[test]
    fn the_operator_may_do_everything() {
        for (m, target) in ROUTES {
            assert!(
                allowed(&TokenScope::Operator, method(m), target),
                "{m} {target}"
            );
        }
    }

    #[test]
    fn a_registration_token_may_only_add_drain_and_remove_its_services_backends() {
        let scope = registration(&["web", "api"]);
        let permitted: Vec<_> = ROUTES
            .iter()
            .filter(|(m, target)| allowed(&scope, method(m), target))
            .copied()
            .collect();
        assert_eq!(
            permitted,
            [
                ("POST", "/v1/services/web/backends"),
                ("DELETE", "/v1/services/web/backends/10.1.0.11:8080"),
                ("POST", "/v1/services/web/backends/10.1.0.11:8080/drain"),
                ("POST", "/v1/services/web/backends/10.1.0.11:8080/undrain"),
                ("GET", "/v1/backends?service=web"),
                ("GET", "/v1/events?service=web&since=3&follow=1&for=10m"),
            ]
        );
        assert!(allowed(&scope, Method::POST, "/v1/services/api/backends"));
    }

    #[test]
    fn another_service_a_lookalike_path_or_a_wider_listing_is_refused() {
        let scope = registration(&["web"]);
        for (m, target) in [
            ("POST", "/v1/services/shop/backends"),
            ("DELETE", "/v1/services/shop/backends/10.1.0.11:8080"),
            ("POST", "/v1/services/shop/backends/10.1.0.11:8080/drain"),
            ("POST", "/v1/services/web2/backends"),
            ("POST", "/v1/services/we/backends"),
            // Encoded names are not decoded, so they match nothing.
            ("POST", "/v1/services/w%65b/backends"),
            ("POST", "/v1/services/web/backends/"),
            ("DELETE", "/v1/services/web/backends/"),
            ("POST", "/v1/services/web/backends/10.1.0.11:8080/drain/"),
            ("POST", "//v1/services/web/backends"),
            ("POST", "/v1/services/web/../shop/backends"),
            ("GET", "/v1/backends?service=shop"),
            ("GET", "/v1/backends?service=web&service=shop"),
            ("GET", "/v1/backends?service=web2"),
            ("GET", "/v1/services/web"),
            ("PUT", "/v1/services/web/backends/10.1.0.11:8080/weight"),
            ("GET", "/v1/services/web/backends"),
            ("GET", "/v1/events?service=shop"),
            ("GET", "/v1/events?service=web&service=shop"),
            ("GET", "/v1/events?since=3"),
            ("GET", "/v1/events?service=web&other=1"),
        ] {
            assert!(!allowed(&scope, method(m), target), "{m} {target}");
        }
    }

    #[test]
    fn the_refusal_names_the_tokens_services_and_the_request() {
        let denied = registration(&["web", "api"])
            .allows(&Method::POST, "/v1/services", None)
            .unwrap_err();
        assert_eq!(
            denied.to_string(),
            "this registration token may only add, drain, undrain and remove backends of \
             services api, web and list their backends and events; POST /v1/services is not allowed"
        );
    }
}
