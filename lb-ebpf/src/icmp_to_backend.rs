//! ICMP errors to a VIP about a DSR flow. A backend's reply leaves from the VIP straight
//! to the client; a router that cannot forward it (too big for a link: the
//! fragmentation-needed of path MTU discovery) answers the VIP, and ECMP brings that to
//! some node of the tier. The error quotes the reply's header, VIP:port -> client; the
//! flow it is about is that reversed. Its flow entry, or on a node without one the
//! service's table (which every node of the tier agrees on), names the backend, and the
//! error goes there by the service's mode, so the backend's socket learns the path MTU.
//! Anything else not TCP to a maybe-VIP address goes on as before (`edge::unlisted`).
use aya_ebpf::programs::XdpContext;
use lb_common::{
    counters::Reason,
    encap::{flow_of_quoted_reply, is_forwarded_icmp_error, BACKEND_F_DSR, PROTO_ICMP},
    net::PROTO_TCP,
    service_index::key_word,
};

use crate::{
    count,
    dsr::{self, Inner},
    edge,
    lookup::{self, backend_by_id},
    maps::FLOWS,
    select, wire,
};

const ETH_LEN: usize = 14;
/// Ethernet, IPv4 (no options), ICMP header, quoted IPv4 header, quoted ports.
const NEEDED: usize = ETH_LEN + 20 + 8 + 20 + 4;
const IP_FRAGMENT: u16 = 0x3fff;

/// A packet to the maybe-VIP `dst` (wire order) with IP protocol `proto`, not TCP.
#[inline(always)]
pub fn handle(ctx: &XdpContext, dst: u32, proto: u8) -> u32 {
    if proto == PROTO_ICMP {
        if let Some(action) = to_backend(ctx, dst) {
            return action;
        }
    }
    if edge::drops_unlisted() {
        return edge::unlisted(dst, proto, Reason::PassNotTcp);
    }
    count::pass(Reason::PassNotTcp)
}

/// Forwards an ICMP error about a DSR flow to its backend; `None`: not one.
#[inline(always)]
fn to_backend(ctx: &XdpContext, dst: u32) -> Option<u32> {
    let start = ctx.data();
    if start + NEEDED > ctx.data_end() {
        return None;
    }
    let p = start as *const u8;
    let (vihl, frag_off, icmp_type, quoted_vihl, quoted_proto) = unsafe {
        (
            *p.add(ETH_LEN),
            wire::get16(p.add(ETH_LEN + 6)),
            *p.add(ETH_LEN + 20),
            *p.add(ETH_LEN + 28),
            *p.add(ETH_LEN + 28 + 9),
        )
    };
    if vihl != 0x45
        || frag_off & IP_FRAGMENT.to_be() != 0
        || !is_forwarded_icmp_error(icmp_type)
        || quoted_vihl != 0x45
        || quoted_proto != PROTO_TCP
    {
        return None;
    }
    let key = unsafe {
        let q = p.add(ETH_LEN + 28);
        flow_of_quoted_reply(
            wire::get32(q.add(12)),
            wire::get32(q.add(16)),
            wire::get16(q.add(20)),
            wire::get16(q.add(22)),
        )
    };
    // The quoted reply left from the VIP this error came back to.
    if key.dst_addr != dst {
        return None;
    }
    let id = match unsafe { FLOWS.get(key) } {
        Some(flow) => flow.backend,
        None => {
            let (service, _) = lookup::service_of_word(key_word(&key.service_key()))?;
            select::by_table(service, &key)
        }
    };
    let backend = backend_by_id(id)?;
    if backend.flags & BACKEND_F_DSR == 0 {
        return None;
    }
    let inner = unsafe { Inner::of(p.add(ETH_LEN)) };
    Some(dsr::wrap_and_send(ctx, id, &backend, &key, &inner, true))
}
