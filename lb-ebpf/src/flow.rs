//! Flow state: counting a backend's active flows up when a flow is created and down
//! exactly once when it closes (RST from either side, or a FIN from each), whichever
//! CPU sees the closing packet. The state word changes only by atomic or, so of two
//! CPUs closing the same flow only one sees the closed bit appear.
//!
//! The BPF target's `core` offers no atomic read-modify-write types, so the intrinsics
//! are used directly; they compile to BPF_ATOMIC instructions (`--cpu` v2 or v3, see build.rs).
use core::intrinsics::{atomic_or, atomic_xadd, atomic_xsub, AtomicOrdering::Relaxed};

use lb_common::{
    flow::{
        FlowTarget, FLOW_F_CLOSED, FLOW_F_COUNTED, FLOW_F_ESTABLISHED, FLOW_F_FIN_BACKEND,
        FLOW_F_FIN_CLIENT,
    },
    net::{TCP_FIN, TCP_RST},
};

use crate::maps::ACTIVE_FLOWS;

/// Which side sent the packet.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Backend,
}

/// Counts a new flow in its backend's active flows.
#[inline(always)]
pub fn opened(backend: u32) {
    if let Some(count) = ACTIVE_FLOWS.get_ptr_mut(backend) {
        unsafe { atomic_xadd::<u64, u64, { Relaxed }>(count, 1) };
    }
}

/// Stamps a client packet's time on its flow (a store only when the second changed,
/// so most packets write nothing) and marks the flow established on its first non-SYN.
#[inline(always)]
pub fn touch(entry: *mut FlowTarget, seen: &FlowTarget, now: u32, syn: bool) {
    if seen.last_seen != now {
        unsafe { (*entry).last_seen = now };
    }
    if !syn && seen.state & FLOW_F_ESTABLISHED == 0 {
        let state = unsafe { core::ptr::addr_of_mut!((*entry).state) };
        unsafe { atomic_or::<u64, u64, { Relaxed }>(state, FLOW_F_ESTABLISHED) };
    }
}

/// Gives up on a flow whose entry is about to be replaced (a new connection on its tuple):
/// closes it, so its backend's active count goes down exactly once.
#[inline(always)]
pub fn abandon(target: *mut FlowTarget) {
    close(target, FLOW_F_CLOSED);
}

/// Records the FIN/RST of a packet of the flow whose entry is at `target`.
#[inline(always)]
pub fn observe(target: *mut FlowTarget, tcp_flags: u8, side: Side) {
    let bits = if tcp_flags & TCP_RST != 0 {
        FLOW_F_CLOSED
    } else if tcp_flags & TCP_FIN != 0 {
        match side {
            Side::Client => FLOW_F_FIN_CLIENT,
            Side::Backend => FLOW_F_FIN_BACKEND,
        }
    } else {
        return;
    };
    close(target, bits);
}

/// Sets `bits` (a FIN side, or CLOSED) and counts the flow down if that closed it.
#[inline(always)]
fn close(target: *mut FlowTarget, bits: u64) {
    let state = unsafe { core::ptr::addr_of_mut!((*target).state) };
    let before = unsafe { atomic_or::<u64, u64, { Relaxed }>(state, bits) };
    if before & FLOW_F_CLOSED != 0 {
        return;
    }
    // Whoever turns CLOSED on owns the decrement: an RST just did (CLOSED was off); a
    // FIN that completes the pair sets it now, racing any other CPU doing the same.
    let both_fins = FLOW_F_FIN_CLIENT | FLOW_F_FIN_BACKEND;
    let owner = if bits == FLOW_F_CLOSED {
        true
    } else if (before | bits) & both_fins == both_fins {
        let before_close = unsafe { atomic_or::<u64, u64, { Relaxed }>(state, FLOW_F_CLOSED) };
        before_close & FLOW_F_CLOSED == 0
    } else {
        false
    };
    if owner && before & FLOW_F_COUNTED != 0 {
        let backend = unsafe { (*target).backend };
        if let Some(count) = ACTIVE_FLOWS.get_ptr_mut(backend) {
            unsafe { atomic_xsub::<u64, u64, { Relaxed }>(count, 1) };
        }
    }
}
