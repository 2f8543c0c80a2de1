//! The XDP data path. One program per attached NIC handles both directions of NAT mode:
//!
//! parse -> lookup (service / flow / return flow) -> select -> rewrite -> forward -> count
//!
//! Every stage is a file; this one only wires the entry points (`lb_xdp`, the tail-called
//! `lb_reply`, `lb_edge` and `lb_place`, `lb_pass`, `lb_pass_tc`, `lb_flow_probe`,
//! `lb_slot_read_probe`; `lb_tc` is in `tc.rs`) and the address prefilter:
//!
//! | stage | file |
//! | --- | --- |
//! | parse (Ethernet, IPv4, TCP) | `parse.rs`, `packet.rs`, `wire.rs` |
//! | lookup (service, backend, return entry, prefilter, clock) | `lookup.rs` over `maps.rs` |
//! | client -> VIP: find or record the flow, then the stages below | `to_backend.rs` |
//! | flow state (established, closed, active counts) | `flow.rs` |
//! | SYN cache (handshakes, SYN-ACK proofs, stateless forwards) | `syn_cache.rs` |
//! | select a backend | `select.rs` |
//! | rewrite (NAT, checksums) | `rewrite.rs` |
//! | forward (FIB, TTL, MACs) | `forward.rs` |
//! | backend -> client, by return entry or SYN-cache slot | `to_client.rs`, `return_entry.rs` |
//! | backend -> client: a SYN-ACK, or no return entry (`lb_reply`) | `reply.rs` |
//! | backend -> client without a flow entry (`lb_reply`) | `to_client_miss.rs` |
//! | backend -> client by the reverse map (`lb_reply`, last resort) | `to_client_reverse.rs` |
//! | edge protection (source rules, SYN rate limits, unlisted ports; `lb_edge`) | `edge.rs` |
//! | edge protection over IPv6 (`lb_edge6`, tail-called by `lb_v6`) | `edge6.rs` |
//! | SYN proxy (cookies, backend handshake, sequence translation; `lb_proxy`) | `syn_proxy.rs` |
//! | direct server return: wrap for the backend, send (`lb_dsr`) | `dsr.rs`, `dsr_hop.rs` |
//! | fragmentation-needed for what the wrapping makes too big (`lb_dsr`) | `frag_needed.rs` |
//! | ICMP errors to a VIP about a flow, to its backend (`lb_dsr`) | `icmp_to_backend.rs` |
//! | ICMP errors about a NAT flow, translated (`lb_dsr`, `lb_udp`) | `icmp_nat.rs` |
//! | count | `count.rs` |
//! | sampled trace | `trace.rs` |
//! | the hook behind the IPv4 TCP NAT stages: XDP, or tc ingress (`lb_tc`) | `frame.rs`, `tc.rs` |
//! | UDP services, both directions (`lb_udp`) | `udp.rs` and the files it lists |
//! | IPv6 (NAT66), TCP and UDP, both directions (`lb_v6`) | `v6.rs` and the files it lists |
//! | IPv6 direct server return: wrap for the backend, send (`lb_dsr6`) | `dsr6.rs`, `dsr_hop6.rs` |
//! | ICMPv6 packet too big for what the wrapping makes too big (`lb_dsr6`) | `packet_too_big.rs` |
//! | ICMPv6 errors to a VIP about a DSR flow, to its backend (`lb_dsr6`) | `icmp6_to_backend.rs` |
#![no_std]
#![no_main]
#![expect(
    internal_features,
    reason = "core_intrinsics: atomic read-modify-write on map values (see flow.rs)"
)]
#![feature(core_intrinsics)]

mod count;
mod datagram;
mod dsr;
mod dsr6;
mod dsr_hop;
mod dsr_hop6;
mod edge;
mod edge6;
mod flow;
mod flow6;
mod flow_table;
mod forward;
mod forward6;
mod frag_needed;
mod frame;
mod icmp6_nat;
mod icmp6_to_backend;
mod icmp_nat;
mod icmp_to_backend;
mod lookup;
mod maps;
mod packet;
mod packet_too_big;
mod parse;
mod parse6;
mod reply;
mod return_entry;
mod rewrite;
mod rewrite6;
mod select;
mod select6;
mod syn_cache;
mod syn_cache6;
mod syn_proxy;
mod tc;
mod to_backend;
mod to_backend6;
mod to_client;
mod to_client6;
mod to_client_miss;
mod to_client_reverse;
mod to_client_reverse6;
mod trace;
mod trace6;
mod udp;
mod udp6;
mod udp_rewrite;
mod udp_to_backend;
mod udp_to_client;
mod v6;
mod v6_syn;
mod wire;

