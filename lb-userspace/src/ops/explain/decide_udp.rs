//! Which backend the data path gives the next datagram of a UDP tuple, decided as
//! `lb-ebpf`'s `udp_to_backend.rs` decides it: its flow entry while that names a backend
//! slot of the entry's service, else the Maglev ring (which records the flow). UDP has no
//! handshake, so a new and an existing flow's datagram go the same way.
use lb_common::{flow::FlowKey, net::is_martian};

use super::decide::{
    by_ring, entry_of, ring_pick, unless_martian, By, Choice, Decision, Params, PolicyPick,
};
use crate::dataplane::Lookups;

/// The decision for the UDP tuple `flow` (client -> VIP), or `None` when no UDP service
/// owns its destination.
pub fn decide(
    lookups: &impl Lookups,
    params: &Params,
    flow: &FlowKey,
) -> anyhow::Result<Option<Decision>> {
    let Some(service) = lookups.service(&flow.service_key())? else {
        return Ok(None);
    };
    let entry = entry_of(lookups, flow)?;
    let ring = ring_pick(lookups, params, &service, flow)?;
    let followed = entry
        .as_ref()
        .filter(|e| e.backend.is_some_and(|b| b.service == e.target.service));
    let choice = match followed {
        Some(e) => Choice {
            backend_id: Some(e.target.backend),
            by: By::FlowEntry,
            why: "the tuple's flow entry: every datagram follows it until it is idle for \
                  flow_timeouts.udp"
                .into(),
        },
        None => {
            let why = if entry.is_some() {
                "the entry's backend slot was freed"
            } else {
                "no flow entry"
            };
            by_ring(
                &ring,
                By::Table,
                &format!("{why}: placed by the table, which records the flow"),
            )
        }
    };
    let martian = is_martian(flow.src_addr) || flow.src_addr == flow.dst_addr;
    let choice = unless_martian(martian, choice);
    Ok(Some(Decision {
        service,
        entry,
        slot: None,
        forwarded: None,
        ring,
        policy_pick: PolicyPick::Ring,
        new_connection: choice.clone(),
        existing_connection: choice,
    }))
}
