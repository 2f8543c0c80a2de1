//! What operators and monitoring see of a running lbd: the runtime behind one lock,
//! the admin API and its views, `explain`, counters and rates, `/metrics`, lbd's
//! listeners and the packet trace's route.
pub mod api;
pub mod bird;
pub mod edge;
pub mod events;
pub mod explain;
pub mod fd_budget;
pub mod listeners;
pub mod metrics;
pub mod node_view;
pub mod scaling;
pub mod serve;
pub mod shared;
pub mod stats;
pub mod surge;
pub mod trace;
pub mod views;
