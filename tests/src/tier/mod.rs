//! The tier lab: clients behind router R1, N LB nodes (each `lbd` + BIRD) reached by
//! ECMP, router R2 in front of one backend per zone, R2 routing replies back through
//! the nodes by ECMP too (see `topology` for the addresses, docs/tier.md for the
//! figures).
//!
//! * [`topology`]: [`TierLab`], the namespaces and links, a node's links down, a node
//!   hung (nftables on the routers).
//! * [`mode`]: [`TierMode`], the service's forwarding mode (NAT or a DSR mode) and the
//!   lab's shape for it.
//! * [`bird`]: the shipped BIRD configs with the lab's addresses; routers' next hops.
//! * [`running`]: [`RunningTier`], every daemon running, lbd restarts, digests.
//! * [`node_ops`]: an operator's verbs on one node: drain, undrain, an lbd upgrade.
//! * [`return_path`]: the check that replies went the mode's way (through the tier in
//!   NAT, around it in DSR).
//! * [`alert`]: the tier's digest alert run by promtool on the nodes' digests.
//! * [`load`]: [`TierLoad`], new connections at a steady rate plus long-lived echoes.
pub mod alert;
pub mod bird;
pub mod load;
pub mod mode;
pub mod node_ops;
pub mod return_path;
pub mod running;
pub mod topology;

pub use load::{Figures, TierLoad};
pub use mode::TierMode;
pub use running::RunningTier;
pub use topology::TierLab;
