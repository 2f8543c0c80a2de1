//! The sampled packet trace (see `lb_common::trace`). A packet to a service whose trace
//! is off costs one array read; a sampled one is written straight into the ring buffer's
//! reserved record, so no copy of it lives on the stack.
use aya_ebpf::bindings::xdp_action;
use aya_ebpf::helpers::{bpf_get_prandom_u32, bpf_ktime_get_ns};
use lb_common::{
    counters::Reason,
    flow::FlowKey,
    ipv6::FlowKey6,
    trace::{TraceRecord, TRACE_FAMILY_IPV4, TRACE_FAMILY_IPV6, TRACE_NO_REASON},
};

use crate::{
    maps::{TRACE_LOST, TRACE_RING, TRACE_SAMPLE},
    packet::Packet,
};

/// Whether this packet of service `service` is sampled: 1 in N of them, N read from the
/// service's slot (0 = off).
#[inline(always)]
pub fn sampled(service: u32) -> bool {
    let n = match TRACE_SAMPLE.get(service) {
        Some(n) => *n,
        None => return false,
    };
    n != 0 && (n == 1 || unsafe { bpf_get_prandom_u32() } % n == 0)
}

/// Writes one record for `pkt` if the ring has room; a full ring counts a lost record.
#[inline(always)]
pub fn emit(
    pkt: &Packet,
    service: u32,
    backend: u32,
    direction: u8,
    decision: u8,
    action: u32,
    reason: u32,
) {
    let packet = (&pkt.flow, pkt.tcp_flags);
    emit_flow(
        packet, service, backend, direction, decision, action, reason,
    );
}

/// [`emit`] for a packet of `flow` with TCP flag byte `tcp_flags` (0 for UDP).
#[inline(always)]
pub fn emit_flow(
    (flow, tcp_flags): (&FlowKey, u8),
    service: u32,
    backend: u32,
    direction: u8,
    decision: u8,
    action: u32,
    reason: u32,
) {
    let Some(mut entry) = TRACE_RING.reserve::<TraceRecord>(0) else {
        return lost();
    };
    let r = entry.as_mut_ptr();
    unsafe {
        (*r).src_addr = [flow.src_addr, 0, 0, 0];
        (*r).dst_addr = [flow.dst_addr, 0, 0, 0];
        (*r).family = TRACE_FAMILY_IPV4;
        fill(r, (flow.src_port, flow.dst_port, flow.proto, tcp_flags));
        fill_decision(r, service, backend, direction, decision, action, reason);
    }
    entry.submit(0);
}

/// [`emit_flow`] for an IPv6 packet.
#[inline(always)]
pub fn emit_flow6(
    (flow, tcp_flags): (&FlowKey6, u8),
    service: u32,
    backend: u32,
    direction: u8,
    decision: u8,
    action: u32,
    reason: u32,
) {
    let Some(mut entry) = TRACE_RING.reserve::<TraceRecord>(0) else {
        return lost();
    };
    let r = entry.as_mut_ptr();
    unsafe {
        (*r).src_addr = flow.src_addr;
        (*r).dst_addr = flow.dst_addr;
        (*r).family = TRACE_FAMILY_IPV6;
        fill(r, (flow.src_port, flow.dst_port, flow.proto, tcp_flags));
        fill_decision(r, service, backend, direction, decision, action, reason);
    }
    entry.submit(0);
}

/// A full ring: the record is counted as lost.
#[inline(always)]
fn lost() {
    if let Some(lost) = TRACE_LOST.get_ptr_mut(0) {
        unsafe { *lost += 1 };
    }
}

/// The ports, protocol and TCP flags of a reserved record (and its padding, so no stale
/// ring bytes reach the reader).
#[inline(always)]
unsafe fn fill(r: *mut TraceRecord, (src_port, dst_port, proto, tcp_flags): (u16, u16, u8, u8)) {
    (*r).src_port = src_port;
    (*r).dst_port = dst_port;
    (*r).proto = proto;
    (*r).tcp_flags = tcp_flags;
    (*r)._pad = 0;
}

/// The time and what was decided, of a reserved record.
#[inline(always)]
unsafe fn fill_decision(
    r: *mut TraceRecord,
    service: u32,
    backend: u32,
    direction: u8,
    decision: u8,
    action: u32,
    reason: u32,
) {
    (*r).ns = bpf_ktime_get_ns();
    (*r).service = service;
    (*r).backend = backend;
    (*r).direction = direction;
    (*r).decision = decision;
    (*r).action = action;
    (*r).reason = reason;
}

/// The reason a forwarded packet was counted under, as far as its action tells.
#[inline(always)]
pub fn forwarded_reason(action: u32) -> u32 {
    match action {
        xdp_action::XDP_TX => Reason::TxSameInterface as u32,
        xdp_action::XDP_REDIRECT => Reason::RedirectInterface as u32,
        _ => TRACE_NO_REASON,
    }
}
