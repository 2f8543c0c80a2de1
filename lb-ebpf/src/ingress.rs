//! Client -> VIP: find or create the flow, rewrite towards its backend, forward, count.
use aya_ebpf::programs::XdpContext;
use lb_common::{
    backend::{Backend, BACKEND_F_PRESENT},
    counters::Reason,
    flow::{FlowKey, FlowTarget, NatReturn},
    net::{TCP_ACK, TCP_SYN},
    service::ServiceMeta,
};

use crate::{
    count, forward,
    maps::{BACKENDS, FLOWS, RETURN_FLOWS},
    packet::Packet,
    rewrite, select,
};

#[inline(always)]
pub fn handle(ctx: &XdpContext, pkt: &Packet, service: &ServiceMeta) -> u32 {
    if !pkt.tcp_valid {
        return count::drop(Reason::DropMalformedTcp);
    }
    if !forward::ttl_allows(pkt) {
        return count::pass(Reason::PassTtlExpired);
    }
    let Some((target, backend, new_flow)) = flow_target(pkt, service) else {
        return count::drop(Reason::DropNoBackend);
    };
    rewrite::dnat(pkt, backend.addr, backend.port);
    count::to_backend(&target, pkt.frame_len, new_flow);
    count::attempt_to_backend(target.backend, pkt.tcp_flags);
    forward::forward(ctx, pkt)
}

/// The backend of an existing flow, or a newly selected one (recorded in both flow maps).
#[inline(always)]
fn flow_target(pkt: &Packet, service: &ServiceMeta) -> Option<(FlowTarget, Backend, bool)> {
    // A SYN without ACK opens a connection even when its 5-tuple has an entry (a client
    // reusing a source port): the live ring places it, so a new connection never follows
    // a stale entry to a backend that left the ring (unhealthy, draining).
    let syn = pkt.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
    let existing = unsafe { FLOWS.get(pkt.flow) }.copied();
    if let Some(target) = existing {
        // A flow whose backend slot was freed falls through to a new selection.
        if !syn {
            if let Some(backend) = backend_by_id(target.backend) {
                return Some((target, backend, false));
            }
        }
    }
    // SYN or not, a miss is placed by Maglev: for a non-SYN that is what lets an
    // established connection survive an LB restart or an ECMP reshuffle.
    let id = select::maglev(service, &pkt.flow);
    if let Some(target) = existing {
        // A retransmitted SYN that the ring places where its entry says is not new.
        if target.backend == id {
            if let Some(backend) = backend_by_id(id) {
                return Some((target, backend, false));
            }
        }
    }
    let backend = backend_by_id(id)?;
    let target = FlowTarget {
        backend: id,
        service: service.id,
    };
    // If the tables are full the LRU evicts the coldest entries; an insert error here
    // would only mean the next packet takes the Maglev path again.
    let _ = FLOWS.insert(pkt.flow, target, 0);
    let reverse = FlowKey {
        src_addr: backend.addr,
        dst_addr: pkt.flow.src_addr,
        src_port: backend.port,
        dst_port: pkt.flow.src_port,
        proto: pkt.flow.proto,
        family: pkt.flow.family,
        _pad: [0; 2],
    };
    let nat = NatReturn {
        vip: pkt.flow.dst_addr,
        vport: pkt.flow.dst_port,
        _pad: 0,
        service: service.id,
        backend: id,
    };
    let _ = RETURN_FLOWS.insert(reverse, nat, 0);
    Some((target, backend, true))
}

#[inline(always)]
fn backend_by_id(id: u32) -> Option<Backend> {
    let backend = BACKENDS.get(id).copied()?;
    (backend.flags & BACKEND_F_PRESENT != 0).then_some(backend)
}
