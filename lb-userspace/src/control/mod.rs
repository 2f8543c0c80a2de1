//! Keeping the data path's tables in line with the desired state and the backends'
//! health, generic over the [`crate::dataplane::Dataplane`] it writes.
pub mod announce;
pub mod fleet;
pub mod health;
pub mod runtime;
pub mod tables;
