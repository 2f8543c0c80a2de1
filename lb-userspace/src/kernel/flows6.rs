//! Expiry of idle IPv6 flows: `FLOWS6` and `RETURN_FLOWS6` aged by the same timeouts
//! and the same walk as IPv4's (see `flows.rs`), as part of
//! [`KernelDataplane::expire_flows`].
use lb_common::{ipv6::FlowKey6, limits::*};

use super::{
    flows::{current_if, remove_present},
    KernelDataplane,
};
use crate::{model::ageing, model::config::FlowTimeouts};

impl KernelDataplane {
    /// Deletes the IPv6 flows idle longer than their state's timeout at `now`, both
    /// directions. Returns how many.
    pub(super) fn expire_flows6(
        &mut self,
        now: u32,
        timeouts: &FlowTimeouts,
    ) -> anyhow::Result<usize> {
        // Keys are collected first: deleting while walking can restart the walk.
        let expired: Vec<FlowKey6> = self
            .flows6
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, target)| ageing::expired(target, now, timeouts))
            .map(|(key, _)| key)
            .collect();
        let mut removed = 0;
        for key in &expired {
            // Only an entry still expired now (a SYN may have replaced it since).
            let Some(target) = current_if(&self.flows6, key, MAP_FLOWS6, |t| {
                ageing::expired(t, now, timeouts)
            })?
            else {
                continue;
            };
            if !remove_present(&mut self.flows6, key, MAP_FLOWS6)? {
                continue;
            }
            removed += 1;
            let (Ok(backend), Ok(addr)) = (
                self.backends.get(&target.backend, 0),
                self.backend_addrs6.get(&target.backend, 0),
            ) else {
                continue;
            };
            let reverse = FlowKey6 {
                src_addr: addr,
                dst_addr: key.src_addr,
                src_port: backend.port,
                dst_port: key.src_port,
                ..*key
            };
            remove_present(&mut self.return_flows6, &reverse, MAP_RETURN_FLOWS6)?;
        }
        Ok(removed)
    }
}
