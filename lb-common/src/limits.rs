//! Map names and default capacities. The loader resizes maps from config before load, so
//! these are the defaults the config falls back to, not hard limits.

pub const MAP_SERVICES: &str = "SERVICES";
pub const MAP_BACKENDS: &str = "BACKENDS";
pub const MAP_RING: &str = "RING";
pub const MAP_FLOWS: &str = "FLOWS";
pub const MAP_RETURN_FLOWS: &str = "RETURN_FLOWS";
pub const MAP_SERVICE_STATS: &str = "SERVICE_STATS";
pub const MAP_BACKEND_STATS: &str = "BACKEND_STATS";
pub const MAP_REASONS: &str = "REASONS";
pub const MAP_BACKEND_SIGNALS: &str = "BACKEND_SIGNALS";
pub const MAP_EGRESS: &str = "EGRESS";
pub const MAP_POLICY_TABLE: &str = "POLICY_TABLE";
pub const MAP_RR_CURSOR: &str = "RR_CURSOR";
pub const MAP_ACTIVE_FLOWS: &str = "ACTIVE_FLOWS";
pub const MAP_ACTIVE_ADJUST: &str = "ACTIVE_ADJUST";
pub const MAP_NEXTHOPS: &str = "NEXTHOPS";
pub const MAP_NEXTHOP_GEN: &str = "NEXTHOP_GEN";
pub const MAP_ADDR_FILTER: &str = "ADDR_FILTER";
/// One-entry array: the controller's clock in whole seconds (CLOCK_BOOTTIME), written
/// every second, stamped on flows by the data path.
pub const MAP_CLOCK: &str = "CLOCK";

/// One-entry array holding [`LAYOUT_VERSION`] of the maps pinned beside it.
pub const MAP_LAYOUT: &str = "LB_LAYOUT";

/// Version of the meaning of the shared map layouts. Bump it whenever a key, value or
/// flag changes meaning, even if sizes stay equal: a new `lbd` refuses to adopt pinned
/// maps of another version instead of misreading them.
pub const LAYOUT_VERSION: u32 = 4;

/// Read-only globals set by the loader (`EbpfLoader::set_global`).
pub const GLOBAL_HASH_SEED: &str = "LB_HASH_SEED";
pub const GLOBAL_RING_SIZE: &str = "LB_RING_SIZE";

/// Name of the load balancer's XDP program in the object.
pub const PROGRAM_XDP: &str = "lb_xdp";
/// Name of the pass-everything XDP program (benchmark floor, lab veth peers).
pub const PROGRAM_PASS: &str = "lb_pass";

pub const DEFAULT_MAX_SERVICES: u32 = 64;
pub const DEFAULT_MAX_BACKENDS: u32 = 4096;
pub const DEFAULT_FLOW_TABLE_SIZE: u32 = 262_144;
pub const DEFAULT_RING_SIZE: u32 = 65_537;
pub const MAX_INTERFACES: u32 = 64;
