//! Client -> VIP for an IPv6 TCP service: follow the flow entry, or place a SYN by the
//! service's policy and record its flow; rewrite towards the backend, forward, count.
//!
//! A `maglev` or `source_hash` service's SYN records no flow, only a SYN-cache slot, and
//! its handshake's ACK records the flow, as over IPv4: `lb_v6` hands such a packet
//! without a live entry to `lb_v6_syn` (`v6_syn.rs`), which runs this file's code with
//! the SYN cache in (`IN_SYN6`), on a stack of its own. A `round_robin` or `least_conn`
//! service's SYN records its flow (see `open`). A packet that is not a SYN and has no
//! entry (a connection whose entry was evicted, or a spoofed ACK) is forwarded to the
//! backend the Maglev table gives it, recording nothing (counted in
//! `stateless_forwards`): a hash-placed service's connection stays on its backend.
use aya_ebpf::programs::XdpContext;
use lb_common::{
    backend::Backend,
    counters::Reason,
    encap::BACKEND_F_DSR,
    flow::{FlowTarget, FLOW_F_CLOSED, FLOW_F_COUNTED},
    ipv6::Addr6,
    net::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    net6::is_martian6,
    service::SERVICE_F_STATELESS_SYN,
    service_index::PackedMeta,
};

use crate::{
    count, dsr6, edge6,
    flow::{self, Side},
    flow6::{self, backend6, followed, new_target, Placed6},
    forward6, lookup,
    maps::{FLOWS6, NEXTHOPS},
    parse6::Packet6,
    rewrite6, select6, syn_cache6, to_backend, trace6, v6_syn,
};

/// A TCP segment to a maybe-VIP address. `None`: no flow and no IPv6 TCP service at its
/// VIP:port, not ours. `IN_SYN6`: run by `lb_v6_syn`, which places what `lb_v6` hands
/// over through the SYN cache.
#[inline(always)]
pub fn handle<const IN_SYN6: bool>(ctx: &XdpContext, pkt: &Packet6) -> Option<u32> {
    let syn = pkt.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
    // A SYN looks up no flow here: it records none (a hash-placed service's), or it is
    // recorded by an insert that fails if its tuple has an entry (see `open`), so a new
    // connection's SYN costs at most one flow-table access.
    let mut replace = false;
    // `lb_v6_syn` does not look again for an entry `lb_v6` did not find.
    if pkt.valid && !syn && !(IN_SYN6 && v6_syn::no_entry()) {
        if let Some(entry) = FLOWS6.get_ptr_mut(pkt.flow) {
            match existing::<IN_SYN6>(ctx, pkt, entry, false) {
                Some(placed) => {
                    if !pkt.hop_allows() {
                        return Some(count::pass(Reason::PassTtlExpired));
                    }
                    return Some(send(ctx, pkt, &placed, false));
                }
                // Its backend slot was freed, or a new handshake of the tuple completed
                // through the SYN cache: a flow recorded now overwrites the entry.
                None => replace = true,
            }
        }
    }
    if !IN_SYN6 {
        // A SYN, or a segment without a live entry: placed by `lb_v6_syn`, through the SYN
        // cache for a hash-placed service. Returns only if `lb_v6_syn` is missing: then
        // placed below, a SYN recording its flow.
        v6_syn::hand_over(ctx, !replace);
    }
    let service = flow6::service6(&pkt.flow)?;
    // XDP runs before the kernel's martian checks: such a source records no flow, so a
    // hit never needs the check.
    let refused = if is_martian6(&pkt.flow.src_addr) || pkt.flow.src_addr == pkt.flow.dst_addr {
        Some(Reason::DropMartianSource)
    } else if !pkt.valid {
        Some(Reason::DropMalformedTcp)
    } else if !pkt.hop_allows() {
        Some(Reason::PassTtlExpired)
    } else {
        None
    };
    if let Some(why) = refused {
        return Some(trace6::refused(pkt, service.id(), count::refuse(why), why));
    }
    if let Some(action) = edge6::check(ctx, pkt, service) {
        return Some(action);
    }
    let placed = if IN_SYN6 && service.flags() & SERVICE_F_STATELESS_SYN != 0 {
        syn_cache6::place(pkt, service, syn, replace)
    } else {
        place(ctx, pkt, service, syn)
    };
    Some(match placed {
        Some((placed, new_flow)) => send(ctx, pkt, &placed, new_flow),
        None => {
            let why = Reason::DropNoBackend;
            trace6::refused(pkt, service.id(), count::drop(why), why)
        }
    })
}

