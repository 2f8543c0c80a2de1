//! Parse: Ethernet -> IPv4 (no options, not fragmented) -> TCP, with integer compares
//! against `data_end` before every access. Anything not understood is returned as the
//! reason to pass it to the kernel untouched.
//!
//! Two stages: [`addresses`] reads only what the address prefilter needs, so traffic that
//! is neither to a VIP nor from a backend (most of what a gateway forwards) is passed
//! after a handful of loads; [`tcp`] validates the rest for packets that may be ours.
use lb_common::{
    counters::Reason,
    flow::FlowKey,
    net::{ETH_P_IPV4, FAMILY_IPV4, PROTO_TCP},
};
use network_types::{eth::EthHdr, ip::Ipv4Hdr, tcp::TcpHdr};

use crate::{frame::Frame, packet::Packet, wire};

/// A pointer to a `T` at `offset` from the start of the frame, if all of it is inside.
#[inline(always)]
fn ptr_at<T>(ctx: &impl Frame, offset: usize) -> Option<*mut T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *mut T)
}

const IP_MF: u16 = 0x2000;
const IP_OFFSET_MASK: u16 = 0x1fff;

/// An IPv4 frame whose fixed header is inside the frame; nothing else checked yet.
pub struct Addresses {
    eth: *mut EthHdr,
    ip: *mut Ipv4Hdr,
    /// Wire order.
    pub src: u32,
    /// Wire order.
    pub dst: u32,
}

#[inline(always)]
pub fn addresses(ctx: &impl Frame) -> Result<Addresses, Reason> {
    let eth: *mut EthHdr = ptr_at(ctx, 0).ok_or(Reason::PassShortEthernet)?;
    if unsafe { (*eth).ether_type } != ETH_P_IPV4.to_be() {
        return Err(Reason::PassNotIpv4);
    }
    let ip: *mut Ipv4Hdr = ptr_at(ctx, EthHdr::LEN).ok_or(Reason::PassMalformedIpv4)?;
    let (src, dst) = unsafe {
        let raw = ip as *const u8;
        (wire::get32(raw.add(12)), wire::get32(raw.add(16)))
    };
    Ok(Addresses { eth, ip, src, dst })
}

impl Addresses {
    /// The IP protocol number (the fixed header was proven inside the frame).
    #[inline(always)]
    pub fn proto(&self) -> u8 {
        unsafe { (*self.ip).proto }
    }
}

/// The rest of the packet for a packet that may be ours: a plain IPv4 header carrying
/// TCP ([`ipv4`]), a whole TCP header inside the frame ([`tcp_header`]), and the flow.
#[inline(always)]
pub fn tcp(ctx: &impl Frame, at: Addresses) -> Result<Packet, Reason> {
    let ip = at.ip;
    let (tot_len, proto) = ipv4(ip)?;
    let tcp = tcp_header(ctx, tot_len)?;
    let l4_len = tot_len - Ipv4Hdr::LEN;
    let (doff_flags, src_port, dst_port) = unsafe {
        let raw = tcp as *const u8;
        (
            [*raw.add(12), *raw.add(13)],
            wire::get16(raw),
            wire::get16(raw.add(2)),
        )
    };
    let doff = (doff_flags[0] >> 4) as usize * 4;
    Ok(Packet {
        eth: at.eth,
        ip,
        tcp,
        flow: FlowKey {
            src_addr: at.src,
            dst_addr: at.dst,
            src_port,
            dst_port,
            proto,
            family: FAMILY_IPV4,
            _pad: [0; 2],
        },
        tcp_flags: doff_flags[1],
        has_payload: l4_len > doff,
        tcp_valid: doff >= TcpHdr::LEN && doff <= l4_len,
        frame_len: (EthHdr::LEN + tot_len) as u64,
    })
}

/// The IPv4 header's total length and protocol, once it is version 4, without options,
/// not a fragment, and TCP.
#[inline(always)]
fn ipv4(ip: *mut Ipv4Hdr) -> Result<(usize, u8), Reason> {
    let (vihl, frags, tot_len, proto) = unsafe {
        let raw = ip as *const u8;
        (
            (*ip).vihl,
            u16::from_be(wire::get16(raw.add(6))),
            u16::from_be(wire::get16(raw.add(2))) as usize,
            (*ip).proto,
        )
    };
    if vihl >> 4 != 4 {
        return Err(Reason::PassMalformedIpv4);
    }
    let ihl = (vihl & 0x0f) as usize;
    if ihl < 5 {
        return Err(Reason::PassMalformedIpv4);
    }
    if ihl > 5 {
        return Err(Reason::PassIpOptions);
    }
    if tot_len < Ipv4Hdr::LEN {
        return Err(Reason::PassMalformedIpv4);
    }
    if frags & (IP_MF | IP_OFFSET_MASK) != 0 {
        return Err(Reason::PassFragment);
    }
    if proto != PROTO_TCP {
        return Err(Reason::PassNotTcp);
    }
    Ok((tot_len, proto))
}

/// The TCP header after an option-less IPv4 header of total length `tot_len`, once both
/// the frame and `tot_len` hold all of it and `tot_len` does not run past the frame.
#[inline(always)]
fn tcp_header(ctx: &impl Frame, tot_len: usize) -> Result<*mut TcpHdr, Reason> {
    let Some(tcp) = ptr_at::<TcpHdr>(ctx, EthHdr::LEN + Ipv4Hdr::LEN) else {
        // The frame ends inside the TCP header: the IP header lied about the length if
        // it claims a whole TCP header.
        return Err(if tot_len >= Ipv4Hdr::LEN + TcpHdr::LEN {
            Reason::PassMalformedIpv4
        } else {
            Reason::PassMalformedTcp
        });
    };
    if tot_len < Ipv4Hdr::LEN + TcpHdr::LEN {
        return Err(Reason::PassMalformedTcp);
    }
    // Ethernet may pad short frames, so the IP length may be shorter than the frame, but
    // never longer. A header-only segment is already proven inside the frame by the TCP
    // header's bound check; a longer one asks the helper for the frame length, because
    // without CAP_PERFMON the verifier refuses both `data_end - data` and adding a
    // variable to a packet pointer (Spectre v1 sanitising), and lbd should need only
    // CAP_BPF and CAP_NET_ADMIN.
    if tot_len > Ipv4Hdr::LEN + TcpHdr::LEN {
        let frame_len = ctx.whole_len();
        if EthHdr::LEN + tot_len > frame_len {
            return Err(Reason::PassMalformedIpv4);
        }
    }
    Ok(tcp)
}
