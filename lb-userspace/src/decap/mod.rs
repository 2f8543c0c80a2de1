//! `lb-decap`, for backends of direct-server-return services: the decapsulation program
//! (`lb-ebpf/src/decap.rs`) attached to the backend's NICs, the VIPs on `lo`, the ARP
//! sysctls and the MSS clamp on the routes to the clients, all removed again by
//! `lb-decap --detach`. Separate from lbd: it imports only `kernel`'s netlink helpers.
//!
//! - [`settings`]: the YAML file and its flags (pure);
//! - [`program`]: the object, its links and counters;
//! - [`host`]: addresses, sysctls, routes over rtnetlink;
//! - [`state`]: the record of what was changed;
//! - [`apply`]: attach (with rollback) and detach;
//! - [`stats`]: `lb-decap stats`.
pub mod apply;
pub mod host;
pub mod program;
pub mod settings;
pub mod state;
pub mod stats;
