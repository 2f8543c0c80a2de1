//! `lbctl explain`: which backend a new and an existing connection of a tuple would
//! take now, and why (the flow entry, the SYN-cache slot, the table, the policy), read
//! from the live maps and decided as the data path decides ([`decide`]).
pub mod decide;
pub mod describe;
pub mod view;

#[cfg(test)]
mod tests;

pub use describe::{explain, ExplainError};
pub use view::ExplainView;
