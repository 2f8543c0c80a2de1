//! The sampled packet trace of `lb_v6`'s packets: the records IPv4's stages write (see
//! `trace.rs`), for an IPv6 packet as it arrived.
use lb_common::{
    counters::Reason,
    flow::FlowTarget,
    trace::{
        TRACE_DECISION_FLOW_HIT, TRACE_DECISION_NEW_FLOW, TRACE_DECISION_REFUSED,
        TRACE_DECISION_STATELESS_FORWARD, TRACE_DIR_TO_BACKEND, TRACE_DIR_TO_CLIENT,
        TRACE_NO_BACKEND,
    },
};

use crate::{parse6::Packet6, trace};

/// A client packet sent to `target`'s backend with `action`: `new_flow` if it opened the
/// flow; a target of no entry (`FlowTarget::unrecorded`) was forwarded by the table.
#[inline(always)]
pub fn to_backend(pkt: &Packet6, target: &FlowTarget, new_flow: bool, action: u32) -> u32 {
    if trace::sampled(target.service) {
        let decision = if new_flow {
            TRACE_DECISION_NEW_FLOW
        } else if target.state == 0 && target.last_seen == 0 {
            TRACE_DECISION_STATELESS_FORWARD
        } else {
            TRACE_DECISION_FLOW_HIT
        };
        let reason = trace::forwarded_reason(action);
        let packet = (&pkt.flow, pkt.tcp_flags);
        let (service, backend) = (target.service, target.backend);
        let dir = TRACE_DIR_TO_BACKEND;
        trace::emit_flow6(packet, service, backend, dir, decision, action, reason);
    }
    action
}

/// A backend's reply of `service`'s flow on `backend`, sent towards its client.
#[inline(always)]
pub fn to_client(pkt: &Packet6, service: u32, backend: u32, action: u32) -> u32 {
    if trace::sampled(service) {
        let reason = trace::forwarded_reason(action);
        let packet = (&pkt.flow, pkt.tcp_flags);
        let (dir, how) = (TRACE_DIR_TO_CLIENT, TRACE_DECISION_FLOW_HIT);
        trace::emit_flow6(packet, service, backend, dir, how, action, reason);
    }
    action
}

/// A client packet of `service` that reached no backend, with the `action` taken for
/// `why`.
#[inline(always)]
pub fn refused(pkt: &Packet6, service: u32, action: u32, why: Reason) -> u32 {
    if trace::sampled(service) {
        let packet = (&pkt.flow, pkt.tcp_flags);
        let (dir, how) = (TRACE_DIR_TO_BACKEND, TRACE_DECISION_REFUSED);
        trace::emit_flow6(
            packet,
            service,
            TRACE_NO_BACKEND,
            dir,
            how,
            action,
            why as u32,
        );
    }
    action
}
