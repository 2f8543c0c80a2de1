//! The controller (`lbd`) and CLI (`lbctl`) of the XDP load balancer.
//!
//! Layout, one concern per module:
//! - [`config`]: the desired state as the operator writes it, parsed and validated as a
//!   whole.
//! - [`maglev`]: the weighted Maglev table builder (pure).
//! - [`policy_table`]: round-robin schedules and least-connections candidates (pure).
//! - [`plan`]: desired state -> dense ids, backend slots, rings and policy tables (pure).
//! - [`dataplane`]: the one narrow interface through which the controller writes the
//!   kernel, with the aya implementation and an in-memory fake for tests.
//! - [`loader`]: loads the embedded XDP object, sizes its maps, attaches it to NICs,
//!   and reads its counters.
//! - [`reconcile`]: corrects active-flow counts for flows the kernel cannot see end.
//! - [`controller`]: puts it together for `lbd`.
//! - [`desired`]: the desired state (config file + state file) and the API's changes to it,
//!   as pure functions.
pub mod api;
pub mod cli;
pub mod config;
pub mod controller;
pub mod daemon;
pub mod dataplane;
pub mod desired;
pub mod ebpf_object;
pub mod loader;
pub mod maglev;
pub mod metrics;
pub mod plan;
pub mod policy_table;
pub mod reconcile;
pub mod runtime;
pub mod serve;
pub mod stats;
