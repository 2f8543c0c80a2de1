//! Count: per-CPU counters, so no CPU ever waits on another's cache line.
use aya_ebpf::bindings::xdp_action;
use lb_common::{
    counters::{BackendSignals, Reason, TrafficCounters},
    flow::FlowTarget,
    net::{TCP_ACK, TCP_RST, TCP_SYN},
};

use crate::maps::{BACKEND_SIGNALS, BACKEND_STATS, REASONS, SERVICE_STATS};

#[inline(always)]
pub fn reason(reason: Reason) {
    if let Some(slot) = REASONS.get_ptr_mut(reason as u32) {
        unsafe { *slot += 1 };
    }
}

/// Counts reason slot `slot` (a `Reason` as a number).
#[inline(always)]
pub fn reason_slot(slot: u32) {
    if let Some(c) = REASONS.get_ptr_mut(slot) {
        unsafe { *c += 1 };
    }
}

#[inline(always)]
pub fn pass(why: Reason) -> u32 {
    reason(why);
    xdp_action::XDP_PASS
}

#[inline(always)]
pub fn drop(why: Reason) -> u32 {
    reason(why);
    xdp_action::XDP_DROP
}

/// Counts `why` and returns its action: XDP_PASS for a hop limit or TTL that would expire
/// (the kernel answers it), XDP_DROP for anything else.
#[inline(always)]
pub fn refuse(why: Reason) -> u32 {
    if why == Reason::PassTtlExpired {
        pass(why)
    } else {
        drop(why)
    }
}

#[inline(always)]
pub fn to_backend(target: &FlowTarget, bytes: u64, new_flow: bool) {
    let add = |c: &mut TrafficCounters| {
        c.packets_to_backend += 1;
        c.bytes_to_backend += bytes;
        c.new_flows += new_flow as u64;
    };
    if let Some(c) = SERVICE_STATS.get_ptr_mut(target.service) {
        add(unsafe { &mut *c });
    }
    if let Some(c) = BACKEND_STATS.get_ptr_mut(target.backend) {
        add(unsafe { &mut *c });
    }
}

/// A client packet forwarded by the table without a flow entry (see
/// `TrafficCounters::stateless_forwards`).
#[inline(always)]
pub fn stateless_forward(target: &FlowTarget) {
    if let Some(c) = SERVICE_STATS.get_ptr_mut(target.service) {
        unsafe { (*c).stateless_forwards += 1 };
    }
    if let Some(c) = BACKEND_STATS.get_ptr_mut(target.backend) {
        unsafe { (*c).stateless_forwards += 1 };
    }
}

/// A client's ACK that did not prove it saw the SYN-ACK of its handshake, whose SYN went
/// to `backend` (see `TrafficCounters::unproven_acks`).
#[inline(always)]
pub fn unproven_ack(service: u32, backend: u32) {
    if let Some(c) = SERVICE_STATS.get_ptr_mut(service) {
        unsafe { (*c).unproven_acks += 1 };
    }
    if let Some(c) = BACKEND_STATS.get_ptr_mut(backend) {
        unsafe { (*c).unproven_acks += 1 };
    }
}

/// A flow recorded by its backend's reply (see `TrafficCounters::flows_from_replies`).
#[inline(always)]
pub fn flow_from_reply(service: u32, backend: u32) {
    if let Some(c) = SERVICE_STATS.get_ptr_mut(service) {
        unsafe { (*c).flows_from_replies += 1 };
    }
    if let Some(c) = BACKEND_STATS.get_ptr_mut(backend) {
        unsafe { (*c).flows_from_replies += 1 };
    }
}

/// A reply translated by the reverse map (see `TrafficCounters::replies_reverse_mapped`).
#[inline(always)]
pub fn reply_reverse_mapped(service: u32, backend: u32) {
    if let Some(c) = SERVICE_STATS.get_ptr_mut(service) {
        unsafe { (*c).replies_reverse_mapped += 1 };
    }
    if let Some(c) = BACKEND_STATS.get_ptr_mut(backend) {
        unsafe { (*c).replies_reverse_mapped += 1 };
    }
}

#[inline(always)]
pub fn to_client(service: u32, backend: u32, bytes: u64) {
    let add = |c: &mut TrafficCounters| {
        c.packets_to_client += 1;
        c.bytes_to_client += bytes;
    };
    if let Some(c) = SERVICE_STATS.get_ptr_mut(service) {
        add(unsafe { &mut *c });
    }
    if let Some(c) = BACKEND_STATS.get_ptr_mut(backend) {
        add(unsafe { &mut *c });
    }
}

/// A connection attempt (SYN without ACK) forwarded to `backend`. Only SYN and RST
/// packets touch the signals array, so established traffic pays one flag test.
#[inline(always)]
pub fn attempt_to_backend(backend: u32, tcp_flags: u8) {
    if tcp_flags & (TCP_SYN | TCP_ACK) != TCP_SYN {
        return;
    }
    if let Some(s) = BACKEND_SIGNALS.get_ptr_mut(backend) {
        unsafe { (*s).syns += 1 };
    }
}

/// A SYN sent again before its handshake completed, whose first went to `backend` (see
/// `BackendSignals::syn_retransmits`).
#[inline(always)]
pub fn syn_retransmit(backend: u32) {
    if let Some(s) = BACKEND_SIGNALS.get_ptr_mut(backend) {
        unsafe { (*s).syn_retransmits += 1 };
    }
}

/// A UDP flow placed on `backend` (see `BackendSignals::datagram_flows`).
#[inline(always)]
pub fn datagram_flow(backend: u32) {
    if let Some(s) = BACKEND_SIGNALS.get_ptr_mut(backend) {
        unsafe { (*s).datagram_flows += 1 };
    }
}

/// An ICMP port unreachable from `backend` about a client's datagram (see
/// `BackendSignals::unreachables`).
#[inline(always)]
pub fn unreachable(backend: u32) {
    if let Some(s) = BACKEND_SIGNALS.get_ptr_mut(backend) {
        unsafe { (*s).unreachables += 1 };
    }
}

/// A SYN-ACK (attempt accepted) or RST (refused or aborted) coming back from `backend`.
#[inline(always)]
pub fn answer_from_backend(backend: u32, tcp_flags: u8) {
    let accepted = tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK;
    let reset = tcp_flags & TCP_RST != 0;
    if !accepted && !reset {
        return;
    }
    if let Some(s) = BACKEND_SIGNALS.get_ptr_mut(backend) {
        let s: &mut BackendSignals = unsafe { &mut *s };
        s.syn_acks += accepted as u64;
        s.resets += reset as u64;
    }
}
