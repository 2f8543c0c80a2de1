//! `lb-decap` on a backend namespace, fed by a raw-socket sender in an "LB" namespace:
//! IPIP and GUE datagrams reach a socket bound to the VIP with the client's address as
//! their source, the reply leaves from the VIP, packets from outside the LB prefix are
//! dropped and counted, and `--detach` leaves nothing behind.
//!
//! ```text
//!  ns lb: l0 10.1.0.5/24, client 10.10.0.2/32 on lo  <-veth->  ns be: b0 10.1.0.11/24
//!                                                              default via 10.1.0.5
//! ```
use std::{
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use lb_tests::{
    decap_frames::{encapsulate_packet, send_raw, udp_packet, Encap},
    netns::{self, NetNs},
    process::{ensure_bpffs, output_within, workspace_bin},
};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 10, 0, 2);
const LB: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 5);
const BACKEND: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 11);
const VIP_PORT: u16 = 7000;
const CLIENT_PORT: u16 = 5555;
const WAIT: Duration = Duration::from_secs(3);

struct Pins(PathBuf, PathBuf);

impl Drop for Pins {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

fn lb_decap(ns: &str, args: &[&str]) -> Result<String, String> {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={}", netns::netns_path(ns).display()))
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
        Err(format!("lb-decap {args:?}: {}\n{text}", out.status))
    }
}

/// Sends `inner` encapsulated from `outer_src` in namespace `lb`.
fn send(lb: &str, encap: Encap, outer_src: Ipv4Addr, payload: &[u8]) {
    let inner = udp_packet((CLIENT, CLIENT_PORT), (VIP, VIP_PORT), payload);
    let packet = encapsulate_packet(encap, outer_src, BACKEND, &inner);
    netns::run_in(lb, move || send_raw(&packet)).expect("sending the raw packet");
}

fn recv(socket: &UdpSocket) -> Option<(Vec<u8>, SocketAddr)> {
    let mut buf = [0u8; 2048];
    socket
        .recv_from(&mut buf)
        .ok()
        .map(|(n, from)| (buf[..n].to_vec(), from))
}

fn stats(be: &str, settings: &[&str]) -> serde_json::Value {
    let mut args = settings.to_vec();
    args.extend(["stats", "-o", "json"]);
    serde_json::from_str(&lb_decap(be, &args).unwrap()).expect("stats JSON")
}

