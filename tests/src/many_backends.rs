//! Thousands of backends on one namespace, for health checking at scale: addresses
//! `10.200.x.y` on the `lo` of a lab's first backend namespace, routed to it from the LB
//! namespace, and one [`ProbeResponder`] on `0.0.0.0:<port>` there that accepts every
//! probe and closes it. One backend is made to fail with an nftables drop rule for its
//! address (its probes time out, as for a host that went silent).
use std::{
    net::{Ipv4Addr, SocketAddrV4, TcpListener},
    os::fd::AsRawFd,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::Duration,
};

use crate::{netns, topology::Lab};

/// The `i`-th extra backend address (`i` < 60,000): 10.200.0.1, ..., 10.200.0.250,
/// 10.200.1.1, ...
pub fn address(i: usize) -> Ipv4Addr {
    assert!(i < 60_000, "at most 60,000 extra backends");
    Ipv4Addr::new(10, 200, (i / 250) as u8, (i % 250 + 1) as u8)
}

/// Puts `count` addresses ([`address`]) on `lo` of backend namespace 0 and routes
/// 10.200.0.0/16 to it from the LB namespace. They go when the lab's namespaces do.
pub fn add_addresses(lab: &Lab, count: usize) {
    let batch: String = (0..count)
        .map(|i| format!("address add {}/32 dev lo\n", address(i)))
        .collect();
    let path = std::env::temp_dir().join(format!("{}-addrs.batch", lab.prefix()));
    std::fs::write(&path, batch).expect("writing the address batch");
    let path_str = path.to_str().expect("temp path is UTF-8").to_string();
    lab.ip(lab.backend_ns(0), &["-batch", &path_str]);
    let _ = std::fs::remove_file(&path);
    let via = lab.backend_addr(0).to_string();
    lab.ip(lab.lb_ns(), &["route", "add", "10.200.0.0/16", "via", &via]);
}

/// Drops TCP to `addr`:`port` in backend namespace 0 (probes to it time out).
pub fn silence(lab: &Lab, addr: Ipv4Addr, port: u16) {
    let ns = lab.backend_ns(0);
    let rule = format!(
        "add table ip lbtest\n\
         add chain ip lbtest input {{ type filter hook input priority 0; }}\n\
         add rule ip lbtest input ip daddr {addr} tcp dport {port} drop\n"
    );
    let path = std::env::temp_dir().join(format!("{}-silence.nft", lab.prefix()));
    std::fs::write(&path, rule).expect("writing the nft rule");
    let out = netns::try_ns_exec(ns, "nft", &["-f", path.to_str().expect("UTF-8")]);
    let _ = std::fs::remove_file(&path);
    out.unwrap_or_else(|e| panic!("nft in {ns}: {e}"));
}

/// Accepts every connection on `0.0.0.0:port` of a namespace and closes it at once;
/// stops on drop (within one poll interval).
pub struct ProbeResponder {
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

/// Queue of connections the kernel completes before the responder accepts them: a
/// burst of probes while its thread waits for a CPU must not overflow it.
const BACKLOG: i32 = 4096;

impl ProbeResponder {
    pub fn start(ns: &str, port: u16) -> ProbeResponder {
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicU64::new(0));
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = {
            let (stop, accepted) = (stop.clone(), accepted.clone());
            netns::spawn_in(ns, move || {
                let listener =
                    match TcpListener::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)) {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = tx.send(Err(format!("binding 0.0.0.0:{port}: {e}")));
                            return;
                        }
                    };
                // SAFETY: a listening socket we own; listen again only sets its backlog.
                unsafe { libc::listen(listener.as_raw_fd(), BACKLOG) };
                listener
                    .set_nonblocking(true)
                    .expect("a non-blocking listener");
                let _ = tx.send(Ok(()));
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok(_) => {
                            accepted.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(1)),
                    }
                }
            })
        };
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("probe responder in {ns}: {e}"),
            Err(e) => panic!("probe responder in {ns} did not start: {e}"),
        }
        ProbeResponder {
            stop,
            accepted,
            thread: Some(thread),
        }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for ProbeResponder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_skip_zero_and_the_broadcast_octet() {
        assert_eq!(address(0), Ipv4Addr::new(10, 200, 0, 1));
        assert_eq!(address(249), Ipv4Addr::new(10, 200, 0, 250));
        assert_eq!(address(250), Ipv4Addr::new(10, 200, 1, 1));
        assert_eq!(address(9_999), Ipv4Addr::new(10, 200, 39, 250));
    }
}
