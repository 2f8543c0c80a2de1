//! The SYN proxy (see `lb_common::syn_proxy`): `lb_proxy`'s three handshake stages, and
//! the translation of a proxied flow's established packets in `lb_xdp`.
//!
//! - a client's SYN ([`answer_syn`]): answered with XDP_TX by a SYN-ACK whose sequence
//!   number is the kernel's SYN cookie for it; nothing is recorded.
//! - a client's ACK without a flow entry ([`open`]): if its acknowledgement number is a
//!   valid cookie + 1, the flow is recorded on the backend the service's policy picks,
//!   and the packet becomes the SYN to that backend, with the client's initial sequence
//!   number; anything else is dropped.
//! - the backend's SYN-ACK ([`backend_syn_ack`]): it fixes the flow's sequence offset,
//!   and becomes the ACK the backend expects (XDP_TX back to it); the client, which has
//!   had the cookie's SYN-ACK, never sees it.
//!
//! `lb_edge` hands a proxied service's packets without a flow entry here after its
//! checks, `lb_reply` a proxied flow's SYN-ACK; both are tail calls, so this program has a
//! stack of its own. The established path translates in [`to_backend`] and
//! [`to_client`], BPF functions of their own (`inline(never)`) as `lb_xdp`'s frame has
//! little room.
use aya_ebpf::{
    bindings::{iphdr, tcphdr, xdp_action, BPF_ANY},
    helpers::generated::{
        bpf_tcp_raw_check_syncookie_ipv4, bpf_tcp_raw_gen_syncookie_ipv4, bpf_xdp_adjust_head,
        bpf_xdp_get_buff_len,
    },
    programs::XdpContext,
};
use lb_common::{
    checksum::replace4,
    counters::Reason,
    flow::{FlowKey, FlowTarget, FLOW_F_COUNTED, FLOW_F_ESTABLISHED},
    limits::PROGRAMS_SLOT_PROXY,
    net::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    syn_proxy::{
        ipv4_checksum, tcp_checksum, SynProxyFlow, FLOW_F_SYN_PROXY, NAT_F_SYN_PROXY,
        SYN_PROXY_MSS, SYN_PROXY_OPEN, SYN_PROXY_OPENING, SYN_PROXY_WINDOW,
    },
};
use network_types::tcp::TcpHdr;

use crate::{
    count, flow, flow_table, forward,
    lookup::{self, backend_by_id},
    maps::{NEXTHOPS, PROGRAMS, SYN_PROXY_FLOWS, SYN_PROXY_SYNS},
    packet::Packet,
    parse, return_entry, select, wire,
};

/// Tail-calls `lb_proxy` with the packet. Returns only if the call failed.
#[inline(always)]
pub fn hand_over(ctx: &XdpContext) {
    unsafe { PROGRAMS.tail_call(ctx, PROGRAMS_SLOT_PROXY) };
}

/// `lb_edge`'s hand-over of service `service`'s packet: a SYN is counted for the
/// service first (what `syn_proxy: auto` reads while the proxy is on).
#[inline(always)]
pub fn hand_over_checked(ctx: &XdpContext, pkt: &Packet, service: u32) {
    if pkt.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
        if let Some(c) = SYN_PROXY_SYNS.get_ptr_mut(service) {
            unsafe { *c += 1 };
        }
    }
    hand_over(ctx);
}

/// Whether a return entry belongs to a flow opened through the proxy.
#[inline(always)]
pub fn is_proxied(nat: &crate::flow_table::ReturnEntry) -> bool {
    nat.flags() & NAT_F_SYN_PROXY != 0
}

/// `lb_proxy`'s work on a packet handed over by `lb_edge` or `lb_reply`. Each stage is
/// a BPF function of its own (`inline(never)`), so that only one stage's locals are on
/// the stack at a time (see docs/architecture.md, The stack).
#[inline(always)]
pub fn run(ctx: &XdpContext) -> u32 {
    let pkt = match parse::addresses(ctx).and_then(|at| parse::tcp(ctx, at)) {
        Ok(pkt) => pkt,
        Err(reason) => return count::pass(reason),
    };
    if !pkt.tcp_valid {
        return count::drop(Reason::DropMalformedTcp);
    }
    let flags = pkt.tcp_flags & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN);
    if flags == TCP_SYN | TCP_ACK {
        return backend_syn_ack(ctx, &pkt);
    }
    if flags == TCP_SYN {
        return answer_syn(ctx, &pkt);
    }
    if flags == TCP_ACK {
        return open(ctx, &pkt);
    }
    // A RST, FIN or SYN with other flags without a flow entry: no flow of ours.
    count::drop(Reason::DropSynCookieInvalid)
}

