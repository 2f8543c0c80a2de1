//! The controller (`lbd`) and CLI (`lbctl`) of the XDP load balancer.
//!
//! Layers, one way: a layer imports only from the layers to its left (checked by
//! `tests/layers.rs` over every `use`; no cycles between sibling modules either).
//!
//! `model` <- `dataplane` (the seam) <- `control` <- `ops` <- `daemon`, `preflight`;
//! `kernel` implements the seam over `model`; `cli` uses only `model::config`,
//! `model::desired::edit` and the views of `ops`.
//!
//! - [`model`]: pure: the config, the desired state and its changes (with the state
//!   file), the plan (dense ids, Maglev rings, policy tables), effective weights, flow
//!   ageing, active-flow reconciliation, the reverse map of stateless return, table
//!   digests, and when a VIP is announced.
//! - [`dataplane`]: the seam: [`dataplane::Dataplane`], everything lbd does to the data
//!   path (table writes, counters, flow maintenance, lookups); the in-memory fake only
//!   for tests and the `fake` feature.
//! - [`control`]: generic over the data plane: [`control::tables`] (diffs a plan
//!   against the kernel, writes the idle ring slot and flips), [`control::fleet`]
//!   (each backend's health, draining, slow start), [`control::health`] (state machine,
//!   probes), [`control::runtime`] (every event recomputes weights and swaps tables),
//!   [`control::announce`] (VIP /32s on `lo` added and removed as the decision says).
//! - [`ops`]: what operators see: [`ops::shared`] (the runtime behind one lock; every
//!   change validated, persisted, applied), [`ops::api`] and [`ops::views`],
//!   [`ops::explain`], [`ops::stats`] and [`ops::surge`], [`ops::metrics`],
//!   [`ops::listeners`], [`ops::serve`], [`ops::trace`] (the trace's route),
//!   [`ops::fd_budget`].
//! - [`kernel`]: the XDP object loaded ([`kernel`]'s `load`), attached (`attach`,
//!   `links`), its maps (`maps`), flows (`flows`), pins and the pin lock, the mmap'ed
//!   arrays, the service index, the reverse map, privileges, NIC events, the trace
//!   ring's reader, the VIP addresses on `lo` (`vip_addresses`, rtnetlink).
//! - [`daemon`]: `lbd`'s wiring and loop (probes, timers, SIGHUP, shutdown; its VIP
//!   announcement step in `daemon_announce.rs`, its probes through DSR tunnels in
//!   `daemon_probes.rs`, its tests in `daemon_tests.rs`);
//!   [`preflight`]: the config against this host before anything touches the kernel.
//! - [`decap`]: `lb-decap`, the backends' decapsulation for direct server return.
//! - [`cli`]: the commands of `lbctl`; [`lbd_args`]: `lbd`'s command line; [`man`]: the
//!   manual pages of `lbd` and `lbctl`, from their clap definitions.
pub mod cli;
pub mod control;
pub mod daemon;
pub mod dataplane;
pub mod decap;
pub mod kernel;
pub mod lbd_args;
pub mod man;
pub mod model;
pub mod ops;
pub mod preflight;
