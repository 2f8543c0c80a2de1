//! The reply direction's flow entry (backend -> client): what the source of a reply is
//! rewritten back to, and where its cached route to the client lives.
use lb_common::flow::{FlowKey, FlowTarget};

use crate::flow_table;

/// Makes replies under `key` (backend -> client) get `vip`:`vport` back as their source,
/// once `target`'s forward entry is recorded: its slot does that by itself; a connection
/// left to the LRU maps gets a fresh entry in `RETURN_FLOWS`, which, if full, evicts its
/// coldest entry. An error would only mean the reply is not rewritten, which the client
/// answers with a reset.
#[inline(always)]
pub fn insert(key: FlowKey, vip: u32, vport: u16, target: &FlowTarget) {
    let _ = flow_table::record_return(&key, vip, vport, target);
}
