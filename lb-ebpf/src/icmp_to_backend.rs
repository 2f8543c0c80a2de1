//! ICMP errors to a VIP about a flow. A backend's reply leaves from the VIP to the client
//! (in NAT mode through this node, in DSR straight from the backend); a router that
//! cannot forward it (too big for a link: the fragmentation-needed of path MTU discovery;
//! the client's host unreachable) answers the VIP, and ECMP brings that to some node of
//! the tier. The error quotes the reply's header, VIP:port -> client; the flow it is
//! about is that reversed. Its flow entry, or on a node without one the service's table
//! (which every node of the tier agrees on), names the backend, and the error goes there:
//! wrapped by the service's mode for a DSR backend, translated back (`icmp_nat`) for a
//! NAT one, so the backend's socket learns the path MTU or the failure. Anything else not
//! TCP to a maybe-VIP address goes on as before (`edge::unlisted`).
use aya_ebpf::programs::XdpContext;
use lb_common::{
    counters::Reason,
    encap::{flow_of_quoted_reply, BACKEND_F_DSR, PROTO_ICMP},
    net::PROTO_TCP,
    service_index::key_word,
};

use crate::{
    count,
    dsr::{self, Inner},
    edge, flow_table, icmp_nat,
    lookup::{self, backend_by_id},
    select, wire,
};

const ETH_LEN: usize = 14;

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

/// Sends an ICMP error about a flow to its backend; `None`: not one.
#[inline(always)]
fn to_backend(ctx: &XdpContext, dst: u32) -> Option<u32> {
    let start = ctx.data();
    if start + icmp_nat::NEEDED > ctx.data_end() {
        return None;
    }
    let p = start as *const u8;
    let proto = unsafe { icmp_nat::quoted_protocol(p) }?;
    let key = unsafe {
        let q = p.add(ETH_LEN + 28);
        flow_of_quoted_reply(
            wire::get32(q.add(12)),
            wire::get32(q.add(16)),
            wire::get16(q.add(20)),
            wire::get16(q.add(22)),
            proto,
        )
    };
    // The quoted reply left from the VIP this error came back to.
    if key.dst_addr != dst {
        return None;
    }
    let id = match flow_table::find(&key) {
        Some(flow) => unsafe { (*flow).backend },
        None => {
            let (service, _) = lookup::service_of_word(key_word(&key.service_key()))?;
            select::by_table(service, &key)
        }
    };
    let backend = backend_by_id(id)?;
    if backend.flags & BACKEND_F_DSR == 0 {
        return Some(icmp_nat::to_backend(ctx, id, &backend, proto));
    }
    if proto != PROTO_TCP {
        return None;
    }
    let inner = unsafe { Inner::of(p.add(ETH_LEN)) };
    Some(dsr::wrap_and_send(ctx, id, &backend, &key, &inner, true))
}
