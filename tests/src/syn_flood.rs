//! A spoofed SYN flood for lab tests: one thread in a namespace of the test sends TCP
//! SYNs through a raw socket (`IPPROTO_RAW`, so it writes the IPv4 header itself) as
//! fast as it can, each from a different source address of a prefix and port, to one
//! VIP:port, for a bounded time. The sources are addresses the test's own namespaces
//! route (no one holds them), so the answers go nowhere outside the lab.
use std::{
    net::Ipv4Addr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use lb_common::checksum::{internet_checksum, ipv4_l4_checksum};

use crate::netns;

/// A running flood; [`SynFlood::finish`] stops it and says how much it sent.
pub struct SynFlood {
    stop: Arc<AtomicBool>,
    sender: Option<JoinHandle<FloodReport>>,
}

/// What a flood sent.
#[derive(Debug, Clone, Copy)]
pub struct FloodReport {
    pub sent: u64,
    pub failed: u64,
    pub elapsed: Duration,
}

impl FloodReport {
    /// SYNs sent a second.
    pub fn rate(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl SynFlood {
    /// Starts flooding `target:port` from namespace `ns`, with sources `base` + 0 ..
    /// `sources` (wrapping within that range) and source ports cycling over 1024..65535,
    /// for at most `limit`.
    pub fn start(
        ns: &str,
        target: Ipv4Addr,
        port: u16,
        base: Ipv4Addr,
        sources: u32,
        limit: Duration,
    ) -> SynFlood {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let sender = netns::spawn_in(ns, move || send(target, port, base, sources, limit, &flag));
        SynFlood {
            stop,
            sender: Some(sender),
        }
    }

    /// Stops the flood and returns what it sent.
    pub fn finish(mut self) -> FloodReport {
        self.stop.store(true, Ordering::Relaxed);
        self.sender
            .take()
            .expect("joined once")
            .join()
            .expect("the flood thread panicked")
    }
}

impl Drop for SynFlood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(sender) = self.sender.take() {
            let _ = sender.join();
        }
    }
}

/// The sender's loop, inside the namespace.
fn send(
    target: Ipv4Addr,
    port: u16,
    base: Ipv4Addr,
    sources: u32,
    limit: Duration,
    stop: &AtomicBool,
) -> FloodReport {
    // SAFETY: plain socket(2); the descriptor is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
    assert!(
        fd >= 0,
        "raw socket for the SYN flood: {}",
        std::io::Error::last_os_error()
    );
    let to = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(target.octets()),
        },
        sin_zero: [0; 8],
    };
    let started = Instant::now();
    let (mut sent, mut failed) = (0u64, 0u64);
    let mut i = 0u32;
    while !stop.load(Ordering::Relaxed) && started.elapsed() < limit {
        // Checking the clock and the flag every 256 packets keeps the loop tight.
        for _ in 0..256 {
            let src = Ipv4Addr::from(u32::from(base) + i % sources);
            let sport = 1024 + (i % 64511) as u16;
            let packet = syn(src, target, sport, port, i.wrapping_mul(2_654_435_761));
            // SAFETY: `packet` and `to` outlive the call; lengths are theirs.
            let n = unsafe {
                libc::sendto(
                    fd,
                    packet.as_ptr().cast(),
                    packet.len(),
                    0,
                    (&to as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            };
            if n < 0 {
                failed += 1;
            } else {
                sent += 1;
            }
            i = i.wrapping_add(1);
        }
    }
    let elapsed = started.elapsed();
    // SAFETY: the descriptor opened above, closed once.
    unsafe { libc::close(fd) };
    FloodReport {
        sent,
        failed,
        elapsed,
    }
}

/// An IPv4 + TCP SYN without options, checksums filled in.
fn syn(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, seq: u32) -> [u8; 40] {
    let mut p = [0u8; 40];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&40u16.to_be_bytes());
    p[6] = 0x40;
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let c = internet_checksum(&p[..20], 0);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    let tcp = &mut p[20..];
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&dport.to_be_bytes());
    tcp[4..8].copy_from_slice(&seq.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x02;
    tcp[14..16].copy_from_slice(&64240u16.to_be_bytes());
    let c = ipv4_l4_checksum(src.octets(), dst.octets(), 6, tcp);
    tcp[16..18].copy_from_slice(&c.to_be_bytes());
    p
}
