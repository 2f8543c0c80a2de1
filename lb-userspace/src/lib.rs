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
//! - [`controller`]: diffs a plan against what the kernel holds, writes the idle ring
//!   slot and flips; purges flows before freeing a backend slot.
//! - [`health`]: the health state machine and passive ejection (pure), probes and the
//!   tokio tasks that run them.
//! - [`weights`]: effective weights from zone policy, draining, health and slow start
//!   (pure).
//! - [`fleet`]: the run-time state of every backend (health, draining, retiring, slow
//!   start), clock passed in.
//! - [`runtime`]: fleet + controller: every event recomputes weights and swaps tables.
//! - [`daemon`]: `lbd`'s loop: probes, timers, SIGHUP reload, shutdown.
//! - [`preflight`]: the config against this host, before anything touches the kernel;
//!   [`pin_lock`]: one lbd per pin directory; [`link_watch`]: NIC events, so that
//!   a re-created NIC gets the data path back.
//! - [`ageing`]: which idle flow entries have expired (pure).
//! - [`reconcile`]: corrects active-flow counts for flows the kernel cannot see end.
//! - [`desired`]: the desired state (config file + state file) and the API's changes to
//!   it, as pure functions.
//! - [`shared`]: the runtime behind one lock, shared by lbd's loop, the admin API and
//!   the metrics endpoint; every change is validated, persisted, then applied.
//! - [`listeners`]: HTTP on lbd's listeners within a connection cap and timeouts;
//!   [`fd_budget`]: the descriptor limit checked at start.
//! - [`api`], [`serve`]: the admin API's handlers and listeners; [`metrics`]: `/metrics`;
//!   [`stats`]: counters, rates and per-zone sums; [`cli`]: `lbctl`.
pub mod cli;
pub mod control;
pub mod daemon;
pub mod dataplane;
pub mod kernel;
pub mod model;
pub mod ops;
pub mod preflight;
