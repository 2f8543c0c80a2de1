//! HAProxy in TCP mode on the LB namespace, the user-space proxy an operator would
//! otherwise pick: round robin over the same backends, one thread per core, no logging
//! (nothing on the packet path that the XDP variant does not do either). `maxconn` stays
//! far below the file limit of this environment (HAProxy wants two descriptors per
//! connection) and far above the few connections the benchmark holds open.
use std::{net::SocketAddrV4, path::Path};

use crate::{process::Daemon, topology::Lab};

/// Where Debian's `haproxy` package puts the binary.
pub const HAPROXY: &str = "/usr/sbin/haproxy";

/// Round robin from `listen` over `backends`, and from `pinned.0` to the one backend
/// `pinned.1` (the iperf3 rows, see `super::standard`).
pub fn config(
    listen: SocketAddrV4,
    backends: &[SocketAddrV4],
    threads: usize,
    pinned: (SocketAddrV4, SocketAddrV4),
) -> String {
    let mut cfg = format!(
        "global\n    maxconn 8000\n    nbthread {threads}\n\
         defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 10s\n    timeout server 10s\n\
         frontend bench\n    bind {listen}\n    default_backend backends\n\
         backend backends\n    balance roundrobin\n"
    );
    for (i, b) in backends.iter().enumerate() {
        cfg.push_str(&format!("    server b{} {b}\n", i + 1));
    }
    cfg.push_str(&format!(
        "frontend pinned\n    bind {}\n    default_backend pinned\n\
         backend pinned\n    server p1 {}\n",
        pinned.0, pinned.1
    ));
    cfg
}

/// Starts `haproxy -db -f CONFIG` (foreground, so the pid is HAProxy's own) in the
/// LB namespace; stopped when the returned daemon is dropped.
pub fn start(lab: &Lab, config_path: &Path) -> Daemon {
    let path = config_path.to_str().expect("temp path is UTF-8");
    lab.spawn_daemon(lab.lb_ns(), Path::new(HAPROXY), &["-db", "-f", path])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_lists_every_backend_in_tcp_mode() {
        let cfg = config(
            "10.0.0.100:80".parse().unwrap(),
            &[
                "10.1.0.11:8080".parse().unwrap(),
                "10.1.0.12:8080".parse().unwrap(),
            ],
            2,
            (
                "10.0.0.100:5201".parse().unwrap(),
                "10.1.0.11:5201".parse().unwrap(),
            ),
        );
        assert!(cfg.contains("mode tcp"));
        assert!(cfg.contains("nbthread 2"));
        assert!(cfg.contains("bind 10.0.0.100:80"));
        assert!(cfg.contains("server b2 10.1.0.12:8080\n"));
        assert!(cfg.contains("bind 10.0.0.100:5201\n"));
        assert!(cfg.contains("server p1 10.1.0.11:5201\n"));
    }
}