/// Answers a client's SYN with a SYN-ACK carrying its cookie, in place.
#[inline(never)]
fn answer_syn(ctx: &XdpContext, pkt: &Packet) -> u32 {
    let Some(cookie) = cookie_of(ctx, pkt) else {
        return count::drop(Reason::DropMalformedTcp);
    };
    let (dst_mac, src_mac) = unsafe { macs(pkt.eth as *const u8) };
    let seg = Segment {
        src: pkt.flow.dst_addr,
        dst: pkt.flow.src_addr,
        sport: pkt.flow.dst_port,
        dport: pkt.flow.src_port,
        seq: cookie,
        ack: pkt.seq().wrapping_add(1),
        flags: TCP_SYN | TCP_ACK,
        window: SYN_PROXY_WINDOW,
    };
    if write::<true>(ctx, &seg, Some((src_mac, dst_mac))).is_none() {
        return count::drop(Reason::DropMalformedTcp);
    }
    count::reason(Reason::TxSynCookie);
    xdp_action::XDP_TX
}

/// The kernel's SYN cookie for a SYN. The helper wants the TCP header's whole length,
/// options included, and the verifier a constant bound for it: one branch per length.
#[inline(always)]
fn cookie_of(ctx: &XdpContext, pkt: &Packet) -> Option<u32> {
    let doff = unsafe { *(pkt.tcp as *const u8).add(12) } >> 4;
    let value = match doff {
        5 => cookie_within::<20>(ctx, pkt),
        6 => cookie_within::<24>(ctx, pkt),
        7 => cookie_within::<28>(ctx, pkt),
        8 => cookie_within::<32>(ctx, pkt),
        9 => cookie_within::<36>(ctx, pkt),
        10 => cookie_within::<40>(ctx, pkt),
        11 => cookie_within::<44>(ctx, pkt),
        12 => cookie_within::<48>(ctx, pkt),
        13 => cookie_within::<52>(ctx, pkt),
        14 => cookie_within::<56>(ctx, pkt),
        15 => cookie_within::<60>(ctx, pkt),
        _ => return None,
    }?;
    // The low 32 bits are the cookie, the high ones the MSS it encodes; negative is an
    // error (a length that is not the data offset's).
    (value >= 0).then_some(value as u32)
}

#[inline(always)]
fn cookie_within<const LEN: usize>(ctx: &XdpContext, pkt: &Packet) -> Option<i64> {
    if pkt.tcp as usize + LEN > ctx.data_end() {
        return None;
    }
    Some(unsafe {
        bpf_tcp_raw_gen_syncookie_ipv4(pkt.ip as *mut iphdr, pkt.tcp as *mut tcphdr, LEN as u32)
    })
}

/// A client's ACK without a flow entry: if it proves its cookie, the flow is recorded
/// and the packet becomes the SYN to the backend; otherwise it is dropped.
#[inline(never)]
fn open(ctx: &XdpContext, pkt: &Packet) -> u32 {
    let valid =
        unsafe { bpf_tcp_raw_check_syncookie_ipv4(pkt.ip as *mut iphdr, pkt.tcp as *mut tcphdr) }
            == 0;
    if !valid {
        return count::drop(Reason::DropSynCookieInvalid);
    }
    let Some((service, _)) = lookup::service_of(pkt) else {
        return count::drop(Reason::DropSynCookieInvalid);
    };
    let id = select::pick(service, &pkt.flow);
    let Some(backend) = backend_by_id(id) else {
        return count::drop(Reason::DropNoBackend);
    };
    let client_isn = pkt.seq().wrapping_sub(1);
    let window = u16::from_be(unsafe { wire::get16((pkt.tcp as *const u8).add(14)) });
    let target = FlowTarget {
        backend: id,
        service: service.id(),
        state: FLOW_F_COUNTED | FLOW_F_ESTABLISHED | FLOW_F_SYN_PROXY,
        last_seen: lookup::now_secs(),
        _pad: 0,
    };
    let proxy = SynProxyFlow::opening(pkt.ack_seq().wrapping_sub(1), client_isn, window);
    if SYN_PROXY_FLOWS
        .insert(pkt.flow, proxy, BPF_ANY as u64)
        .is_err()
        || flow_table::record(&pkt.flow, &target, false).is_err()
    {
        // Both evict (LRU maps behind the slots) rather than refuse; the client
        // retransmits.
        return count::drop(Reason::DropSynProxyOpening);
    }
    flow::opened(id);
    let back = pkt.flow.reply_from(backend.addr, backend.port);
    return_entry::insert(back, pkt.flow.dst_addr, pkt.flow.dst_port, &target);
    let seg = Segment {
        src: pkt.flow.src_addr,
        dst: backend.addr,
        sport: pkt.flow.src_port,
        dport: backend.port,
        seq: client_isn,
        ack: 0,
        flags: TCP_SYN,
        window,
    };
    // The forward stage writes the MACs of the route to the backend.
    let Some(frame) = write::<true>(ctx, &seg, None) else {
        return count::drop(Reason::DropMalformedTcp);
    };
    let syn = Packet {
        eth: frame as *mut _,
        ip: unsafe { frame.add(ETH_LEN) } as *mut _,
        tcp: unsafe { frame.add(ETH_LEN + IP_LEN) } as *mut _,
        flow: FlowKey {
            dst_addr: backend.addr,
            dst_port: backend.port,
            ..pkt.flow
        },
        tcp_flags: TCP_SYN,
        has_payload: false,
        tcp_valid: true,
        frame_len: LEN_WITH_MSS as u64,
    };
    count::to_backend(&target, LEN_WITH_MSS as u64, true);
    count::attempt_to_backend(id, TCP_SYN);
    match NEXTHOPS.get_ptr_mut(id) {
        Some(cache) => forward::forward(ctx, &syn, cache),
        None => forward::forward(ctx, &syn, core::ptr::null_mut()),
    }
}

