//! The API over its socket, against the in-memory data path sized as lbd sizes the
//! kernel's tables.
use std::{
    collections::HashMap,
    future::IntoFuture as _,
    io::{Read as _, Write as _},
    os::unix::net::UnixStream,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::{json, Value};

use super::router;
use crate::{
    control::{runtime::Runtime, tables::Controller},
    dataplane::{Capacity, FakeDataplane},
    model::{config, desired::state_file},
    ops::{
        metrics::Metrics,
        shared::{Shared, SharedRuntime},
    },
};

const RING: u32 = 1009;

/// lbd with `max_backends: 2`, both held by `web`, serving the API on a unix socket.
struct Lbd {
    runtime: Shared<FakeDataplane>,
    dir: PathBuf,
    socket: PathBuf,
    _server: tokio::runtime::Runtime,
}

impl Lbd {
    fn start(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("lbd-api-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let c = config::parse(&format!(
            "node: {{ zone: az-a }}\ninterfaces: [eth0]\ncluster: {{ ring_size: {RING} }}\n\
             state_file: {}\nlimits: {{ max_services: 2, max_backends: 2 }}\n\
             services:\n  - name: web\n    vip: 10.0.0.100\n    port: 80\n    \
             deregistration_delay: 60s\n    backends:\n      \
             - {{ address: 10.1.0.1, port: 8080, zone: az-a }}\n      \
             - {{ address: 10.1.0.2, port: 8080, zone: az-a }}\n",
            dir.join("state.yaml").display()
        ))
        .unwrap();
        let mut fake = FakeDataplane::new(RING, 1);
        fake.capacity = Some(Capacity {
            services: c.limits.max_services,
            backends: c.limits.max_backends,
        });
        let controller = Controller::new(fake, RING);
        let (runtime, _) = Runtime::start(c, controller, Instant::now()).unwrap();
        let runtime = Arc::new(SharedRuntime::new(runtime));
        let socket = dir.join("lbd.sock");
        let server = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = {
            let _entered = server.enter();
            tokio::net::UnixListener::bind(&socket).unwrap()
        };
        server.spawn(axum::serve(listener, router(runtime.clone())).into_future());
        Self {
            runtime,
            dir,
            socket,
            _server: server,
        }
    }

    /// One request; the status and the JSON body.
    fn request(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let body = body.map(Value::to_string).unwrap_or_default();
        let mut stream = UnixStream::connect(&self.socket).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: lbd\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, serde_json::from_str(body).unwrap())
    }

    /// The state file and its journal, byte for byte.
    fn saved(&self) -> Vec<(String, Vec<u8>)> {
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&self.dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().contains("state.yaml"))
            .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
            .collect();
        files.sort();
        files
    }

    /// The services the state file holds: a whole-state change taken back writes the
    /// previous snapshot again (under a new generation), so its bytes differ.
    fn saved_services(&self) -> Vec<config::ServiceConfig> {
        state_file::read(&self.dir.join("state.yaml"))
            .unwrap()
            .unwrap()
            .services
    }

    /// What the data path holds (prefilter words that read as 0 left out: an unwritten
    /// word and a zero word are the same to the data path).
    fn tables(&self) -> impl PartialEq + std::fmt::Debug {
        self.runtime.with(|r| {
            let f = r.controller().dataplane();
            let filter: HashMap<u32, u32> = f
                .filter
                .iter()
                .filter(|(_, bits)| **bits != 0)
                .map(|(w, b)| (*w, *b))
                .collect();
            (
                f.services.clone(),
                f.backends.clone(),
                f.ring.clone(),
                f.policy_table.clone(),
                filter,
            )
        })
    }

    fn refused_metric(&self) -> String {
        let text = Metrics::new(self.runtime.clone()).encode().unwrap();
        text.lines()
            .find(|l| l.starts_with("lb_api_changes_refused_total{"))
            .unwrap_or_else(|| panic!("no lb_api_changes_refused_total in\n{text}"))
            .to_string()
    }
}

impl Drop for Lbd {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn a_change_with_no_room_in_a_table_is_507_table_full_and_changes_nothing() {
    let lbd = Lbd::start("full");
    assert_eq!(
        lbd.refused_metric(),
        "lb_api_changes_refused_total{reason=\"table_full\"} 0"
    );
    // The removed backend keeps its slot for its flows until the deregistration delay
    // passes: both of the table's slots stay taken, though the config names one backend.
    let (status, _) = lbd.request("DELETE", "/v1/services/web/backends/10.1.0.2:8080", None);
    assert_eq!(status, 200);
    let config_before = lbd.runtime.desired();
    let saved_before = lbd.saved();
    let tables_before = lbd.tables();

