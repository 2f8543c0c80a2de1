//! Test support for the load balancer: throw-away network-namespace labs,
//! tiny TCP/HTTP backends, a client that talks through the LB, and daemon
//! process management.
//!
//! Everything here only creates traffic between network namespaces that it
//! created itself, every wait is bounded in time, and every resource
//! (namespace, thread, process) is released on `Drop`, also when a test panics.
//!
//! * [`netns`]: create/delete namespaces, run closures inside one, run `ip`,
//!   `ethtool`, sysctls.
//! * [`topology`]: [`Lab`] — client, LB, switch (bridge) and backend namespaces.
//! * [`backend_server`]: [`BackendServer`] — a tiny HTTP/1.0 server that says
//!   who it is and who it saw.
//! * [`client`]: [`http_get_via`], [`burst`], [`hold_via`].
//! * [`lbctl`]: runs the `lbctl` binary against a lab's lbd.
//! * [`http`]: a strict little HTTP/1.1 client for the admin API and /metrics.
//! * [`client_loop`]: [`ClientLoop`] — connections one after another on a
//!   background thread, each recorded with its start time and outcome.
//! * [`lbd_log`]: lbd's log lines on the wall clock, to time failovers.
//! * [`lbd_metrics`]: lbd's `/metrics`, `/healthz` and `/readyz` from inside a lab.
//! * [`many_backends`]: thousands of backend addresses in one namespace and one
//!   responder for their probes (health checking at scale).
//! * [`needs`]: what the packet and lab test binaries need from the machine, checked
//!   once per binary so that a run without root fails with one message.
//! * [`packet_rig`], [`packet_exchange`], [`frame`]: the real XDP program under
//!   BPF_PROG_TEST_RUN in a namespace, the exchanges packet tests make through it (a
//!   counted run, SYN then ACK, a backend's answer, a handshake), crafted frames
//!   ([`udp_frame`] for UDP).
//! * [`scenario`]: fast health settings and the bounds the fault tests assert.
//! * [`tier`]: [`tier::RunningTier`] — clients, router R1, several LB nodes (each
//!   `lbd` + BIRD) by ECMP, router R2, backends; and the load of the tier tests.
//! * [`rehash_tc`]: the routers' tc program that makes ECMP hash the 5-tuple.
//! * [`bench`]: the parts of `cargo xtask bench` (per packet, flow-table fill,
//!   control plane, end to end), run by the `lb-bench` binary.
//! * [`udp_echo`]: [`udp_echo::UdpEcho`] — a UDP backend that answers with its name;
//!   clients of one socket each that record who answered.
//! * [`process`]: [`Daemon`] — a process started inside a namespace with
//!   `nsenter` (keeps the host bpffs visible), killed on drop.

pub mod backend_server;
pub mod bench;
pub mod caps;
pub mod client;
pub mod client_loop;
pub mod decap_frames;
pub mod dsr_frames;
pub mod dsr_frames6;
pub mod dsr_lab;
pub mod frame;
pub mod frame6;
pub mod fuzz_oracle;
pub mod http;
pub mod icmp6_frame;
pub mod icmp_frame;
pub mod jited;
pub mod lbctl;
pub mod lbd_log;
pub mod lbd_metrics;
pub mod many_backends;
pub mod needs;
pub mod netns;
pub mod packet_exchange;
pub mod packet_rig;
pub mod peer_xdp;
pub mod process;
pub mod proxy_frame;
pub mod rehash_tc;
pub mod running_lb;
pub mod scenario;
pub mod syn_flood;
pub mod tier;
pub mod topology;
pub mod udp_echo;
pub mod udp_frame;

pub use backend_server::BackendServer;
pub use client::{
    burst, hold_via, http_get_via, BurstResult, FailureKind, GetError, HeldConn, Reply,
};
pub use client_loop::{Attempt, ClientLoop};
pub use lbctl::{lbctl_path, Lbctl, LbctlOutput};
pub use netns::{ip, ns_ip, ns_sysctl, run_in, spawn_in, NetNs};
pub use process::{lbd_path, output_within, Daemon};
pub use running_lb::{
    lab_config, lab_config_with_policy, lab_run_dir, vip, LabConfig, RunningLb, BACKEND_PORT, VIP,
    VIP6, VIP_PORT,
};
pub use topology::{BackendSpec, Family, Lab, LabSpec};
