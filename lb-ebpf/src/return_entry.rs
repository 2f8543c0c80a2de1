//! The reply direction's flow entry (backend -> client): what the source of a reply is
//! rewritten back to, and where its cached route to the client lives.
use core::ptr::addr_of_mut;

use lb_common::flow::{FlowKey, FlowTarget};

use crate::flow_table;

/// Records a fresh return entry under `key` (backend -> client): replies of `target`'s
/// flow get `vip`:`vport` back as their source. In the LRU map, if full, it evicts its
/// coldest entry; an error would only mean the reply is not rewritten,
/// which the client answers with a reset.
#[inline(always)]
pub fn insert(key: FlowKey, vip: u32, vport: u16, target: &FlowTarget) {
    let (service, backend) = (target.service, target.backend);
    let _ = flow_table::record_return(&key, |nat| unsafe {
        *addr_of_mut!((*nat).vip) = vip;
        *addr_of_mut!((*nat).vport) = vport;
        *addr_of_mut!((*nat).service) = service;
        *addr_of_mut!((*nat).backend) = backend;
    });
}
