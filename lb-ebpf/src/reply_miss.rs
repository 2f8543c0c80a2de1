//! Backend -> client, neither SYN nor RST, with no return entry: the reply to a client
//! packet that the table forwarded without a flow entry (a connection whose entries were
//! evicted, or that ECMP moved here from a node that saw its handshake), or someone
//! else's traffic (`lbd`'s probes, a client reaching a backend directly). Such a client
//! packet left a slot in the SYN cache naming its client, VIP and backend (see
//! `ingress::stateless_forward`); a reply that finds it proves the connection real, as a
//! backend answers a segment of a connection it does not have only with a reset, and the
//! flow is recorded then, in both directions. Without the slot the reply is not ours.
use aya_ebpf::{bindings::BPF_NOEXIST, programs::XdpContext};
use lb_common::{
    counters::Reason,
    flow::{FlowKey, FlowTarget, FLOW_F_COUNTED, FLOW_F_ESTABLISHED},
    trace::{TRACE_DECISION_REPLY_RECOVERED, TRACE_DIR_TO_CLIENT},
};

use crate::{
    count,
    flow_state::{self, Side},
    forward,
    maps::{self, FLOWS},
    packet::Packet,
    return_entry, rewrite, syn_cache, trace,
};

/// Translates and records the reply if a forwarded packet's slot names it; `None`
/// otherwise (not ours: passed untouched by the caller).
#[inline(always)]
pub fn handle(ctx: &XdpContext, pkt: &Packet) -> Option<u32> {
    let set = syn_cache::set(pkt.flow.dst_addr, pkt.flow.dst_port)?;
    let answered = set.answered_by(&pkt.flow, true)?;
    if !forward::ttl_allows(pkt) {
        return Some(count::pass(Reason::PassTtlExpired));
    }
    let flow = FlowKey {
        src_addr: pkt.flow.dst_addr,
        dst_addr: answered.vip_addr,
        src_port: pkt.flow.dst_port,
        dst_port: answered.vip_port,
        proto: pkt.flow.proto,
        family: pkt.flow.family,
        _pad: [0; 2],
    };
    let target = FlowTarget {
        backend: answered.backend,
        service: answered.service,
        state: FLOW_F_COUNTED | FLOW_F_ESTABLISHED,
        last_seen: maps::now_secs(),
        _pad: 0,
    };
    // An entry already there (only the reply direction was lost) stays as it is.
    if FLOWS.insert(flow, target, BPF_NOEXIST as u64).is_ok() {
        flow_state::opened(target.backend);
        count::flow_from_reply(target.service, target.backend);
    }
    if let Some(entry) = FLOWS.get_ptr_mut(flow) {
        flow_state::observe(entry, pkt.tcp_flags, Side::Backend);
    }
    return_entry::insert(pkt.flow, answered.vip_addr, answered.vip_port, &target);
    rewrite::snat(pkt, answered.vip_addr, answered.vip_port);
    count::to_client(target.service, target.backend, pkt.frame_len);
    count::answer_from_backend(target.backend, pkt.tcp_flags);
    let action = forward::forward(ctx, pkt, core::ptr::null_mut());
    if trace::sampled(target.service) {
        let how = TRACE_DECISION_REPLY_RECOVERED;
        let reason = trace::forwarded_reason(action);
        let (service, backend) = (target.service, target.backend);
        trace::emit(
            pkt,
            service,
            backend,
            TRACE_DIR_TO_CLIENT,
            how,
            action,
            reason,
        );
    }
    Some(action)
}
