//! ICMPv6 errors to an IPv6 DSR VIP about a backend's reply, as `icmp_to_backend` for
//! IPv4: the reply left the backend straight for the client, from the VIP, and a router
//! that could not forward it (a packet too big, which IPv6 routers never fragment around;
//! an unreachable client) answers the VIP. `icmp6_nat` finds the flow the quoted reply
//! belongs to (its entry, else the service's table) and, for a DSR backend, hands the
//! error to `lb_dsr6` like a client packet; here it is wrapped by the backend's mode and
//! sent to it, so the backend's socket learns the path MTU or the failure.
use aya_ebpf::programs::XdpContext;
use lb_common::{
    counters::Reason,
    ipv6::{FlowKey6, FAMILY_IPV6},
};

use crate::{
    count,
    dsr6::{self, inner_of},
    flow6::backend6,
    maps::DSR_HAND_OVER,
    v6::addr_at,
    wire,
};

const ETH_LEN: usize = 14;
/// The quoted IPv6 header (after the outer IPv6 and ICMPv6 headers).
const QUOTED: usize = ETH_LEN + 40 + 8;
/// The quoted transport header.
const QUOTED_L4: usize = QUOTED + 40;
/// Up to the quoted ports.
const NEEDED: usize = QUOTED_L4 + 4;

/// An ICMPv6 error `icmp6_nat` handed over with the backend of its flow.
#[inline(always)]
pub fn handle(ctx: &XdpContext) -> u32 {
    let Some(placed) = DSR_HAND_OVER.get(0).copied() else {
        return count::drop(Reason::DropDsrUnavailable);
    };
    let start = ctx.data();
    if start + NEEDED > ctx.data_end() {
        return count::pass(Reason::PassNotTcp);
    }
    let p = start as *const u8;
    // The quoted reply is VIP:port -> client; its flow (hashed into `gue`'s source port,
    // so the error takes its flow's queue) is that reversed.
    // SAFETY: every offset read is below `NEEDED` (checked above).
    let (key, inner) = unsafe {
        (
            FlowKey6 {
                src_addr: addr_at(start + QUOTED + 24),
                dst_addr: addr_at(start + QUOTED + 8),
                src_port: wire::get16(p.add(QUOTED_L4 + 2)),
                dst_port: wire::get16(p.add(QUOTED_L4)),
                proto: *p.add(QUOTED + 6),
                family: FAMILY_IPV6,
                _pad: [0; 2],
            },
            inner_of(p.add(ETH_LEN)),
        )
    };
    let Some((backend, addr)) = backend6(placed.backend) else {
        return count::drop(Reason::DropNoBackend);
    };
    dsr6::wrap_and_send(
        ctx,
        placed.backend,
        backend.flags,
        &addr,
        &key,
        &inner,
        true,
    )
}
