//! What a lab needs for direct server return: backends that hold the VIP on `lo` (with
//! the ARP sysctls that keep them from answering for it) and listen on the VIP's port,
//! a service config in a DSR mode, and a bulk exchange through the VIP.
use std::{
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use crate::{
    client::hold_via,
    netns,
    process::{ensure_bpffs, output_within, workspace_bin},
    topology::Lab,
    BackendServer, LabConfig, RunningLb, BACKEND_PORT, VIP, VIP_PORT,
};

/// Makes backend `i` of `lab` a `dsr_l2` backend of `vip` by hand: the VIP on `lo`,
/// `arp_ignore=1` (answer ARP only for addresses of the asking interface) and
/// `arp_announce=2` (never source ARP from the VIP), so that only the LB answers for the
/// VIP on the segment. Returns its servers (see [`dsr_servers`]).
pub fn dsr_backend(lab: &Lab, i: usize, vip: Ipv4Addr) -> [BackendServer; 2] {
    hold_vip_on_lo(lab.backend_ns(i), vip);
    dsr_servers(lab, i, vip)
}

/// What [`dsr_backend`] does to namespace `ns` (NIC `eth0`): `vip` on `lo`, the ARP
/// sysctls.
pub fn hold_vip_on_lo(ns: &str, vip: Ipv4Addr) {
    netns::ns_ip(ns, &["addr", "add", &format!("{vip}/32"), "dev", "lo"]);
    for conf in ["all", "eth0"] {
        netns::ns_sysctl(ns, &format!("net.ipv4.conf.{conf}.arp_ignore"), "1");
        netns::ns_sysctl(ns, &format!("net.ipv4.conf.{conf}.arp_announce"), "2");
    }
}

/// `lb-decap` attached on backend `i`'s `eth0` for `vip`, accepting the LB's backend-side
/// address: the VIP on `lo`, the ARP sysctls, the MSS clamp on the default route, and
/// the decapsulation of IPIP and GUE. Detached, and its pins removed, on drop.
pub struct Decap {
    ns: String,
    settings: Vec<String>,
    pin_dir: PathBuf,
}

impl Decap {
    /// For an IPv6 `vip`, accepting the LB's IPv6 backend-side address.
    /// For an IPv6 `vip`, accepting the LB's IPv6 backend-side address, with the MSS
    /// clamp on the IPv6 default route as well.
    pub fn attach(lab: &Lab, i: usize, vip: impl Into<IpAddr>) -> Decap {
        let vip = vip.into();
        let name = format!("{}-decap-b{i}", lab.prefix());
        let ns = lab.backend_ns(i);
        match vip {
            IpAddr::V4(_) => {
                let prefix = format!("{}/32", crate::topology::LB_BACKEND_ADDR);
                Decap::attach_in(ns, &name, vip, &prefix)
            }
            IpAddr::V6(_) => {
                let prefix = format!("{}/128", crate::topology::LB_BACKEND_ADDR6);
                let routes = ["--client-route", "0.0.0.0/0", "--client-route", "::/0"];
                Decap::attach_with(ns, &name, vip, &prefix, &routes)
            }
        }
    }

    /// `lb-decap` on `eth0` of namespace `ns` for `vip`, accepting `lb_prefix`; `name`
    /// (unique) names its pin directory and state file.
    pub fn attach_in(ns: &str, name: &str, vip: impl Into<IpAddr>, lb_prefix: &str) -> Decap {
        Decap::attach_with(ns, name, vip.into(), lb_prefix, &[])
    }

    /// [`Decap::attach_in`] with more flags.
    fn attach_with(ns: &str, name: &str, vip: IpAddr, lb_prefix: &str, more: &[&str]) -> Decap {
        ensure_bpffs().expect("bpffs");
        let ns = ns.to_string();
        let pin_dir = PathBuf::from(format!("/sys/fs/bpf/{name}"));
        let state = std::env::temp_dir().join(format!("{name}.json"));
        let settings = vec![
            "--pin-dir".to_string(),
            pin_dir.display().to_string(),
            "--state-file".to_string(),
            state.display().to_string(),
        ];
        let decap = Decap {
            ns,
            settings,
            pin_dir,
        };
        let mut args = decap.settings.clone();
        args.extend(
            [
                "-i",
                "eth0",
                "--vip",
                &vip.to_string(),
                "--lb-prefix",
                lb_prefix,
            ]
            .map(String::from),
        );
        args.extend(more.iter().map(|a| a.to_string()));
        decap.run(&args).unwrap_or_else(|e| panic!("{e}"));
        decap
    }

    fn run(&self, args: &[String]) -> Result<String, String> {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", netns::netns_path(&self.ns).display()))
            .arg("--")
            .arg(workspace_bin("lb-decap", "LB_DECAP_BIN"))
            .args(args);
        let out = output_within(cmd, Duration::from_secs(30))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() {
            Ok(text)
        } else {
            Err(format!(
                "lb-decap {args:?} in {}: {}
{text}",
                self.ns, out.status
            ))
        }
    }
}

impl Drop for Decap {
    fn drop(&mut self) {
        let mut args = self.settings.clone();
        args.push("--detach".to_string());
        let _ = self.run(&args);
        let _ = std::fs::remove_dir_all(&self.pin_dir);
    }
}

/// Backend `i`'s servers for DSR: one on `vip`:[`VIP_PORT`], named after the backend,
/// which only a packet still addressed to the VIP reaches; and one on the backend's own
/// address and the same port, named `own-address`, which nothing should reach (lbd
/// probes the VIP through the tunnel too).
pub fn dsr_servers(lab: &Lab, i: usize, vip: impl Into<IpAddr>) -> [BackendServer; 2] {
    let vip = vip.into();
    let ns = lab.backend_ns(i);
    let name = &lab.backend_spec(i).name;
    let family = if vip.is_ipv6() {
        crate::topology::Family::V6
    } else {
        crate::topology::Family::V4
    };
    [
        BackendServer::start(ns, vip, VIP_PORT, name),
        BackendServer::start(ns, lab.backend_ip(i, family), VIP_PORT, "own-address"),
    ]
}

/// The lab's one-service config (see [`LabConfig`]) in forwarding mode `mode`, its
/// backends on the VIP's port (a DSR mode rewrites no port).
pub fn dsr_config(lab: &Lab, mode: &str) -> String {
    LabConfig::new(lab)
        .yaml()
        .replace("mode: nat", &format!("mode: {mode}"))
        .replace(
            &format!("port: {BACKEND_PORT},"),
            &format!("port: {VIP_PORT},"),
        )
}

/// Sends `bytes` bytes through a `HOLD` connection from namespace `ns` to `vip`:[`VIP_PORT`]
/// and reads the backend's echo of all of them back: an upload and a download of
/// `bytes` each, at once. Returns the backend's name; panics on a short, wrong or late
/// echo (every read and write is bounded by `within`).
pub fn bulk_echo(ns: &str, vip: impl Into<IpAddr>, bytes: usize, within: Duration) -> String {
    let vip = vip.into();
    let conn = hold_via(ns, vip, VIP_PORT, Duration::from_secs(5)).expect("HOLD through the VIP");
    let mut reader = conn.stream().try_clone().expect("cloning the stream");
    reader
        .set_read_timeout(Some(within))
        .expect("setting a read timeout");
    let mut writer = conn.stream().try_clone().expect("cloning the stream");
    writer
        .set_write_timeout(Some(within))
        .expect("setting a write timeout");
    let pattern = |at: usize| (at % 251) as u8;
    let sender = thread::spawn(move || {
        let chunk: Vec<u8> = (0..65_536).map(pattern).collect();
        let mut sent = 0;
        while sent < bytes {
            let n = chunk.len().min(bytes - sent);
            writer.write_all(&chunk[..n]).expect("uploading");
            sent += n;
        }
    });
    let deadline = Instant::now() + within;
    let mut buf = vec![0u8; 65_536];
    let mut got = 0;
    while got < bytes {
        assert!(
            Instant::now() < deadline,
            "echo of {got} of {bytes} bytes within {within:?}"
        );
        let n = reader.read(&mut buf).expect("downloading the echo");
        assert!(n > 0, "the connection closed after {got} of {bytes} bytes");
        for (k, b) in buf[..n].iter().enumerate() {
            assert_eq!(
                *b,
                pattern((got + k) % 65_536),
                "byte {} of the echo",
                got + k
            );
        }
        got += n;
    }
    sender.join().expect("the upload thread");
    conn.backend.clone()
}

/// lbd's first verdict on the backend at `addr` (probed on the VIP's port): `healthy` or
/// `unhealthy`. Panics naming the log when there is none within `within`.
pub fn first_verdict(lb: &RunningLb, addr: impl Into<IpAddr>, within: Duration) -> String {
    let addr = addr.into();
    let needle = format!("{}: unknown -> ", SocketAddr::new(addr, VIP_PORT));
    let deadline = Instant::now() + within;
    loop {
        let log = lb.lbd.log();
        if let Some(at) = log.find(&needle) {
            let rest = &log[at + needle.len()..];
            return rest.split_whitespace().next().unwrap_or("").to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no verdict on {addr} within {within:?}; log:\n{log}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// What every DSR mode must show end to end through `lb` (started on [`dsr_config`] in
/// `mode`, with `servers` from [`dsr_backend`] or [`dsr_servers`]): every backend
/// probed healthy through the clients' path (the data path learns a backend's MAC from
/// the neighbour entry those probes leave; a SYN before it is dropped), then 300 connections
/// through the VIP, each seen by its backend from the client's own address and port
/// while the client sees the VIP, all served by the servers bound to the VIP itself (none
/// rewritten to a backend's own address) and spread over the three backends; then 20 MB
/// echoed each way on one connection.
pub fn three_hundred_connections_and_twenty_megabytes_each_way(
    lb: &RunningLb,
    servers: &[[BackendServer; 2]],
    mode: &str,
) {
    for i in 0..lb.lab.backend_count() {
        let addr = lb.lab.backend_addr(i);
        let verdict = first_verdict(lb, addr, Duration::from_secs(30));
        assert_eq!(verdict, "healthy", "{mode}: backend {addr}");
    }
    let result = lb.burst(300, Duration::from_secs(3), Duration::from_secs(120));
    assert!(
        result.failed.is_empty() && result.ok == 300,
        "{mode}: {} of 300 connections failed: {:?}\nlbd log:\n{}",
        result.failed.len(),
        &result.failed[..result.failed.len().min(5)],
        lb.lbd.log()
    );
    let vip = SocketAddr::from((VIP, VIP_PORT));
    for reply in &result.replies {
        assert_eq!(reply.remote, vip, "{mode}: the client must see the VIP");
        assert_eq!(
            reply.peer_seen_by_backend, reply.local,
            "{mode}: the backend must see the client's own address and port"
        );
    }
    let client = lb.lab.client_addr();
    let by_vip: usize = servers
        .iter()
        .map(|[on_vip, _]| on_vip.peers().iter().filter(|p| **p == client).count())
        .sum();
    assert_eq!(
        by_vip, 300,
        "{mode}: served on the VIP: {:?}",
        result.per_backend
    );
    assert_eq!(
        result.per_backend.len(),
        3,
        "{mode}: the hash spreads connections over the three backends: {:?}",
        result.per_backend
    );
    let client_ns = lb.lab.client_ns().to_string();
    let backend = bulk_echo(&client_ns, VIP, 20 << 20, Duration::from_secs(60));
    assert!(
        ["b1", "b2", "b3"].contains(&backend.as_str()),
        "{mode}: echoed by {backend}"
    );
}
