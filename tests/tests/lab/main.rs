//! Lab tests, one binary: throw-away network-namespace labs (client, LB, switch,
//! backends; see [`lb_tests::Lab`]) with real TCP, most of them through a real `lbd`
//! started from the built binary. Needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_BPF),
//! bpffs at /sys/fs/bpf, `ip`, `nsenter` and `ethtool`, and `lbd`/`lbctl` built (`cargo
//! xtask build`); [`lb_tests::needs::lab`], called by `Lab::build`, fails every test
//! with one message when any is missing. `lbctl_timeout` needs only `lbctl`.
//!
//! One module per subject; run one with `cargo test -p lb-tests --test lab -- failover::`.

mod announce;
mod announce_lifetime;
mod bird_announce;
mod bootstrap_lab;
mod daemon_lifecycle;
mod decap_lab;
mod drain;
mod dsr6_lab;
mod dsr6_probe_lab;
mod dsr_l2_lab;
mod dsr_l3_lab;
mod dsr_probe_lab;
mod e2e;
mod e2e_hitless;
mod e2e_policies;
mod edge_lab;
mod events_lab;
mod explain_lab;
mod failover;
mod frr_announce;
mod health6_lab;
mod health_scale;
mod lbctl_timeout;
mod least_privilege;
mod lifecycle;
mod metrics;
mod node_drain;
mod operator;
mod package;
mod persistence;
mod probe_tunnel_lab;
mod prometheus;
mod reply_path_pinned;
mod slowloris;
mod syn_proxy_lab;
mod table_full;
mod tc_hook;
mod tier_node_hang;
mod tier_node_loss;
mod tier_node_restart;
mod tier_split_health;
mod tier_table_change;
mod tier_upgrade;
mod tokens;
mod topology;
mod trace_lab;
mod udp_dsr_lab;
mod udp_lab;
mod zones;
