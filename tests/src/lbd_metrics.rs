//! lbd's metrics listener as lab tests read it: its default address inside the LB
//! namespace, a GET there, and one sample out of the exposition text.
use std::net::SocketAddr;

use crate::{http, topology::Lab};

/// lbd's default `metrics.listen`, inside the LB namespace.
pub const METRICS_LISTEN: &str = "127.0.0.1:9464";

/// GET `path` (`/metrics`, `/healthz`, `/readyz`) from lbd's metrics listener in `lab`.
pub fn get(lab: &Lab, path: &'static str) -> http::Response {
    let addr: SocketAddr = METRICS_LISTEN.parse().expect("a socket address");
    lab.run_in(lab.lb_ns(), move || http::tcp(addr, "GET", path, &[], None))
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// The value of the sample `series` (its name and labels exactly as exported, e.g.
/// `lb_interface_attached{interface="lbc"}`) in exposition `text`, if it is there.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}