#[test]
fn lb_decap_delivers_ipip_and_gue_to_the_vip_and_detach_leaves_nothing() {
    // Root and `ip`; lbd is not needed, and a missing lb-decap binary is named below.
    lb_tests::needs::packet();
    ensure_bpffs().unwrap();
    let prefix = netns::unique_prefix();
    let lb = NetNs::create(&format!("{prefix}dl"));
    let be = NetNs::create(&format!("{prefix}db"));
    netns::run(
        "ip",
        &[
            "link",
            "add",
            &format!("{prefix}l0"),
            "netns",
            lb.name(),
            "type",
            "veth",
            "peer",
            "name",
            &format!("{prefix}b0"),
            "netns",
            be.name(),
        ],
    );
    lb.ip(&["link", "set", &format!("{prefix}l0"), "name", "l0"]);
    be.ip(&["link", "set", &format!("{prefix}b0"), "name", "b0"]);
    lb.ip(&["addr", "add", "10.1.0.5/24", "dev", "l0"]);
    lb.ip(&["addr", "add", "10.10.0.2/32", "dev", "lo"]);
    lb.ip(&["link", "set", "l0", "up"]);
    lb.ip(&["route", "add", "10.0.0.100/32", "via", "10.1.0.11"]);
    be.ip(&["addr", "add", "10.1.0.11/24", "dev", "b0"]);
    be.ip(&["link", "set", "b0", "up"]);
    be.ip(&["route", "add", "default", "via", "10.1.0.5"]);
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/{prefix}-decap"));
    let state_dir = std::env::temp_dir().join(format!("{prefix}-decap"));
    let _pins = Pins(pin_dir.clone(), state_dir.clone());
    let pin_arg = pin_dir.display().to_string();
    let state_arg = state_dir.join("state.json").display().to_string();
    let settings = ["--pin-dir", &pin_arg, "--state-file", &state_arg];
    let sysctls = [
        "net.ipv4.conf.all.arp_ignore",
        "net.ipv4.conf.all.arp_announce",
    ];
    let before: Vec<String> = sysctls
        .iter()
        .map(|s| netns::ns_sysctl_get(be.name(), s))
        .collect();
    assert_eq!(before, ["0", "0"]);
    let route_before = be.ip(&["route", "show", "default"]);
    let lo_before = be.ip(&["-4", "addr", "show", "dev", "lo"]);

    // A step that fails (the second NIC does not exist, after the VIP, sysctls, route and
    // the first NIC were done) leaves an error naming it, and nothing changed.
    let mut failing = settings.to_vec();
    failing.extend([
        "-i",
        "b0",
        "-i",
        "nosuch0",
        "--vip",
        "10.0.0.100",
        "--lb-prefix",
        "10.1.0.5/32",
    ]);
    let err = lb_decap(be.name(), &failing).unwrap_err();
    assert!(err.contains("nosuch0") && err.contains("undone"), "{err}");
    assert_eq!(be.ip(&["-4", "addr", "show", "dev", "lo"]), lo_before);
    let unchanged: Vec<String> = sysctls
        .iter()
        .map(|s| netns::ns_sysctl_get(be.name(), s))
        .collect();
    assert_eq!(unchanged, before);
    assert_eq!(be.ip(&["route", "show", "default"]), route_before);
    assert!(!pin_dir.exists(), "a failed attach left its pins");
    assert!(
        !Path::new(&state_arg).exists(),
        "a failed attach left its state file"
    );

    let mut args = settings.to_vec();
    args.extend([
        "-i",
        "b0",
        "--vip",
        "10.0.0.100",
        "--lb-prefix",
        "10.1.0.5/32",
    ]);
    lb_decap(be.name(), &args).unwrap();
    assert!(be
        .ip(&["-4", "addr", "show", "dev", "lo"])
        .contains("10.0.0.100/32"));
    let after: Vec<String> = sysctls
        .iter()
        .map(|s| netns::ns_sysctl_get(be.name(), s))
        .collect();
    assert_eq!(after, ["1", "2"]);
    assert!(be.ip(&["route", "show", "default"]).contains("advmss 1432"));
    // Attaching twice is refused, and changes nothing.
    let again = lb_decap(be.name(), &args).unwrap_err();
    assert!(again.contains("attached already"), "{again}");

    let server = netns::run_in(be.name(), || UdpSocket::bind((VIP, VIP_PORT)).unwrap());
    server.set_read_timeout(Some(WAIT)).unwrap();
    let client = netns::run_in(lb.name(), || {
        UdpSocket::bind((CLIENT, CLIENT_PORT)).unwrap()
    });
    client.set_read_timeout(Some(WAIT)).unwrap();
    let gue = Encap::Gue {
        port: 6080,
        sport: 40001,
    };
    for (encap, payload) in [(Encap::Ipip, &b"through ipip"[..]), (gue, b"through gue")] {
        send(lb.name(), encap, LB, payload);
        let (got, from) =
            recv(&server).unwrap_or_else(|| panic!("{encap:?}: nothing reached the VIP socket"));
        assert_eq!(
            (got.as_slice(), from),
            (payload, SocketAddr::from((CLIENT, CLIENT_PORT)))
        );
        server.send_to(b"reply", from).unwrap();
        let (reply, replier) = recv(&client).expect("the reply reached the client");
        assert_eq!(
            (reply.as_slice(), replier),
            (&b"reply"[..], SocketAddr::from((VIP, VIP_PORT)))
        );
    }
    // From inside the LB's subnet but outside its prefix: dropped, counted.
    send(
        lb.name(),
        Encap::Ipip,
        Ipv4Addr::new(10, 1, 0, 77),
        b"spoofed",
    );
    assert_eq!(
        recv(&server),
        None,
        "a packet from outside the LB prefix was delivered"
    );
    let counters = stats(be.name(), &settings);
    assert_eq!(counters["decap_ipip"], 1, "{counters}");
    assert_eq!(counters["decap_gue"], 1, "{counters}");
    assert_eq!(counters["drop_outside_prefix"], 1, "{counters}");

    assert!(pin_dir.join("link_b0").exists(), "no pinned link");

    let mut detach = settings.to_vec();
    detach.push("--detach");
    lb_decap(be.name(), &detach).unwrap();
    assert!(!be
        .ip(&["-4", "addr", "show", "dev", "lo"])
        .contains("10.0.0.100"));
    let restored: Vec<String> = sysctls
        .iter()
        .map(|s| netns::ns_sysctl_get(be.name(), s))
        .collect();
    assert_eq!(restored, before);
    assert_eq!(be.ip(&["route", "show", "default"]), route_before);
    // The program is gone from b0: the kernel (no ipip module) drops what it no longer
    // decapsulates. The VIP is back on lo for this check, so only the decap is missing.
    be.ip(&["addr", "add", "10.0.0.100/32", "dev", "lo"]);
    send(lb.name(), Encap::Ipip, LB, b"after detach");
    assert_eq!(
        recv(&server),
        None,
        "a packet was decapsulated after --detach"
    );
    be.ip(&["addr", "del", "10.0.0.100/32", "dev", "lo"]);
    assert!(!Path::new(&pin_dir).exists(), "the pin directory is left");
    assert!(!Path::new(&state_arg).exists(), "the state file is left");
    // Detaching again finds nothing to do.
    assert!(lb_decap(be.name(), &detach)
        .unwrap()
        .contains("nothing to detach"));
}
