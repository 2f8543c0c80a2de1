//! `lbctl explain`: which backend a new and an existing connection of a tuple (a UDP
//! tuple's next datagram, see `decide_udp`) would take now, and why (the flow entry, the SYN-cache slot, the table, the policy), read
//! from the live maps and decided as the data path decides ([`decide`]).
pub mod decide;
mod decide6;
mod decide_udp;
pub mod describe;
pub mod view;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod tests6;

#[cfg(test)]
mod tests_udp;

pub use describe::{explain, explain_protocol, ExplainError};
pub use view::ExplainView;
