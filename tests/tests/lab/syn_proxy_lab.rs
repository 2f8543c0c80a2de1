//! The SYN proxy on a namespace lab, real TCP through `lbd` (see
//! docs/edge-protection.md): a spoofed SYN flood from the client's subnet, as fast as a
//! raw socket here sends, while the legitimate client keeps opening connections; the
//! flood never reaches a backend (no half-open connection there) and the client's
//! connections succeed. And one proxied connection carries 20 MB each way intact.
use std::{
    io::{Read, Write},
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use lb_tests::{
    client::http_get, hold_via, lbd_metrics, netns, scenario::*, syn_flood::SynFlood,
    topology::Lab, LabConfig, RunningLb, VIP, VIP_PORT,
};

const WAIT: Duration = Duration::from_secs(30);
/// The flood's length: the bound.
const FLOOD_FOR: Duration = Duration::from_secs(15);
/// Spoofed sources: 10.10.0.100 .. 10.10.0.249, the client's subnet, held by no one.
const FLOOD_BASE: Ipv4Addr = Ipv4Addr::new(10, 10, 0, 100);
const FLOOD_SOURCES: u32 = 150;
/// A legitimate request's bound: a client's first data may wait one retransmission
/// (the proxy drops it while the backend's handshake is under way).
const PER_REQUEST: Duration = Duration::from_secs(5);

/// Half-open connections (`SYN-RECV`) on backend `i` from the flood's sources.
fn half_open_from_flood(lab: &Lab, i: usize) -> usize {
    let out = lab.exec(
        lab.backend_ns(i),
        "ss",
        &["-H", "-t", "-n", "state", "syn-recv"],
    );
    out.lines()
        .filter(|l| {
            l.split_whitespace().any(|col| {
                col.rsplit_once(':')
                    .and_then(|(addr, _)| addr.parse::<Ipv4Addr>().ok())
                    .is_some_and(|a| {
                        let off = u32::from(a).wrapping_sub(u32::from(FLOOD_BASE));
                        off < FLOOD_SOURCES
                    })
            })
        })
        .count()
}

fn proxied_lab() -> RunningLb {
    let lab = three_zones();
    let health = fast_health();
    let config = LabConfig::new(&lab)
        .policy(&[&health, "syn_proxy: on"])
        .yaml();
    let mut lb = RunningLb::start(lab, &config);
    lb.wait_healthy(0, &[0, 1, 2], WAIT);
    lb
}

#[test]
fn a_spoofed_syn_flood_leaves_no_half_open_connection_on_backends_and_clients_connect() {
    let lb = proxied_lab();
    let lab = &lb.lab;
    let flood = SynFlood::start(
        lab.client_ns(),
        VIP,
        VIP_PORT,
        FLOOD_BASE,
        FLOOD_SOURCES,
        FLOOD_FOR,
    );
    let started = Instant::now();
    let client = netns::spawn_in(lab.client_ns(), move || {
        let (mut ok, mut failed) = (0usize, Vec::new());
        while started.elapsed() < FLOOD_FOR {
            match http_get(VIP, VIP_PORT, PER_REQUEST) {
                Ok(_) => ok += 1,
                Err(e) => failed.push(e),
            }
        }
        (ok, failed)
    });
    let mut half_open = 0;
    let mut samples = 0;
    while started.elapsed() < FLOOD_FOR {
        for i in 0..lab.backend_count() {
            half_open = half_open.max(half_open_from_flood(lab, i));
        }
        samples += 1;
        std::thread::sleep(Duration::from_millis(300));
    }
    let report = flood.finish();
    let (ok, failed) = client.join().expect("the client thread panicked");
    let metrics = lbd_metrics::get(lab, "/metrics").body;
    let cookies = lbd_metrics::sample(
        &metrics,
        "lb_datapath_packets_total{action=\"tx\",reason=\"tx_syn_cookie\"}",
    )
    .unwrap_or(0.0);
    let attempts = ok + failed.len();
    println!(
        "flood: {} SYNs in {:.1} s ({:.0}/s, {} send errors); {cookies} SYN cookies sent; \
         legitimate: {ok}/{attempts} succeeded; half-open from the flood on backends: \
         {half_open} (max of {samples} samples)",
        report.sent,
        report.elapsed.as_secs_f64(),
        report.rate(),
        report.failed,
    );
    assert!(report.sent > 0, "the flood sent nothing");
    assert!(
        cookies >= report.sent as f64 * 0.5,
        "the flood did not reach the proxy: {cookies} cookies for {} SYNs",
        report.sent
    );
    assert!(attempts >= 20, "only {attempts} legitimate attempts");
    assert!(
        ok * 100 >= attempts * 99,
        "{ok}/{attempts} legitimate connections succeeded; failures: {failed:?}"
    );
    assert_eq!(
        half_open, 0,
        "half-open connections from the flood on a backend"
    );
}

#[test]
fn a_proxied_connection_carries_20_mb_each_way_intact() {
    const SIZE: usize = 20 << 20;
    let lb = proxied_lab();
    let held = hold_via(lb.lab.client_ns(), VIP, VIP_PORT, WAIT).expect("a held connection");
    // A pseudo-random payload (xorshift), so a shifted or repeated block shows.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let sent: Vec<u8> = (0..SIZE)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let mut writer = held.stream().try_clone().expect("a second handle");
    writer
        .set_write_timeout(Some(WAIT))
        .expect("a write timeout");
    let mut reader = held.stream().try_clone().expect("a second handle");
    reader.set_read_timeout(Some(WAIT)).expect("a read timeout");
    let to_send = sent.clone();
    let sending = std::thread::spawn(move || writer.write_all(&to_send));
    let mut got = Vec::with_capacity(SIZE);
    let mut chunk = vec![0u8; 1 << 16];
    let deadline = Instant::now() + Duration::from_secs(120);
    while got.len() < SIZE {
        assert!(
            Instant::now() < deadline,
            "only {} bytes echoed in time",
            got.len()
        );
        let n = reader.read(&mut chunk).expect("reading the echo");
        assert!(n > 0, "closed after {} bytes", got.len());
        got.extend_from_slice(&chunk[..n]);
    }
    sending
        .join()
        .expect("the writer panicked")
        .expect("sending 20 MB");
    let digest = |b: &[u8]| {
        b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &v| {
            (h ^ v as u64).wrapping_mul(0x100_0000_01b3)
        })
    };
    assert_eq!(digest(&got), digest(&sent), "the echoed bytes differ");
    assert!(got == sent, "the echoed bytes differ");
    println!(
        "20 MB each way through the proxy, FNV-1a {:016x}",
        digest(&got)
    );
    held.close();
}

