//! The sampled packet trace of `lb_v6`'s packets: the records IPv4's stages write (see
//! `trace.rs`), for an IPv6 packet as it arrived.
use lb_common::{
    counters::Reason,
    flow::FlowTarget,
    net::{PROTO_TCP, TCP_ACK, TCP_SYN},
    trace::{
        TRACE_DECISION_FLOW_HIT, TRACE_DECISION_NEW_FLOW, TRACE_DECISION_REFUSED,
        TRACE_DECISION_STATELESS_FORWARD, TRACE_DECISION_STATELESS_SYN, TRACE_DECISION_SYN_CACHE,
        TRACE_DIR_TO_BACKEND, TRACE_DIR_TO_CLIENT, TRACE_NO_BACKEND,
    },
};

use crate::{parse6::Packet6, trace};

/// A client packet sent to `target`'s backend with `action`: `new_flow` if it opened the
/// flow (a SYN placed by the policy, or the ACK of a handshake through the SYN cache); a
/// target of no entry (`FlowTarget::unrecorded`) was placed by the table, a SYN leaving a
/// SYN-cache slot or any other packet recording nothing.
#[inline(always)]
pub fn to_backend(pkt: &Packet6, target: &FlowTarget, new_flow: bool, action: u32) -> u32 {
    if trace::sampled(target.service) {
        let syn = pkt.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN && pkt.flow.proto == PROTO_TCP;
        let unrecorded = target.state == 0 && target.last_seen == 0;
        let decision = match (new_flow, syn, unrecorded) {
            (true, true, _) => TRACE_DECISION_NEW_FLOW,
            (true, false, _) if pkt.flow.proto == PROTO_TCP => TRACE_DECISION_SYN_CACHE,
            (true, false, _) => TRACE_DECISION_NEW_FLOW,
            (false, true, true) => TRACE_DECISION_STATELESS_SYN,
            (false, false, true) => TRACE_DECISION_STATELESS_FORWARD,
            (false, _, false) => TRACE_DECISION_FLOW_HIT,
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
