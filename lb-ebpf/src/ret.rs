//! Backend -> client on a tracked NAT flow: put the VIP back as source, forward, count.
use aya_ebpf::programs::XdpContext;
use lb_common::{counters::Reason, flow::NatReturn};

use crate::{count, forward, packet::Packet, rewrite};

#[inline(always)]
pub fn handle(ctx: &XdpContext, pkt: &Packet, nat: &NatReturn) -> u32 {
    if !forward::ttl_allows(pkt) {
        return count::pass(Reason::PassTtlExpired);
    }
    rewrite::snat(pkt, nat.vip, nat.vport);
    count::to_client(nat, pkt.frame_len);
    count::answer_from_backend(nat.backend, pkt.tcp_flags);
    forward::forward(ctx, pkt)
}
