//! Backend -> client, neither SYN nor RST, with no return entry: the reply to a client
//! packet that the table forwarded without a flow entry (a connection whose entries were
//! evicted, or that ECMP moved here from a node that saw its handshake), or someone
//! else's traffic (`lbd`'s probes, a client reaching a backend directly). Such a client
//! packet left a slot in the SYN cache naming its client, VIP and backend (see
//! `to_backend::stateless_forward`); a reply that finds it proves the connection real, as a
//! backend answers a segment of a connection it does not have only with a reset, and the
//! flow is recorded then, in both directions. Without the slot the reply is not ours.
//!
//! The slot proves only that someone sent the client's packet, and the reply's addresses
//! are the sender's to choose: a client can send an ACK to the VIP and then the "reply"
//! itself. So the reply must also have arrived on the NIC through which the kernel
//! routes to its backend (a reverse-path check, one FIB lookup, paid only on this path).
//! A gateway with one NIC for both sides cannot tell the two apart this way.
use core::mem::MaybeUninit;

use aya_ebpf::{
    bindings::{bpf_fib_lookup as FibParams, BPF_FIB_LKUP_RET_SUCCESS, BPF_FIB_LOOKUP_SKIP_NEIGH},
    helpers::generated::bpf_fib_lookup,
};
use lb_common::{
    counters::Reason,
    flow::{FlowTarget, FLOW_F_COUNTED, FLOW_F_ESTABLISHED},
    trace::{TRACE_DECISION_REPLY_RECOVERED, TRACE_DIR_TO_CLIENT},
};

use crate::{
    count,
    flow::{self, Side},
    flow_table, forward,
    frame::Frame,
    lookup,
    packet::Packet,
    return_entry, rewrite, syn_cache, trace,
};

/// Translates and records the reply if a forwarded packet's slot names it; `None`
/// otherwise (not ours: passed untouched by the caller).
#[inline(always)]
pub fn handle(ctx: &impl Frame, pkt: &Packet) -> Option<u32> {
    let set = syn_cache::set(pkt.flow.dst_addr, pkt.flow.dst_port)?;
    let answered = set.answered_by(&pkt.flow, true)?;
    if !arrived_from_backend_side(ctx, pkt) {
        return Some(count::pass(Reason::PassReplyWrongInterface));
    }
    if !forward::ttl_allows(pkt) {
        return Some(count::pass(Reason::PassTtlExpired));
    }
    let flow = pkt
        .flow
        .forward_of_reply(answered.vip_addr, answered.vip_port);
    let target = FlowTarget {
        backend: answered.backend,
        service: answered.service,
        state: FLOW_F_COUNTED | FLOW_F_ESTABLISHED,
        last_seen: lookup::now_secs(),
        _pad: 0,
    };
    // An entry already there (only the reply direction was lost) stays as it is.
    if flow_table::record(&flow, &target, true).is_ok() {
        flow::opened(target.backend);
        count::flow_from_reply(target.service, target.backend);
    }
    if let Some(entry) = flow_table::find(&flow) {
        flow::observe(entry, pkt.tcp_flags, Side::Backend);
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

/// Whether the reply arrived on the NIC the kernel routes its source (the backend)
/// through. The lookup is the one the client's packet to that backend takes (ingress
/// NIC, client as source, so policy rules by source or input NIC apply as they do to
/// it), without the neighbour: a backend's entry may be stale while its route is not.
/// No route to the backend fails the check too.
#[inline(always)]
pub fn arrived_from_backend_side(ctx: &impl Frame, pkt: &Packet) -> bool {
    let ingress = ctx.ingress_ifindex();
    let mut params = MaybeUninit::<FibParams>::uninit();
    let fib = params.as_mut_ptr();
    let rc = unsafe {
        forward::zero_fill(fib);
        (*fib).family = forward::AF_INET;
        (*fib).l4_protocol = pkt.flow.proto;
        (*fib).ifindex = ingress;
        (*fib).__bindgen_anon_3.ipv4_src = pkt.flow.dst_addr;
        (*fib).__bindgen_anon_4.ipv4_dst = pkt.flow.src_addr;
        bpf_fib_lookup(
            ctx.as_ctx() as *mut _,
            fib,
            core::mem::size_of::<FibParams>() as i32,
            BPF_FIB_LOOKUP_SKIP_NEIGH,
        )
    };
    rc as u32 == BPF_FIB_LKUP_RET_SUCCESS && unsafe { (*fib).ifindex } == ingress
}