/// A proxied flow's SYN-ACK from its backend: it fixes the sequence offset and becomes
/// the ACK the backend expects, sent back to it.
#[inline(never)]
fn backend_syn_ack(ctx: &XdpContext, pkt: &Packet) -> u32 {
    let Some(nat) = lookup::return_flow_of(pkt) else {
        return count::pass(Reason::PassNoService);
    };
    let nat = nat.translation();
    let (vip, vport, backend) = (nat.vip, nat.vport, nat.backend);
    let key = pkt.flow.forward_of_reply(vip, vport);
    let Some(entry) = SYN_PROXY_FLOWS.get_ptr_mut(key) else {
        return count::drop(Reason::DropSynCookieInvalid);
    };
    let mut proxy = unsafe { *entry };
    // Only the answer to the proxy's SYN; a retransmitted one (the ACK was lost) carries
    // the same initial sequence number, so the offset stays.
    if pkt.ack_seq() != proxy.client_isn.wrapping_add(1) {
        return count::drop(Reason::DropSynCookieInvalid);
    }
    let backend_isn = pkt.seq();
    if proxy.state == SYN_PROXY_OPENING {
        proxy.open(backend_isn);
        unsafe { *entry = proxy };
    }
    count::answer_from_backend(backend, pkt.tcp_flags);
    let (dst_mac, src_mac) = unsafe { macs(pkt.eth as *const u8) };
    let seg = Segment {
        src: pkt.flow.dst_addr,
        dst: pkt.flow.src_addr,
        sport: pkt.flow.dst_port,
        dport: pkt.flow.src_port,
        seq: proxy.client_isn.wrapping_add(1),
        ack: backend_isn.wrapping_add(1),
        flags: TCP_ACK,
        window: proxy.client_window,
    };
    if write::<false>(ctx, &seg, Some((src_mac, dst_mac))).is_none() {
        return count::drop(Reason::DropMalformedTcp);
    }
    count::reason(Reason::TxSynProxyAck);
    xdp_action::XDP_TX
}

/// A proxied flow's client packet on its way to the backend: its acknowledgement number
/// moved into the backend's space. False: the backend has not answered yet, or the
/// flow's proxy state is gone, so it cannot be translated (dropped; the client
/// retransmits, or gives up on a lost flow). A BPF function of its own, so its locals
/// take a frame of their own rather than room in `lb_xdp`'s.
#[inline(never)]
pub fn to_backend(tcp: *mut TcpHdr, flow: &FlowKey) -> bool {
    let Some(proxy) = (unsafe { SYN_PROXY_FLOWS.get(flow) }).copied() else {
        return false;
    };
    if proxy.state != SYN_PROXY_OPEN {
        return false;
    }
    let p = tcp as *mut u8;
    if unsafe { *p.add(13) } & TCP_ACK == 0 {
        return true;
    }
    unsafe {
        let old = wire::get32(p.add(8));
        let new = proxy.to_backend_ack(u32::from_be(old)).to_be();
        wire::set32(p.add(8), new);
        wire::set16(p.add(16), replace4(wire::get16(p.add(16)), old, new));
    }
    true
}

/// A proxied flow's backend packet on its way to the client (`flow` is backend ->
/// client): its sequence number moved into the cookie's space. False: the flow's proxy
/// state is gone (dropped). A BPF function of its own, as [`to_backend`].
#[inline(never)]
pub fn to_client(tcp: *mut TcpHdr, flow: &FlowKey, vip: u32, vport: u16) -> bool {
    let key = flow.forward_of_reply(vip, vport);
    let Some(proxy) = (unsafe { SYN_PROXY_FLOWS.get(key) }).copied() else {
        return false;
    };
    let p = tcp as *mut u8;
    unsafe {
        let old = wire::get32(p.add(4));
        let new = proxy.to_client_seq(u32::from_be(old)).to_be();
        wire::set32(p.add(4), new);
        wire::set16(p.add(16), replace4(wire::get16(p.add(16)), old, new));
    }
    true
}

