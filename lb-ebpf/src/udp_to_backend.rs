//! Client -> VIP for a UDP service: follow the flow entry, or place the datagram and
//! record its flow; rewrite towards the backend, forward, count.
//!
//! UDP has no handshake: nothing tells the first datagram of a flow from one whose entry
//! this node lost (a restart without the pinned maps, an eviction, an ECMP move from
//! another node). So a datagram without an entry is placed by the service's Maglev table
//! (`select::by_table`), which gives both the same backend; the policies a UDP service
//! accepts (`maglev`, `source_hash`) are the ones whose choice is that table's. The entry
//! then keeps the flow on its backend while the table changes (a backend added, a weight
//! changed, a backend draining), until it has been idle for the UDP timeout: `lbd`'s
//! periodic sweep removes it (`flow_timeouts.udp`).
//!
//! A datagram placed on a DSR backend (`dsr_l2`, `ipip`, `gue`) is handed on unchanged,
//! wrapped as a TCP packet of a DSR service is (`dsr::wrap_and_send`); its flow records
//! no return entry, since the backend answers the client directly.
use aya_ebpf::programs::XdpContext;
use lb_common::{
    backend::Backend,
    counters::Reason,
    encap::BACKEND_F_DSR,
    flow::{FlowTarget, FLOW_F_COUNTED, FLOW_F_DATAGRAM, FLOW_F_ESTABLISHED},
    net::is_martian,
    service::SERVICE_F_EDGE,
    service_index::{key_word, PackedMeta},
    trace::{
        TRACE_DECISION_FLOW_HIT, TRACE_DECISION_NEW_FLOW, TRACE_DECISION_REFUSED,
        TRACE_DIR_TO_BACKEND, TRACE_NO_BACKEND,
    },
};

use crate::{
    count,
    datagram::Datagram,
    dsr::{self, Inner},
    edge, flow, flow_table,
    forward::forward_frame,
    lookup::{self, backend_by_id},
    maps::NEXTHOPS,
    return_entry, select, trace, udp_rewrite,
};

/// A datagram to a maybe-VIP address. Its flow entry is looked up first, as for TCP, so
/// a flow's later datagrams need no service lookup. `None`: no flow and no UDP service
/// at its VIP:port, not ours. (Each way ends in a call of its own to `send`: a value
/// carried past the branches, as an enum of either way's fields, left registers the
/// verifier found uninitialised.)
#[inline(always)]
pub fn handle(ctx: &XdpContext, dg: &Datagram) -> Option<u32> {
    let entry = flow_table::find(&dg.flow);
    if let Some(entry) = entry {
        if let Some((target, backend)) = followed(entry) {
            if let Some(action) = refused(dg, target.service) {
                return Some(action);
            }
            follow(dg, entry, &target, &backend);
            return Some(send(ctx, dg, &target, &backend, false));
        }
    }
    // No entry, or one whose backend slot was freed or given to another service since:
    // placed (again).
    let service = service_of(dg)?;
    if let Some(action) = refused(dg, service.id()) {
        return Some(action);
    }
    // Source rules decide on a datagram that opens (or reopens) a flow; its flow's later
    // datagrams follow the entry, as a TCP connection's packets do.
    if service.flags() & SERVICE_F_EDGE != 0 {
        if let Some(why) = edge::admit_datagram(service.id(), dg.flow.src_addr) {
            return Some(refuse(dg, service.id(), count::drop(why), why));
        }
    }
    // XDP runs before the kernel's martian checks: such a source records no flow (as in
    // `to_backend`), so a hit never needs the check.
    if is_martian(dg.flow.src_addr) || dg.flow.src_addr == dg.flow.dst_addr {
        let why = Reason::DropMartianSource;
        return Some(refuse(dg, service.id(), count::drop(why), why));
    }
    Some(match place(dg, service, entry.is_some()) {
        Some((target, backend, new_flow)) => send(ctx, dg, &target, &backend, new_flow),
        None => {
            let why = Reason::DropNoBackend;
            refuse(dg, service.id(), count::drop(why), why)
        }
    })
}

/// The action for a datagram of service `service` that is malformed, or whose TTL would
/// expire; `None` for any other.
#[inline(always)]
fn refused(dg: &Datagram, service: u32) -> Option<u32> {
    if !dg.valid {
        let why = Reason::DropMalformedUdp;
        return Some(refuse(dg, service, count::drop(why), why));
    }
    if !dg.ttl_allows() {
        let why = Reason::PassTtlExpired;
        return Some(refuse(dg, service, count::pass(why), why));
    }
    None
}

