//! Backend -> client on a tracked NAT flow: put the VIP back as source, forward, count.
use aya_ebpf::programs::XdpContext;
use lb_common::{
    counters::Reason,
    flow::{FlowKey, NatReturn},
    net::{TCP_FIN, TCP_RST},
};

use crate::{
    count,
    flow_state::{self, Side},
    forward,
    maps::FLOWS,
    packet::Packet,
    rewrite,
};

#[inline(always)]
pub fn handle(ctx: &XdpContext, pkt: &Packet, entry: *mut NatReturn) -> u32 {
    if !forward::ttl_allows(pkt) {
        return count::pass(Reason::PassTtlExpired);
    }
    let nat = unsafe { *entry };
    if pkt.tcp_flags & (TCP_FIN | TCP_RST) != 0 {
        observe_close(pkt, &nat);
    }
    rewrite::snat(pkt, nat.vip, nat.vport);
    count::to_client(&nat, pkt.frame_len);
    count::answer_from_backend(nat.backend, pkt.tcp_flags);
    forward::forward(ctx, pkt, unsafe {
        core::ptr::addr_of_mut!((*entry).nexthop)
    })
}

/// A FIN or RST from the backend closes (half of) the flow, whose state lives in the
/// forward entry: client -> VIP.
#[inline(always)]
fn observe_close(pkt: &Packet, nat: &NatReturn) {
    let forward = FlowKey {
        src_addr: pkt.flow.dst_addr,
        dst_addr: nat.vip,
        src_port: pkt.flow.dst_port,
        dst_port: nat.vport,
        proto: pkt.flow.proto,
        family: pkt.flow.family,
        _pad: [0; 2],
    };
    if let Some(entry) = FLOWS.get_ptr_mut(forward) {
        flow_state::observe(entry, pkt.tcp_flags, Side::Backend);
    }
}
