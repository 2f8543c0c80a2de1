//! Backend -> client for an IPv6 TCP service: put the VIP back as source, note a FIN or
//! RST on the flow, forward, count. A reply without a return entry is not ours (`v6`
//! passes it).
use aya_ebpf::programs::XdpContext;
use lb_common::{
    counters::Reason,
    ipv6::NatReturn6,
    net::{TCP_FIN, TCP_RST},
};

use crate::{
    count,
    flow::{self, Side},
    flow6, forward6,
    maps::FLOWS6,
    parse6::Packet6,
    rewrite6, trace6,
};

/// A segment whose tuple has the return entry at `entry`.
#[inline(always)]
pub fn handle(ctx: &XdpContext, pkt: &Packet6, entry: *mut NatReturn6) -> u32 {
    if !pkt.hop_allows() {
        return count::pass(Reason::PassTtlExpired);
    }
    let nat = unsafe { *entry };
    if pkt.tcp_flags & (TCP_FIN | TCP_RST) != 0 {
        let key = flow6::forward_key(pkt, &nat.vip, nat.vport);
        if let Some(flow) = FLOWS6.get_ptr_mut(key) {
            flow::observe(flow, pkt.tcp_flags, Side::Backend);
        }
    }
    rewrite6::snat_tcp(pkt, &nat.vip, nat.vport);
    count::to_client(nat.service, nat.backend, pkt.frame_len);
    count::answer_from_backend(nat.backend, pkt.tcp_flags);
    let action = forward6::forward(ctx, pkt, unsafe {
        core::ptr::addr_of_mut!((*entry).nexthop)
    });
    trace6::to_client(pkt, nat.service, nat.backend, action)
}