/// Rewrites a datagram placed on `backend` towards it, counts it, forwards it; traced if
/// sampled.
#[inline(always)]
fn send(
    ctx: &XdpContext,
    dg: &Datagram,
    target: &FlowTarget,
    backend: &Backend,
    new_flow: bool,
) -> u32 {
    count::to_backend(target, dg.frame_len, new_flow);
    if new_flow {
        count::datagram_flow(target.backend);
    }
    if backend.flags & BACKEND_F_DSR != 0 {
        // SAFETY: `parse` proved the IPv4 header inside the frame.
        let inner = unsafe { Inner::of(dg.ip as *const u8) };
        return dsr::wrap_and_send(ctx, target.backend, backend, &dg.flow, &inner, false);
    }
    udp_rewrite::dnat(dg, backend.addr, backend.port);
    let cache = NEXTHOPS
        .get_ptr_mut(target.backend)
        .unwrap_or(core::ptr::null_mut());
    let action = forward_frame(ctx, dg.eth, dg.ip, dg.flow.proto, cache);
    if trace::sampled(target.service) {
        let decision = if new_flow {
            TRACE_DECISION_NEW_FLOW
        } else {
            TRACE_DECISION_FLOW_HIT
        };
        let (service, backend) = (target.service, target.backend);
        let reason = trace::forwarded_reason(action);
        let dir = TRACE_DIR_TO_BACKEND;
        trace::emit_flow(
            (&dg.flow, 0),
            service,
            backend,
            dir,
            decision,
            action,
            reason,
        );
    }
    action
}

/// A datagram to service `service` that reached no backend, with the `action` taken
/// for `why`: traced if sampled.
#[inline(always)]
fn refuse(dg: &Datagram, service: u32, action: u32, why: Reason) -> u32 {
    if trace::sampled(service) {
        let (dir, how) = (TRACE_DIR_TO_BACKEND, TRACE_DECISION_REFUSED);
        let packet = (&dg.flow, 0);
        trace::emit_flow(
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

/// The target of the flow entry at `entry` and its backend, if that slot still holds one
/// of the entry's service.
#[inline(always)]
fn followed(entry: *mut FlowTarget) -> Option<(FlowTarget, Backend)> {
    let target = unsafe { *entry };
    let backend = backend_by_id(target.backend).filter(|b| b.service == target.service)?;
    Some((target, backend))
}

/// The UDP service at the datagram's VIP:port.
#[inline(always)]
fn service_of(dg: &Datagram) -> Option<PackedMeta> {
    Some(lookup::service_of_word(key_word(&dg.flow.service_key()))?.0)
}

/// A datagram of the flow at `entry`: the time stamped on it. A client expecting an
/// answer may find the reply direction's entry evicted (in the LRU maps the two
/// directions are evicted apart): it is put back here, as a TCP segment with data does (a
/// DSR flow has none).
#[inline(always)]
fn follow(dg: &Datagram, entry: *mut FlowTarget, target: &FlowTarget, backend: &Backend) {
    let now = lookup::now_secs();
    if target.last_seen != now {
        unsafe { (*entry).last_seen = now };
    }
    if backend.flags & BACKEND_F_DSR != 0 {
        return;
    }
    let key = dg.flow.reply_from(backend.addr, backend.port);
    if flow_table::find_return(&key).is_none() {
        return_entry::insert(key, dg.flow.dst_addr, dg.flow.dst_port, target);
    }
}

/// Places a datagram without a live flow entry by the service's table and records its
/// flow (its slot, or an entry per direction in the LRU maps), counted as new and active.
/// `None`: no backend to take it.
#[inline(always)]
fn place(dg: &Datagram, service: PackedMeta, replace: bool) -> Option<(FlowTarget, Backend, bool)> {
    let id = select::by_table(service, &dg.flow);
    let backend = backend_by_id(id)?;
    let target = FlowTarget {
        backend: id,
        service: service.id(),
        state: FLOW_F_COUNTED | FLOW_F_ESTABLISHED | FLOW_F_DATAGRAM,
        last_seen: lookup::now_secs(),
        _pad: 0,
    };
    // Two CPUs may place the same new flow at once: only the insert that creates the
    // entry counts it, and the other follows that entry.
    if flow_table::record(&dg.flow, &target, !replace).is_err() {
        let existing = unsafe { *flow_table::find(&dg.flow)? };
        let backend = backend_by_id(existing.backend)?;
        return Some((existing, backend, false));
    }
    flow::opened(id);
    if backend.flags & BACKEND_F_DSR == 0 {
        return_entry::insert(
            dg.flow.reply_from(backend.addr, backend.port),
            dg.flow.dst_addr,
            dg.flow.dst_port,
            &target,
        );
    }
    Some((target, backend, true))
}
