//! Layouts and pure functions shared by the XDP program (`lb-ebpf`) and the controller
//! (`lb-userspace`). Nothing here may differ between the two sides, so nothing is defined
//! twice: every map key and value, every flag bit, every counter slot and every function
//! whose result both sides must agree on (the flow hash, checksum updates) lives here.
//!
//! Conventions for every `#[repr(C)]` type below:
//! - addresses and ports are kept exactly as they appear on the wire (network byte
//!   order), loaded into a native integer without swapping; the doc comment of each
//!   field says so with "(wire order)";
//! - no implicit padding: padding is an explicit field, and each type has a size
//!   assertion;
//! - flags are integer bit sets, never `bool`.
#![cfg_attr(not(test), no_std)]

pub mod backend;
pub mod checksum;
pub mod counters;
pub mod decap;
pub mod edge;
pub mod encap;
pub mod encap6;
pub mod filter;
pub mod flow;
pub mod flow_slots;
pub mod hash;
pub mod ipv6;
pub mod limits;
pub mod net;
pub mod net6;
pub mod nexthop;
pub mod probe_tunnel;
pub mod reverse;
pub mod reverse6;
pub mod service;
pub mod service_index;
pub mod syn_cache;
pub mod syn_cache6;
pub mod syn_proxy;
pub mod trace;

#[cfg(feature = "user")]
mod pod;
