//! The ICMPv6 "packet too big" (type 2, RFC 4443 3.2) the node answers a client's IPv6
//! packet with when that packet would exceed the egress MTU once wrapped for its DSR
//! backend: IPv6 routers never fragment (RFC 8200 5), so this is the only way the client
//! learns to send smaller, beside the MSS clamp on the backends. As `frag_needed` does
//! for IPv4, the frame becomes the answer in place and goes back out of the NIC it came in
//! on, MACs swapped: from the VIP (Linux matches the error to its socket by the quoted
//! tuple), quoting the packet's IPv6 header and first 8 bytes, what a host needs to find
//! the connection (RFC 4443 asks for as much as fits in 1280 bytes; a fixed quote keeps
//! the checksum a loop of constant length).
use aya_ebpf::{
    bindings::xdp_action,
    helpers::generated::{bpf_xdp_adjust_head, bpf_xdp_adjust_tail, bpf_xdp_get_buff_len},
    programs::XdpContext,
};
use lb_common::{
    checksum::fold,
    counters::Reason,
    encap::OUTER_TTL,
    encap6::{
        ICMP6_HEADER_LEN, ICMP6_PACKET_TOO_BIG, ICMP6_QUOTE_LEN, IPV6_HEADER_LEN,
        PACKET_TOO_BIG_IP_LEN,
    },
    ipv6::{ETH_P_IPV6, PROTO_ICMPV6},
};

use crate::{count, dsr6::write_addr, v6::addr_at, wire};

const ETH_LEN: usize = 14;
/// The answer's frame: Ethernet, IPv6, ICMPv6, the quote.
const FRAME_LEN: usize = ETH_LEN + PACKET_TOO_BIG_IP_LEN;
/// What goes in front of the quote (the original IPv6 header, which stays where it is
/// once the frame's start moves back by this much).
const GROW: usize = IPV6_HEADER_LEN + ICMP6_HEADER_LEN;
/// The ICMPv6 message's length: header and quote.
const MESSAGE_LEN: usize = ICMP6_HEADER_LEN + ICMP6_QUOTE_LEN;

/// Turns the frame (a client's IPv6 packet, 8 bytes of its upper-layer header proven
/// inside) into the packet too big advertising `mtu` (host order) and sends it back.
#[inline(always)]
pub fn answer(ctx: &XdpContext, mtu: u32) -> u32 {
    let start = ctx.data();
    if start + ETH_LEN + ICMP6_QUOTE_LEN > ctx.data_end() {
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
            addr_at(start + ETH_LEN + 8),
            addr_at(start + ETH_LEN + 24),
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
    unsafe {
        for (i, word) in client_mac.iter().enumerate() {
            wire::set16(p.add(2 * i), *word);
        }
        for (i, word) in our_mac.iter().enumerate() {
            wire::set16(p.add(6 + 2 * i), *word);
        }
        wire::set16(p.add(12), ETH_P_IPV6.to_be());
        let ip = p.add(ETH_LEN);
        wire::set32(ip, 0x6000_0000u32.to_be());
        wire::set16(ip.add(4), (MESSAGE_LEN as u16).to_be());
        wire::set16(ip.add(6), u16::from_ne_bytes([PROTO_ICMPV6, OUTER_TTL]));
        write_addr(ip.add(8), &vip);
        write_addr(ip.add(24), &client);
        let icmp = ip.add(IPV6_HEADER_LEN);
        wire::set16(icmp, u16::from_ne_bytes([ICMP6_PACKET_TOO_BIG, 0]));
        wire::set16(icmp.add(2), 0);
        wire::set32(icmp.add(4), mtu.to_be());
        wire::set16(icmp.add(2), icmp6_checksum(ip));
    }
    count::reason(Reason::TxPacketTooBig);
    xdp_action::XDP_TX
}

/// The checksum of the ICMPv6 message after the IPv6 header at `ip` (checksum field 0)
/// over its pseudo-header (RFC 4443 2.3: both addresses, the message length, next header
/// 58), as the field holds it. The sums of natively loaded wire-order words give the
/// wire-order checksum (RFC 1071 2(B)).
#[inline(always)]
unsafe fn icmp6_checksum(ip: *const u8) -> u16 {
    let mut sum: u64 =
        ((MESSAGE_LEN as u16).to_be() as u64) + ((PROTO_ICMPV6 as u16).to_be() as u64);
    // Both addresses, then the message: words at constant offsets.
    let mut i = 8;
    while i < IPV6_HEADER_LEN + MESSAGE_LEN {
        sum += wire::get16(ip.add(i)) as u64;
        i += 2;
    }
    !fold(sum)
}
