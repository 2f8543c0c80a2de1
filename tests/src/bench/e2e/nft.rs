//! nftables DNAT on the LB namespace, the in-kernel alternative without XDP: a
//! prerouting NAT rule spreads new connections over the backends with `numgen inc`
//! (round robin); conntrack rewrites the rest of each connection and its replies.
use std::net::{Ipv4Addr, SocketAddrV4};

use crate::netns;

/// The table the benchmark adds and deletes again; nothing else is touched.
pub const TABLE: &str = "lbbench";

/// DNAT of `vip` over `backends` round robin, and of the VIP's port `pinned.0` to the
/// one backend `pinned.1` (the iperf3 rows, see `super::standard`).
pub fn ruleset(
    vip: SocketAddrV4,
    backends: &[Ipv4Addr],
    backend_port: u16,
    pinned: (u16, SocketAddrV4),
) -> String {
    let map: Vec<String> = backends
        .iter()
        .enumerate()
        .map(|(i, b)| format!("{i} : {b}"))
        .collect();
    format!(
        "table ip {TABLE} {{\n  chain prerouting {{\n    type nat hook prerouting priority dstnat; policy accept;\n    \
         ip daddr {} tcp dport {} dnat to numgen inc mod {} map {{ {} }} : {backend_port}\n    \
         ip daddr {} tcp dport {} dnat to {}\n  }}\n}}\n",
        vip.ip(),
        vip.port(),
        backends.len(),
        map.join(", "),
        vip.ip(),
        pinned.0,
        pinned.1,
    )
}

/// Loads the ruleset into namespace `ns` (from a file, as an operator would).
pub fn add(ns: &str, ruleset: &str, path: &std::path::Path) {
    std::fs::write(path, ruleset).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    netns::ns_exec(ns, "nft", &["-f", path.to_str().expect("UTF-8 path")]);
    let _ = std::fs::remove_file(path);
}

/// Deletes the table again; never panics (called on drop).
pub fn delete(ns: &str) {
    if let Err(e) = netns::try_ns_exec(ns, "nft", &["delete", "table", "ip", TABLE]) {
        eprintln!("lb-bench: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruleset_maps_every_backend_round_robin() {
        let r = ruleset(
            "10.0.0.100:80".parse().unwrap(),
            &["10.1.0.11".parse().unwrap(), "10.1.0.12".parse().unwrap()],
            8080,
            (5201, "10.1.0.11:5201".parse().unwrap()),
        );
        assert!(r.contains(
            "ip daddr 10.0.0.100 tcp dport 80 dnat to numgen inc mod 2 map { 0 : 10.1.0.11, 1 : 10.1.0.12 } : 8080\n"
        ));
        assert!(r.contains("ip daddr 10.0.0.100 tcp dport 5201 dnat to 10.1.0.11:5201\n"));
    }
}