const ETH_LEN: usize = 14;
const IP_LEN: usize = 20;
const TCP_LEN: usize = 20;
/// A segment with the MSS option (SYN, SYN-ACK).
const LEN_WITH_MSS: usize = ETH_LEN + IP_LEN + TCP_LEN + 4;
/// A segment without options (ACK).
const LEN_PLAIN: usize = ETH_LEN + IP_LEN + TCP_LEN;

/// The header fields of a segment the proxy writes. Addresses and ports in wire order,
/// sequence numbers and window in host order.
struct Segment {
    src: u32,
    dst: u32,
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
}

/// The destination and source MAC addresses of a frame, as 16-bit words.
#[inline(always)]
unsafe fn macs(eth: *const u8) -> ([u16; 3], [u16; 3]) {
    (
        [
            wire::get16(eth),
            wire::get16(eth.add(2)),
            wire::get16(eth.add(4)),
        ],
        [
            wire::get16(eth.add(6)),
            wire::get16(eth.add(8)),
            wire::get16(eth.add(10)),
        ],
    )
}

/// Makes the frame exactly one segment long (moving its start: XDP always has headroom,
/// not always tailroom) and writes the Ethernet, IPv4 and TCP headers of `seg`, with the
/// MSS option if `MSS`, and the destination and source MACs `macs` if given (else the
/// forward stage writes them). Whatever the frame held is overwritten, so its fields must
/// have been read before. The frame's start, or `None` if it could not be resized.
#[inline(always)]
fn write<const MSS: bool>(
    ctx: &XdpContext,
    seg: &Segment,
    macs: Option<([u16; 3], [u16; 3])>,
) -> Option<*mut u8> {
    let len = if MSS { LEN_WITH_MSS } else { LEN_PLAIN };
    let old_len = unsafe { bpf_xdp_get_buff_len(ctx.ctx) } as i32;
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, old_len - len as i32) } != 0 {
        return None;
    }
    let start = ctx.data();
    if start + len > ctx.data_end() {
        return None;
    }
    let f = start as *mut u8;
    let tcp_len = (len - ETH_LEN - IP_LEN) as u16;
    unsafe {
        if let Some((dst, src)) = macs {
            wire::set16(f, dst[0]);
            wire::set16(f.add(2), dst[1]);
            wire::set16(f.add(4), dst[2]);
            wire::set16(f.add(6), src[0]);
            wire::set16(f.add(8), src[1]);
            wire::set16(f.add(10), src[2]);
        }
        wire::set16(f.add(12), 0x0800u16.to_be());
        let ip = f.add(ETH_LEN);
        let ip_words = [
            u16::from_ne_bytes([0x45, 0]),
            (IP_LEN as u16 + tcp_len).to_be(),
            0,
            // Don't fragment.
            u16::from_ne_bytes([0x40, 0]),
            u16::from_ne_bytes([64, lb_common::net::PROTO_TCP]),
        ];
        let mut ip_sum = 0u64;
        for (i, w) in ip_words.iter().enumerate() {
            wire::set16(ip.add(2 * i), *w);
            ip_sum += *w as u64;
        }
        wire::set32(ip.add(12), seg.src);
        wire::set32(ip.add(16), seg.dst);
        ip_sum += halves(seg.src) + halves(seg.dst);
        wire::set16(ip.add(10), ipv4_checksum(ip_sum));
        let tcp = ip.add(IP_LEN);
        let (seq, ack) = (seg.seq.to_be(), seg.ack.to_be());
        let doff = (tcp_len / 4) as u8;
        let fixed = [
            seg.sport,
            seg.dport,
            seq as u16,
            (seq >> 16) as u16,
            ack as u16,
            (ack >> 16) as u16,
            u16::from_ne_bytes([doff << 4, seg.flags]),
            seg.window.to_be(),
            0,
            0,
        ];
        let mut sum = 0u64;
        for (i, w) in fixed.iter().enumerate() {
            wire::set16(tcp.add(2 * i), *w);
            sum += *w as u64;
        }
        if MSS {
            let option = [u16::from_ne_bytes([2, 4]), SYN_PROXY_MSS.to_be()];
            wire::set16(tcp.add(20), option[0]);
            wire::set16(tcp.add(22), option[1]);
            sum += option[0] as u64 + option[1] as u64;
        }
        wire::set16(tcp.add(16), tcp_checksum(seg.src, seg.dst, tcp_len, sum));
    }
    Some(f)
}

/// The two 16-bit halves of a wire-order word, summed.
#[inline(always)]
fn halves(v: u32) -> u64 {
    (v & 0xffff) as u64 + (v >> 16) as u64
}