#[test]
fn syn_proxy_auto_switches_on_for_a_flood_and_off_after_it() {
    let lab = three_zones();
    let health = fast_health();
    let config = LabConfig::new(&lab)
        .policy(&[
            &health,
            "syn_proxy: auto",
            "syn_proxy_auto: { on_above: 2000, off_below: 200, hold: 2s }",
        ])
        .yaml();
    let mut lb = RunningLb::start(lab, &config);
    lb.wait_healthy(0, &[0, 1, 2], WAIT);
    let mark = lb.lbd.log().len();
    let flood = SynFlood::start(
        lb.lab.client_ns(),
        VIP,
        VIP_PORT,
        FLOOD_BASE,
        FLOOD_SOURCES,
        Duration::from_secs(8),
    );
    let on = "SYN proxy on";
    let deadline = Instant::now() + Duration::from_secs(8);
    while !lb.lbd.log()[mark..].contains(on) {
        assert!(
            Instant::now() < deadline,
            "no switch on during the flood:\n{}",
            lb.lbd.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let report = flood.finish();
    let off = "SYN proxy off";
    let deadline = Instant::now() + Duration::from_secs(15);
    while !lb.lbd.log()[mark..].contains(off) {
        assert!(
            Instant::now() < deadline,
            "no switch off after the flood:\n{}",
            lb.lbd.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let metrics = lbd_metrics::get(&lb.lab, "/metrics").body;
    println!("flood {:.0} SYNs/s", report.rate());
    assert_eq!(
        lbd_metrics::sample(&metrics, "lb_syn_proxy_switches_total{service=\"web\"}"),
        Some(2.0),
        "{metrics}"
    );
    assert_eq!(
        lbd_metrics::sample(&metrics, "lb_syn_proxy_on{service=\"web\"}"),
        Some(0.0)
    );
    // And the service works after it all.
    let reply = lb_tests::http_get_via(lb.lab.client_ns(), VIP, VIP_PORT, PER_REQUEST);
    assert!(reply.is_ok(), "{reply:?}");
}
