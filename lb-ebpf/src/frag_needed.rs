//! The ICMP "fragmentation needed" (type 3 code 4, RFC 1191) the node answers a client's
//! don't-fragment packet with when that packet would exceed the egress MTU once wrapped
//! for its DSR backend: the safety net beside the MSS clamp on the backends (in DSR the
//! SYN-ACK never crosses the node, so the node cannot clamp it). The frame becomes the
//! answer in place and goes back out of the NIC it came in on, MACs swapped: from the VIP
//! (an address the client is talking to; Linux matches the error to its socket by the
//! quoted tuple), quoting the packet's IP header and first 8 bytes (RFC 792).
use aya_ebpf::{
    bindings::xdp_action,
    helpers::generated::{bpf_xdp_adjust_head, bpf_xdp_adjust_tail, bpf_xdp_get_buff_len},
    programs::XdpContext,
};
use lb_common::{
    checksum::fold,
    counters::Reason,
    encap::{
        ipv4_header_checksum, Ipv4Header, FRAG_NEEDED_IP_LEN, ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED,
        ICMP_HEADER_LEN, IPV4_HEADER_LEN, OUTER_TTL, PROTO_ICMP,
    },
    net::ETH_P_IPV4,
};

use crate::{count, dsr::write_ipv4, wire};

const ETH_LEN: usize = 14;
/// The answer's frame: Ethernet, IPv4, ICMP, the quote.
const FRAME_LEN: usize = ETH_LEN + FRAG_NEEDED_IP_LEN;
/// What goes in front of the quote (the original IPv4 header, which stays where it is
/// once the frame's start moves back by this much).
const GROW: usize = IPV4_HEADER_LEN + ICMP_HEADER_LEN;

/// Turns the frame (a client's IPv4/TCP packet, its TCP header proven inside) into the
/// fragmentation-needed advertising `mtu` (host order) and sends it back.
#[inline(always)]
pub fn answer(ctx: &XdpContext, mtu: u16) -> u32 {
    let start = ctx.data();
    if start + ETH_LEN + IPV4_HEADER_LEN + 8 > ctx.data_end() {
        return count::drop(Reason::DropDsrTooBig);
    }
    let (client_mac, our_mac, client, vip) = unsafe {
        let p = start as *const u8;
        (
            [
                wire::get16(p.add(6)),
                wire::get16(p.add(8)),
                wire::get16(p.add(10)),
            ],
            [wire::get16(p), wire::get16(p.add(2)), wire::get16(p.add(4))],
            wire::get32(p.add(ETH_LEN + 12)),
            wire::get32(p.add(ETH_LEN + 16)),
        )
    };
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(GROW as i32)) } != 0 {
        return count::drop(Reason::DropDsrTooBig);
    }
    // Cut what follows the quote.
    let len = unsafe { bpf_xdp_get_buff_len(ctx.ctx) } as i32;
    if unsafe { bpf_xdp_adjust_tail(ctx.ctx, FRAME_LEN as i32 - len) } != 0 {
        return count::drop(Reason::DropDsrTooBig);
    }
    let start = ctx.data();
    if start + FRAME_LEN > ctx.data_end() {
        return count::drop(Reason::DropDsrTooBig);
    }
    let p = start as *mut u8;
    let mut ip = Ipv4Header {
        vihl: 0x45,
        tos: 0,
        tot_len: (FRAG_NEEDED_IP_LEN as u16).to_be(),
        id: 0,
        frag_off: 0,
        ttl: OUTER_TTL,
        proto: PROTO_ICMP,
        check: 0,
        src_addr: vip,
        dst_addr: client,
    };
    ip.check = ipv4_header_checksum(&ip);
    unsafe {
        for (i, word) in client_mac.iter().enumerate() {
            wire::set16(p.add(2 * i), *word);
        }
        for (i, word) in our_mac.iter().enumerate() {
            wire::set16(p.add(6 + 2 * i), *word);
        }
        wire::set16(p.add(12), ETH_P_IPV4.to_be());
        write_ipv4(p.add(ETH_LEN), &ip);
        let icmp = p.add(ETH_LEN + IPV4_HEADER_LEN);
        wire::set16(
            icmp,
            (ICMP_DEST_UNREACH as u16) | (ICMP_FRAG_NEEDED as u16) << 8,
        );
        wire::set16(icmp.add(2), 0);
        wire::set16(icmp.add(4), 0);
        wire::set16(icmp.add(6), mtu.to_be());
        wire::set16(icmp.add(2), icmp_checksum(icmp));
    }
    count::reason(Reason::TxFragNeeded);
    xdp_action::XDP_TX
}

/// The checksum of the ICMP message at `icmp` (header and quote, checksum field 0), as
/// the field holds it.
#[inline(always)]
unsafe fn icmp_checksum(icmp: *const u8) -> u16 {
    let mut sum: u64 = 0;
    // 18 words at constant offsets.
    let mut i = 0;
    while i < ICMP_HEADER_LEN + 28 {
        sum += wire::get16(icmp.add(i)) as u64;
        i += 2;
    }
    !fold(sum)
}
