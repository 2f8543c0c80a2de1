//! Backend -> client for a UDP service: put the VIP back as source, forward, count. A
//! reply without a return entry is not ours (`udp::lb_udp` passes it).
use aya_ebpf::programs::XdpContext;
use lb_common::counters::Reason;

use crate::{
    count, datagram::Datagram, flow_table::ReturnEntry, forward::forward_frame, udp_rewrite,
};

/// A datagram whose tuple has the return entry at `entry`.
#[inline(always)]
pub fn handle(ctx: &XdpContext, dg: &Datagram, entry: ReturnEntry) -> u32 {
    if !dg.valid {
        return count::pass(Reason::PassMalformedUdp);
    }
    if !dg.ttl_allows() {
        return count::pass(Reason::PassTtlExpired);
    }
    let nat = entry.translation();
    udp_rewrite::snat(dg, nat.vip, nat.vport);
    count::to_client(nat.service, nat.backend, dg.frame_len);
    let cache = entry.route();
    forward_frame(ctx, dg.eth, dg.ip, dg.flow.proto, cache)
}