/// The live flow at `entry`, its state updated by the packet. `None`: the entry must be
/// replaced (its backend slot was freed or given to another service, a SYN reuses the
/// tuple of a closed flow or of one whose backend takes no new flows, or a new handshake
/// through the SYN cache completed on the tuple, see `syn_cache6::reopened`). An entry
/// that may be an earlier connection's is looked up in the SYN cache by `lb_v6_syn`:
/// `lb_v6` hands the packet over.
#[inline(always)]
fn existing<const IN_SYN6: bool>(
    ctx: &XdpContext,
    pkt: &Packet6,
    entry: *mut FlowTarget,
    syn: bool,
) -> Option<Placed6> {
    let placed = followed(entry)?;
    let (target, backend, addr) = &placed;
    if !syn && to_backend::may_be_reused(target, backend, lookup::now_secs()) {
        if !IN_SYN6 {
            // Returns only if `lb_v6_syn` is missing: the entry is followed.
            v6_syn::hand_over(ctx, false);
        } else if syn_cache6::reopened(pkt, target) {
            flow::abandon(entry);
            return None;
        }
    }
    if syn {
        if target.state & FLOW_F_CLOSED != 0 {
            return None;
        }
        if backend.weight_milli == 0 {
            flow::abandon(entry);
            return None;
        }
    }
    flow::observe(entry, pkt.tcp_flags, Side::Client);
    flow::touch(entry, target, lookup::now_secs(), syn);
    if pkt.has_payload || pkt.tcp_flags & (TCP_FIN | TCP_RST) != 0 {
        flow6::ensure_return(pkt, target, backend, addr);
    }
    Some(placed)
}

/// Places a packet without a live entry: a SYN by the policy ([`open`]); anything else
/// by the table, unrecorded. `None`: no backend to take it. The flag: a flow was opened.
#[inline(always)]
fn place(
    ctx: &XdpContext,
    pkt: &Packet6,
    service: PackedMeta,
    syn: bool,
) -> Option<(Placed6, bool)> {
    if !syn {
        let id = select6::by_table6(service, &pkt.flow);
        let (backend, addr) = backend6(id)?;
        let target = FlowTarget::unrecorded(id, service.id());
        count::stateless_forward(&target);
        return Some(((target, backend, addr), false));
    }
    let id = select6::pick6(service, &pkt.flow);
    let (backend, addr) = backend6(id)?;
    open(
        ctx,
        pkt,
        new_target(id, service.id(), FLOW_F_COUNTED, lookup::now_secs()),
        backend,
        addr,
    )
}

/// Records a SYN's flow on the backend of `target`, unless its tuple has an entry: then
/// the SYN follows that entry (a retransmit) or replaces it (a client reusing the tuple of
/// a closed flow, or of one whose backend takes no new flows), as [`existing`] decides.
/// So only such a SYN reads the entry; the price is that a retransmitted SYN of a
/// `round_robin` service moves the service's cursor on by one.
#[inline(always)]
fn open(
    ctx: &XdpContext,
    pkt: &Packet6,
    target: FlowTarget,
    backend: Backend,
    addr: Addr6,
) -> Option<(Placed6, bool)> {
    if flow6::insert_new(pkt, &target, &backend, &addr, false) {
        return Some(((target, backend, addr), true));
    }
    if let Some(placed) = FLOWS6
        .get_ptr_mut(pkt.flow)
        .and_then(|entry| existing::<false>(ctx, pkt, entry, true))
    {
        return Some((placed, false));
    }
    flow6::record(pkt, &target, backend, addr, true)
}

/// Rewrites a placed segment towards its backend, counts it, forwards it.
#[inline(always)]
fn send(ctx: &XdpContext, pkt: &Packet6, placed: &Placed6, new_flow: bool) -> u32 {
    let (target, backend, addr) = placed;
    if backend.flags & BACKEND_F_DSR != 0 {
        return dsr6::hand_over(ctx, target.backend, target.service, new_flow);
    }
    count::to_backend(target, pkt.frame_len, new_flow);
    count::attempt_to_backend(target.backend, pkt.tcp_flags);
    rewrite6::dnat_tcp(pkt, addr, backend.port);
    let cache = NEXTHOPS
        .get_ptr_mut(target.backend)
        .unwrap_or(core::ptr::null_mut());
    let action = forward6::forward(ctx, pkt, cache);
    trace6::to_backend(pkt, target, new_flow, action)
}