    let backend = json!({ "address": "10.1.0.3", "port": 8080, "zone": "az-a" });
    let (status, body) = lbd.request("POST", "/v1/services/web/backends", Some(&backend));
    assert_eq!(status, 507, "{body}");
    assert_eq!(body["reason"], "table_full", "{body}");
    assert_eq!(
        body["error"],
        "no room in the data path: writing backend 10.1.0.3 (id 2): map BACKENDS is full: \
         2 entries (sized by limits.max_backends) (nothing was changed)"
    );
    assert_eq!(
        lbd.refused_metric(),
        "lb_api_changes_refused_total{reason=\"table_full\"} 1"
    );
    assert_eq!(lbd.runtime.desired(), config_before, "the desired state");
    assert_eq!(lbd.saved(), saved_before, "the state file and its journal");
    assert_eq!(lbd.tables(), tables_before, "the data path's tables");
}

#[test]
fn replacing_a_service_when_every_service_slot_is_taken_is_507_table_full() {
    let lbd = Lbd::start("services");
    let second = json!({ "name": "api", "vip": "10.0.0.101", "port": 80 });
    assert_eq!(lbd.request("POST", "/v1/services", Some(&second)).0, 200);
    let config_before = lbd.runtime.desired();
    let saved_before = lbd.saved_services();
    let tables_before = lbd.tables();

    // `web` gone and `other` new in one step: the new service takes an id that was free
    // before too, the third, and max_services is 2.
    let doc = json!({ "services": [
        { "name": "api", "vip": "10.0.0.101", "port": 80 },
        { "name": "other", "vip": "10.0.0.102", "port": 80 },
    ]});
    let (status, body) = lbd.request("POST", "/v1/apply", Some(&doc));
    assert_eq!(status, 507, "{body}");
    assert_eq!(body["reason"], "table_full", "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("map RING is full: 4036 entries (sized by limits.max_services)"),
        "{body}"
    );
    assert_eq!(
        lbd.refused_metric(),
        "lb_api_changes_refused_total{reason=\"table_full\"} 1"
    );
    assert_eq!(lbd.runtime.desired(), config_before);
    assert_eq!(lbd.saved_services(), saved_before);
    assert_eq!(lbd.tables(), tables_before);
}

#[test]
fn filter_rules_are_added_moved_and_removed_live_with_their_counts_shown() {
    use lb_common::{
        edge::{TokenBucket, EDGE_ALLOW, EDGE_DENY},
        service::SERVICE_F_EDGE,
    };

    use crate::dataplane::LimitedSource;

    let lbd = Lbd::start("filter");
    let edge = |lbd: &Lbd| {
        lbd.runtime.with(|r| {
            let f = r.controller().dataplane();
            let flags = f.services.values().next().unwrap().flags;
            let rules: Vec<(String, u32, u32)> = f
                .edge
                .rules
                .iter()
                .map(|(k, r)| (k.to_string(), r.verdict, r.counter))
                .collect();
            (flags & SERVICE_F_EDGE != 0, rules)
        })
    };
    let post = |action: &str, cidr: &str| {
        lbd.request(
            "POST",
            "/v1/services/web/filter",
            Some(&json!({ "action": action, "cidr": cidr })),
        )
    };
    assert_eq!(edge(&lbd), (false, vec![]));
    let (status, body) = post("deny", "192.0.2.0/24");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["changes"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(
        edge(&lbd),
        (true, vec![("192.0.2.0/24".into(), EDGE_DENY, 0)])
    );
    assert_eq!(lbd.saved_services()[0].filter.deny.len(), 1, "persisted");
    lbd.runtime.with(|r| {
        let counters = &mut r.controller_mut().dataplane_mut().counters;
        counters.edge_rule_hits.insert(0, 7);
    });
    let (status, view) = lbd.request("GET", "/v1/services/web/filter", None);
    assert_eq!(status, 200);
    assert_eq!(
        view["rules"],
        json!([{ "verdict": "deny", "rule": "192.0.2.0/24", "matches": 7 }])
    );

    // Allowing the same prefix moves it: a new rule, counted from zero.
    let (status, _) = post("allow", "192.0.2.0/24");
    assert_eq!(status, 200);
    let (on, rules) = edge(&lbd);
    assert!(on);
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].1, EDGE_ALLOW);
    let (_, view) = lbd.request("GET", "/v1/services/web/filter", None);
    assert_eq!(view["rules"][0]["matches"], 0);

