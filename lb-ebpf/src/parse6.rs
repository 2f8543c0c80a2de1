//! Parse for `lb_v6`: Ethernet -> IPv6 -> TCP or UDP, with integer compares against
//! `data_end` before every access, into the view the IPv6 stages work on. `lb_xdp`
//! hands over only IPv6 frames the prefilter lets in (see `v6::screen`); a tail call
//! keeps only the context, so the frame is read again here.
//!
//! Which next headers are followed: none but the upper layer. TCP and UDP right after the
//! fixed header are parsed; a Fragment header passes as `pass_fragment` (as IPv4
//! fragments do); the other extension headers (hop-by-hop, routing, destination options,
//! AH, ESP, mobility, HIP, shim6, experimental) pass as `pass_ipv6_extension`; ICMPv6
//! and any other protocol pass as `pass_not_tcp`. Every one of them goes to the kernel
//! untouched: clients and backends of TCP and UDP services send none of them in
//! practice, and following a chain costs a bounded loop per packet.
use aya_ebpf::{helpers::generated::bpf_xdp_get_buff_len, programs::XdpContext};
use lb_common::{
    counters::Reason,
    encap::{PROTO_UDP, UDP_HEADER_LEN},
    ipv6::{FlowKey6, ETH_P_IPV6, FAMILY_IPV6},
    net::PROTO_TCP,
};
use network_types::eth::EthHdr;

use crate::{v6::addr_at, wire};

/// Pointers into the frame, bounds-checked: the Ethernet header, the fixed IPv6 header
/// after it, and the whole fixed TCP header (20 bytes) or UDP header (8 bytes) after that.
pub struct Packet6 {
    pub eth: *mut EthHdr,
    pub ip: *mut u8,
    pub l4: *mut u8,
    /// The 5-tuple in the packet's direction.
    pub flow: FlowKey6,
    /// TCP flag byte (0 for UDP).
    pub tcp_flags: u8,
    /// Whether a TCP segment carries data beyond its header.
    pub has_payload: bool,
    /// TCP: the data offset is sane (>= 5 words, inside the payload). UDP: the length
    /// field covers the header and stays inside the payload.
    pub valid: bool,
    /// Ethernet header plus the IPv6 header and payload (the frame without link
    /// padding), for byte counters.
    pub frame_len: u64,
}

const ETH_LEN: usize = EthHdr::LEN;
pub const IP6_LEN: usize = 40;
const TCP_LEN: usize = 20;
const L4_AT: usize = ETH_LEN + IP6_LEN;

/// IPv6 next-header value of the Fragment header.
const NH_FRAGMENT: u8 = 44;

#[inline(always)]
pub fn parse(ctx: &XdpContext) -> Result<Packet6, Reason> {
    let start = ctx.data();
    if start + L4_AT > ctx.data_end() {
        return Err(Reason::PassMalformedIpv6);
    }
    let eth = start as *mut EthHdr;
    let ip = (start + ETH_LEN) as *mut u8;
    // SAFETY: the Ethernet and fixed IPv6 headers are inside the frame (checked above).
    let (ether_type, version, payload_len, next, src, dst) = unsafe {
        (
            wire::get16((start + 12) as *const u8),
            *ip >> 4,
            u16::from_be(wire::get16(ip.add(4))) as usize,
            *ip.add(6),
            addr_at(start + ETH_LEN + 8),
            addr_at(start + ETH_LEN + 24),
        )
    };
    if ether_type != ETH_P_IPV6.to_be() {
        return Err(Reason::PassNotIpv4);
    }
    if version != 6 {
        return Err(Reason::PassMalformedIpv6);
    }
    let l4_len = match next {
        PROTO_TCP => TCP_LEN,
        PROTO_UDP => UDP_HEADER_LEN,
        NH_FRAGMENT => return Err(Reason::PassFragment),
        nh if is_extension(nh) => return Err(Reason::PassIpv6Extension),
        _ => return Err(Reason::PassNotTcp),
    };
    let malformed = if next == PROTO_TCP {
        Reason::PassMalformedTcp
    } else {
        Reason::PassMalformedUdp
    };
    // Constant offsets only: without CAP_PERFMON the verifier refuses a variable added
    // to a packet pointer. Every L4 header here is at least UDP's 8 bytes.
    let end = ctx.data_end();
    if start + L4_AT + UDP_HEADER_LEN > end || (next == PROTO_TCP && start + L4_AT + TCP_LEN > end)
    {
        // The frame ends inside the L4 header: the IPv6 header lied if it claims one.
        return Err(if payload_len >= l4_len {
            Reason::PassMalformedIpv6
        } else {
            malformed
        });
    }
    if payload_len < l4_len {
        return Err(malformed);
    }
    // Ethernet may pad short frames, so the payload may end before the frame, never
    // after; as in `parse::tcp_header`, the frame length comes from the helper (the
    // verifier refuses `data_end - data` without CAP_PERFMON).
    if payload_len > l4_len {
        let frame_len = unsafe { bpf_xdp_get_buff_len(ctx.ctx) } as usize;
        if L4_AT + payload_len > frame_len {
            return Err(Reason::PassMalformedIpv6);
        }
    }
    let l4 = (start + L4_AT) as *mut u8;
    // SAFETY: the L4 header (20 bytes for TCP, 8 for UDP) is inside the frame.
    let (src_port, dst_port, word6) = unsafe {
        (
            wire::get16(l4),
            wire::get16(l4.add(2)),
            u16::from_be(wire::get16(l4.add(4))) as usize,
        )
    };
    let (tcp_flags, has_payload, valid) = if next == PROTO_TCP {
        // SAFETY: bytes 12 and 13 of the 20-byte TCP header.
        let (doff, flags) = unsafe { (((*l4.add(12)) >> 4) as usize * 4, *l4.add(13)) };
        (
            flags,
            payload_len > doff,
            doff >= TCP_LEN && doff <= payload_len,
        )
    } else {
        // UDP's length field (bytes 4..6), which the checksum and the kernel trust.
        (0, false, word6 >= UDP_HEADER_LEN && word6 <= payload_len)
    };
    Ok(Packet6 {
        eth,
        ip,
        l4,
        flow: FlowKey6 {
            src_addr: src,
            dst_addr: dst,
            src_port,
            dst_port,
            proto: next,
            family: FAMILY_IPV6,
            _pad: [0; 2],
        },
        tcp_flags,
        has_payload,
        valid,
        frame_len: (L4_AT + payload_len) as u64,
    })
}

/// Whether next header `nh` is an extension header other than Fragment (IANA "IPv6
/// Extension Header Types": hop-by-hop 0, routing 43, destination options 60, AH 51, ESP
/// 50, mobility 135, HIP 139, shim6 140, experimental 253 and 254).
#[inline(always)]
fn is_extension(nh: u8) -> bool {
    matches!(nh, 0 | 43 | 60 | 51 | 50 | 135 | 139 | 140 | 253 | 254)
}

impl Packet6 {
    /// A router must not forward a packet whose hop limit would reach zero; the kernel
    /// answers with the ICMPv6 time-exceeded, so such packets are passed untouched.
    #[inline(always)]
    pub fn hop_allows(&self) -> bool {
        // SAFETY: byte 7 of the fixed header `parse` proved inside the frame.
        unsafe { *self.ip.add(7) > 1 }
    }
}
