//! `cargo xtask bench` (the `lb-bench` binary): measurements, never assertions. Each part
//! prints its tables and returns the same figures as JSON, which the binary writes to
//! `<target dir>/bench/latest.json`.
//!
//! - [`packet`]: per-packet cost of each data-path case (BPF_PROG_TEST_RUN) beside an
//!   empty XDP program;
//! - [`tc_hook`]: the main NAT paths at either hook, `lb_xdp` and `lb_tc`, each beside its
//!   hook's empty program;
//! - [`dsr`]: per-packet cost of direct server return (`dsr_l2`, `ipip`, `gue`) beside
//!   NAT: an established packet and a new connection's SYN and first ACK;
//! - [`dsr6`]: the same modes for an IPv6 service beside NAT66, an established packet
//!   (run with `dsr`).
//! - [`udp`]: per-packet cost of UDP services (a datagram of a new and of an existing
//!   flow, a reply) beside TCP's established packets;
//! - [`ipv6`]: per-packet cost of IPv6 (an established segment, a new connection, a UDP
//!   datagram of an existing flow) beside the same over IPv4;
//! - [`edge`]: per-packet cost of edge protection (deny, rate limit, established flows
//!   of a protected service), and [`edge6`]: the same over IPv6;
//! - [`syn_proxy`]: per-packet cost of the SYN proxy (a SYN answered with a cookie, a
//!   proxied flow's established packet beside an unproxied one's);
//! - [`flow_fill`]: how that cost grows with flow-table fill and backend count, beside
//!   [`memory`]'s random-read latency, the floor under it;
//! - [`control`]: Maglev build time and change-to-live through the real maps, and
//!   [`api_change`]: the cost of one admin-API change at 10 to 10,000 backends, in one
//!   service or spread over 100;
//! - [`probes`]: health probes per second and their CPU, the prober alone, and
//!   [`probes_lbd`]: end to end through `lbd` (results applied per second, lag, CPU);
//! - [`e2e`]: connection rate, keep-alive request rate and bulk throughput in the
//!   namespace lab, beside the ceiling, HAProxy and nftables, with CPU per connection;
//! - [`targets`]: the targets, each stated as met or not with its figure.
//!
//! Figures on a small shared machine move from run to run; ratios measured side by side
//! in one run are what to compare.
pub mod api_change;
pub mod control;
pub mod dsr;
pub mod dsr6;
pub mod e2e;
pub mod edge;
pub mod edge6;
pub mod flow_fill;
pub mod ipv6;
pub mod machine;
pub mod memory;
pub mod packet;
pub mod probes;
pub mod probes_lbd;
pub mod stats;
pub mod syn_proxy;
pub mod table;
pub mod targets;
pub mod tc_hook;
pub mod udp;
