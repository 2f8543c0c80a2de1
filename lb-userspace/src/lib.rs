//! The controller (`lbd`) and CLI (`lbctl`) of the XDP load balancer.
//!
//! Layout, one concern per module:
//! - [`config`]: the desired state as the operator writes it, parsed and validated as a
//!   whole.
//! - [`maglev`]: the weighted Maglev table builder (pure).
//! - [`plan`]: desired state -> dense ids, backend slots and rings (pure).
//! - [`dataplane`]: the one narrow interface through which the controller writes the
//!   kernel, with the aya implementation and an in-memory fake for tests.
//! - [`loader`]: loads the embedded XDP object, sizes its maps, attaches it to NICs,
//!   and reads its counters.
//! - [`controller`]: puts it together for `lbd`.
pub mod config;
pub mod controller;
pub mod daemon;
pub mod dataplane;
pub mod ebpf_object;
pub mod loader;
pub mod maglev;
pub mod plan;
