//! What lbd is asked to do and how it is computed, as pure functions: the config, the
//! desired state and its changes, the plan of dense ids, Maglev rings and policy
//! tables, effective weights, flow ageing, active-flow reconciliation and the table digest.
pub mod ageing;
pub mod announce;
pub mod bird_reply;
pub mod config;
pub mod desired;
pub mod edge;
pub mod events;
pub mod family;
pub mod maglev;
pub mod plan;
pub mod policy_table;
pub mod reconcile;
pub mod reverse_map;
pub mod scaling;
pub mod syn_proxy_auto;
pub mod table_digest;
pub mod weights;
