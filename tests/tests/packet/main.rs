//! Packet tests, one binary: the real XDP object loaded into a throw-away namespace (the
//! [`lb_tests::packet_rig::Rig`]), its maps filled by the real controller, crafted frames
//! run through BPF_PROG_TEST_RUN. No `lbd` process. Needs root (CAP_SYS_ADMIN,
//! CAP_NET_ADMIN, CAP_BPF) and `ip`; [`lb_tests::needs::packet`], called by `Rig::build`,
//! fails every test with one message when they are missing.
//!
//! One module per subject; run one with `cargo test -p lb-tests --test packet -- stateless_syn::`.

mod ageing;
mod decap;
mod decap6;
mod dsr;
mod dsr6;
mod edge;
mod edge6;
mod explain;
mod flow_slots;
mod fuzz;
mod fuzz_icmp6;
mod fuzz_ipv6;
mod fuzz_udp;
mod icmp6_nat;
mod icmp_nat;
mod ipv6;
mod ipv6_policies;
mod ipv6_udp;
mod packet;
mod packet_health;
mod packet_reasons;
mod policies;
mod service_index;
mod spoofed_handshake;
mod stateless_miss;
mod stateless_return;
mod stateless_return6;
mod stateless_syn;
mod stateless_syn6;
mod syn_proxy;
mod tables6;
mod tc;
mod trace;
mod trace6;
mod udp;
mod udp_dsr;
mod udp_edge;