use aya_ebpf::{
    bindings::{xdp_action, TC_ACT_OK},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use lb_common::{
    counters::Reason,
    filter::{FILTER_BACKENDS, FILTER_VIPS},
    limits::PROGRAMS_SLOT_REPLY,
    net::PROTO_TCP,
    service::SERVICE_F_SYN_PROXY,
};

// `#[xdp]` makes the program's entry a call of this function. Inlined into it
// (`#[inline(always)]` on every entry, so that none turns into a call as its body grows
// past what LLVM inlines by itself), a packet pays no BPF call and return, whose return
// goes through the kernel's return thunk under the SRSO and Retbleed mitigations: 5-20 ns
// a packet here (docs/performance.md).
#[xdp]
#[inline(always)]
pub fn lb_xdp(ctx: XdpContext) -> u32 {
    let action = route::<false>(&ctx);
    if !edge::is_hand_over(action) {
        return action;
    }
    if action == udp::HAND_OVER {
        return udp::hand_over(&ctx);
    }
    if action == v6::HAND_OVER {
        return v6::hand_over(&ctx);
    }
    if let Some(action) = dsr::after_route(&ctx, action) {
        return action;
    }
    // A source a rule refused a moment ago is dropped here, before the hand-over.
    if edge::protected_service(action).is_some() {
        if let Some(dropped) = edge::remembered_drop(&ctx) {
            return dropped;
        }
    }
    // One tail-call site for every packet edge protection may take, decided here, after
    // `route`, where little is live: each site and each test in `route` costs frame
    // spills.
    if edge::hands_over(action) {
        edge::hand_over(&ctx);
    }
    edge::hand_over_failed(action)
}

/// `lb_xdp`'s work: the action for the packet, or a hand-over to `lb_edge` (see
/// `edge::is_hand_over`). `EDGE_CHECKED`: `lb_edge` admitted the packet, so nothing is
/// handed over (`lb_place`).
#[inline(always)]
fn route<const EDGE_CHECKED: bool>(ctx: &XdpContext) -> u32 {
    let at = match parse::addresses(ctx) {
        Ok(at) => at,
        Err(Reason::PassNotIpv4) if !EDGE_CHECKED => return v6::screen(ctx),
        Err(reason) => return count::pass(reason),
    };
    // Most of what a gateway forwards is neither to a VIP nor from a backend: two bitmap
    // reads send it on before the rest of the packet is even parsed.
    let to_vip = lookup::may_be(FILTER_VIPS, at.dst);
    let from_backend = lookup::may_be(FILTER_BACKENDS, at.src);
    if !to_vip && !from_backend {
        return count::pass(Reason::PassNoService);
    }
    let pkt = match parse::tcp(ctx, at) {
        Ok(pkt) => pkt,
        Err(Reason::PassNotTcp) if !EDGE_CHECKED && udp::carried(ctx, to_vip) => {
            return udp::HAND_OVER
        }
        // Whatever the data path cannot place goes to the kernel, which would deliver it
        // to the node's own sockets on a VIP address held on `lo`: `unlisted_ports: drop`
        // drops it (IP options and fragments included, or they would get round it).
        Err(reason @ (Reason::PassNotTcp | Reason::PassIpOptions | Reason::PassFragment))
            if to_vip && !EDGE_CHECKED =>
        {
            return edge::unlisted_action(reason)
        }
        Err(reason) => return count::pass(reason),
    };
    if to_vip {
        // A flood's SYN from a source refused a moment ago costs only this much.
        if !EDGE_CHECKED {
            if let Some(dropped) = edge::remembered_syn_drop(&pkt) {
                return dropped;
            }
        }
        if let Some(action) = to_backend::handle::<EDGE_CHECKED>(ctx, &pkt) {
            return action;
        }
    }
    // `lb_place` takes only packets to a VIP that `lb_edge` admitted, so none of them is
    // a reply: leaving the reply path out of it leaves its stack the room it needs.
    if from_backend && !EDGE_CHECKED {
        if to_client::is_syn_ack(&pkt) {
            // A hash-placed service's flow is recorded by the client's ACK that follows
            // (see `flow_table::warm_block`).
            flow_table::warm_block(&pkt.flow);
        }
        if let Some(nat) = lookup::return_flow_of(&pkt) {
            if !to_client::is_syn_ack(&pkt) {
                return to_client::handle(ctx, &pkt, nat);
            }
        }
        // Every other reply (a SYN-ACK, which leaves its handshake's proof in the SYN
        // cache; any reply without a return entry) runs as a program of its own: its
        // stack would not fit in this one's 512 bytes (see `lb_reply`).
        unsafe { maps::PROGRAMS.tail_call(ctx, PROGRAMS_SLOT_REPLY) };
    }
    if EDGE_CHECKED {
        return count::pass(Reason::PassNoService);
    }
    // Left to `lb_xdp`'s wrapper, without a branch here: a test in this frame overflows
    // it.
    edge::no_service_action(to_vip)
}

/// A packet tail-called by `lb_xdp` for edge protection (see `edge`): one without a flow
/// entry to a service with source rules or a SYN rate limit, checked and, if admitted,
/// handed on to `lb_place`; or one to a maybe-VIP address that no service listens for, with
/// `unlisted_ports: drop`. Parsed again, as a tail call keeps only the context.
#[xdp]
#[inline(always)]
pub fn lb_edge(ctx: XdpContext) -> u32 {
    let at = match parse::addresses(&ctx) {
        Ok(at) => at,
        Err(reason) => return count::pass(reason),
    };
    let (dst, proto) = (at.dst, at.proto());
    let pkt = match parse::tcp(&ctx, at) {
        Ok(pkt) => pkt,
        Err(reason @ (Reason::PassNotTcp | Reason::PassIpOptions | Reason::PassFragment)) => {
            return edge::unlisted(dst, proto, reason)
        }
        Err(reason) => return count::pass(reason),
    };
    let Some((service, _)) = lookup::service_of(&pkt) else {
        return edge::unlisted(dst, proto, Reason::PassNoService);
    };
    if let Some(why) = edge::admit(&pkt, service.id()) {
        return to_backend::refuse(&pkt, service.id(), why);
    }
    if service.flags() & SERVICE_F_SYN_PROXY != 0 {
        syn_proxy::hand_over_checked(&ctx, &pkt, service.id());
        // Only if `lb_proxy` is missing from the program array.
        return to_backend::refuse(&pkt, service.id(), Reason::DropSynCookieInvalid);
    }
    edge::to_placement(&ctx);
    // Only if `lb_place` is missing from the program array.
    to_backend::refuse(&pkt, service.id(), Reason::DropEdgeDenied)
}

/// A packet `lb_edge` admitted: placed by `lb_xdp`'s own path, compiled without the
/// hand-over to `lb_edge` (parsed again, as a tail call keeps only the context).
#[xdp]
#[inline(always)]
pub fn lb_place(ctx: XdpContext) -> u32 {
    let action = route::<true>(&ctx);
    dsr::after_route(&ctx, action).unwrap_or(action)
}

/// A packet `lb_xdp` (or `lb_place`) placed on a direct-server-return backend, whose id
/// it left in `DSR_HAND_OVER`: wrapped for the backend's mode and sent (see `dsr`); or a
/// packet to a maybe-VIP address that is not TCP, of which an ICMP error about a DSR
/// flow goes to that flow's backend (see `icmp_to_backend`). Parsed again, as a tail call
/// keeps only the context.
#[xdp]
#[inline(always)]
pub fn lb_dsr(ctx: XdpContext) -> u32 {
    let at = match parse::addresses(&ctx) {
        Ok(at) => at,
        Err(reason) => return count::pass(reason),
    };
    if at.proto() != PROTO_TCP {
        return icmp_to_backend::handle(&ctx, at.dst, at.proto());
    }
    match parse::tcp(&ctx, at) {
        Ok(pkt) => dsr::handle(&ctx, &pkt),
        Err(reason) => count::pass(reason),
    }
}

/// A backend's reply tail-called by `lb_xdp`: a SYN-ACK, or any reply that found no
/// return entry. A handshake's answer (SYN-ACK, or RST refusing it) belongs to a SYN in
/// the SYN cache, and a SYN-ACK leaves there the proof the client's ACK must match (see
/// `lb_common::syn_cache`); any other reply may answer a client packet forwarded without
/// a flow entry, and its flow is recorded then (see `to_client_miss`). Whatever is neither is
/// translated by the reverse map if its backend serves a `stateless_return` service (see
/// `to_client_reverse`), and passed untouched otherwise. The frame is parsed again, as a
/// tail call keeps only the context; nothing of `lb_xdp`'s stack survives the call, which
/// is what gives this path a stack of its own.
#[xdp]
#[inline(always)]
pub fn lb_reply(ctx: XdpContext) -> u32 {
    let pkt = match parse::addresses(&ctx).and_then(|at| parse::tcp(&ctx, at)) {
        Ok(pkt) => pkt,
        Err(reason) => return count::pass(reason),
    };
    reply::handle(&ctx, &pkt, || syn_proxy::hand_over(&ctx))
}

/// The SYN proxy's handshakes (see `syn_proxy`): a proxied service's SYN or ACK without
/// a flow entry, tail-called by `lb_edge` after its checks; a proxied flow's SYN-ACK from
/// its backend, tail-called by `lb_reply`. Parsed again, as a tail call keeps only the
/// context.
#[xdp]
#[inline(always)]
pub fn lb_proxy(ctx: XdpContext) -> u32 {
    syn_proxy::run(&ctx)
}

/// Passes every frame. It is the floor that benchmarks subtract, and what the veth peers
/// of a namespace lab run: the kernel's veth driver flushes XDP_TX frames towards its
/// peer only when the peer runs an XDP program (`veth_xdp_flush()`), so without it a
/// one-NIC lab's XDP_TX frames wait in a ring until unrelated traffic flushes them.
#[xdp]
#[inline(always)]
pub fn lb_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Passes every skb at tc: the floor the benchmark subtracts from `lb_tc`'s figures (a
/// tc test run builds an skb for every call, which an XDP one does not). lbd never loads
/// it.
#[classifier]
#[inline(always)]
pub fn lb_pass_tc(_ctx: TcContext) -> i32 {
    TC_ACT_OK
}

/// Parses a TCP frame and looks its tuple up in the flow table, and does nothing else:
/// XDP_PASS if an entry is found, XDP_DROP if not, XDP_ABORTED for what does not parse.
/// lbd never loads it; the flow-fill benchmark times it beside the whole path, so that
/// the cost of the table's one memory read at a million flows is measured by the same
/// method (one BPF_PROG_TEST_RUN call each) as the path around it.
#[xdp]
#[inline(always)]
pub fn lb_flow_probe(ctx: XdpContext) -> u32 {
    pass_if(&ctx, |flow| flow_table::find(flow).is_some())
}

/// Parses a TCP frame and reads its tuple's home slot in the flow table (its tag alone),
/// and does nothing else: XDP_PASS if the slot holds a connection (any), XDP_DROP if it
/// is empty, XDP_ABORTED for what does not parse. lbd never loads it; the flow-fill
/// benchmark times it beside `lb_flow_probe` and the whole path, so that the one read of
/// the table's memory that every lookup makes is timed by the same method (one
/// BPF_PROG_TEST_RUN call each) as the lookup and the path around it.
#[xdp]
#[inline(always)]
pub fn lb_slot_read_probe(ctx: XdpContext) -> u32 {
    pass_if(&ctx, flow_table::home_holds_a_connection)
}

/// A benchmark probe's verdict on a TCP frame: XDP_PASS when `holds` says so of its
/// tuple, XDP_DROP when not, XDP_ABORTED for what does not parse.
#[inline(always)]
fn pass_if(ctx: &XdpContext, holds: impl Fn(&lb_common::flow::FlowKey) -> bool) -> u32 {
    let Ok(pkt) = parse::addresses(ctx).and_then(|at| parse::tcp(ctx, at)) else {
        return xdp_action::XDP_ABORTED;
    };
    if holds(&pkt.flow) {
        xdp_action::XDP_PASS
    } else {
        xdp_action::XDP_DROP
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any reachable panic path; this is never linked in.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