    let (status, body) = post("remove", "198.51.100.0/24");
    assert_eq!(status, 404, "{body}");
    let (status, body) = post("deny", "10.1.2.3/8");
    assert_eq!(status, 400, "{body}");
    // A prefix of the other family than the VIP's could never match a client: refused.
    let (status, body) = post("deny", "2001:db8:66::/48");
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["error"],
        "services[0].filter.deny[0]: 2001:db8:66::/48 is IPv6 but the service's VIP \
         10.0.0.100 is IPv4: a service's source rules are of its VIP's family, as its clients \
         are"
    );
    // The last allow rule goes only with `open`: without it the service would silently
    // admit every source.
    let (status, body) = post("remove", "192.0.2.0/24");
    assert_eq!(status, 412, "{body}");
    assert!(body["error"].as_str().unwrap().contains("--open"), "{body}");
    let (status, body) = post("deny", "192.0.2.0/24");
    assert_eq!(status, 412, "moving it to the deny list opens too: {body}");
    assert_eq!(edge(&lbd).1.len(), 1);
    assert_eq!(lbd.saved_services()[0].filter.allow.len(), 1, "unchanged");
    let (status, _) = lbd.request(
        "POST",
        "/v1/services/web/filter",
        Some(&json!({ "action": "remove", "cidr": "192.0.2.0/24", "open": true })),
    );
    assert_eq!(status, 200);
    assert_eq!(edge(&lbd), (false, vec![]));

    lbd.runtime.with(|r| {
        let fake = r.controller_mut().dataplane_mut();
        let bucket = |dropped| TokenBucket {
            dropped,
            ..TokenBucket::default()
        };
        fake.buckets = vec![
            LimitedSource {
                service: 0,
                source: "198.51.100.1".parse().unwrap(),
                bucket: bucket(3),
            },
            LimitedSource {
                service: 0,
                source: "198.51.100.2".parse().unwrap(),
                bucket: bucket(9),
            },
            LimitedSource {
                service: 0,
                source: "198.51.100.3".parse().unwrap(),
                bucket: bucket(0),
            },
        ];
    });
    let (status, list) = lbd.request("GET", "/v1/limited?limit=5", None);
    assert_eq!(status, 200);
    let sources: Vec<(&str, u64)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["source"].as_str().unwrap(),
                l["dropped"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(sources, [("198.51.100.2", 9), ("198.51.100.1", 3)]);
}

#[test]
fn ipv6_services_and_backends_go_through_the_api_in_brackets_where_a_port_follows() {
    let lbd = Lbd::start("ipv6");
    assert_eq!(lbd.request("DELETE", "/v1/services/web", None).0, 200);
    let service = json!({ "name": "web6", "vip": "2001:db8::100", "port": 443 });
    let (status, body) = lbd.request("POST", "/v1/services", Some(&service));
    assert_eq!(status, 200, "{body}");
    let backend = json!({ "address": "2001:db8:1::11", "port": 8443, "zone": "az-a" });
    let (status, body) = lbd.request("POST", "/v1/services/web6/backends", Some(&backend));
    assert_eq!(status, 200, "{body}");

    let (status, list) = lbd.request("GET", "/v1/services", None);
    assert_eq!(status, 200);
    assert_eq!(list[0]["vip"], "2001:db8::100", "{list}");
    let path = "/v1/services/web6/backends/%5B2001:db8:1::11%5D:8443/drain";
    let (status, body) = lbd.request("POST", path, None);
    assert_eq!(status, 200, "{body}");
    let (_, list) = lbd.request("GET", "/v1/backends", None);
    assert_eq!(
        (&list[0]["address"], &list[0]["port"], &list[0]["state"]),
        (&json!("2001:db8:1::11"), &json!(8443), &json!("draining")),
        "{list}"
    );
    let (status, body) = lbd.request(
        "DELETE",
        "/v1/services/web6/backends/2001:db8:1::11:8443",
        None,
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["error"],
        "backend: `2001:db8:1::11:8443`: write an IPv6 address in brackets, as in \
         [2001:db8::11]:8080"
    );

    let other = json!({ "address": "10.1.0.3", "port": 8443, "zone": "az-a" });
    let (status, body) = lbd.request("POST", "/v1/services/web6/backends", Some(&other));
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains(
            "10.1.0.3 is IPv4 but the service's VIP 2001:db8::100 is IPv6: a service's \
             backends are of its VIP's family"
        ),
        "{body}"
    );

    let (status, body) = lbd.request(
        "GET",
        "/v1/explain?client=%5B2001:db8::2%5D:40000&vip=%5B2001:db8::100%5D:443",
        None,
    );
    // Explained as the IPv6 data path decides: its only backend is draining, so the
    // table names none and a new connection is dropped.
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (&body["client"], &body["vip"], &body["service"]["name"]),
        (
            &json!("[2001:db8::2]:40000"),
            &json!("[2001:db8::100]:443"),
            &json!("web6")
        ),
        "{body}"
    );
    assert_eq!(body["new_connection"]["by"], "dropped", "{body}");
    let (status, body) = lbd.request(
        "GET",
        "/v1/explain?client=10.10.0.2:40000&vip=%5B2001:db8::100%5D:443",
        None,
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["error"],
        "client 10.10.0.2:40000 and vip [2001:db8::100]:443 are of different address families"
    );

    lbd.runtime.with(|r| {
        let fake = r.controller().dataplane();
        assert!(fake.services.is_empty(), "nothing in the IPv4 index");
        assert_eq!(fake.services6.len(), 1);
        let id = fake.backends.iter().find(|(_, b)| b.family == 6).unwrap().0;
        assert_eq!(
            fake.backend_addrs6[id],
            crate::model::family::addr6("2001:db8:1::11".parse().unwrap())
        );
    });
}
