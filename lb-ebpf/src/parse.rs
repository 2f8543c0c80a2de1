//! Parse: Ethernet -> IPv4 (no options, not fragmented) -> TCP, with integer compares
//! against `data_end` before every access. Anything not understood is returned as the
//! reason to pass it to the kernel untouched.
use aya_ebpf::{helpers::generated::bpf_xdp_get_buff_len, programs::XdpContext};
use lb_common::{
    counters::Reason,
    flow::FlowKey,
    net::{ETH_P_IPV4, FAMILY_IPV4, PROTO_TCP},
};
use network_types::{eth::EthHdr, ip::Ipv4Hdr, tcp::TcpHdr};

use crate::packet::Packet;

/// A pointer to a `T` at `offset` from the start of the frame, if all of it is inside.
#[inline(always)]
fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*mut T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *mut T)
}

const IP_MF: u16 = 0x2000;
const IP_OFFSET_MASK: u16 = 0x1fff;

#[inline(always)]
pub fn parse(ctx: &XdpContext) -> Result<Packet, Reason> {
    let eth: *mut EthHdr = ptr_at(ctx, 0).ok_or(Reason::PassShortEthernet)?;
    if unsafe { (*eth).ether_type } != ETH_P_IPV4.to_be() {
        return Err(Reason::PassNotIpv4);
    }
    let ip: *mut Ipv4Hdr = ptr_at(ctx, EthHdr::LEN).ok_or(Reason::PassMalformedIpv4)?;
    let (vihl, frags, tot_len, proto) = unsafe {
        (
            (*ip).vihl,
            u16::from_be_bytes((*ip).frags),
            u16::from_be_bytes((*ip).tot_len) as usize,
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
    // Ethernet may pad short frames, so the IP length may be shorter than the frame, but
    // never longer and never shorter than its own header. The frame length comes from
    // the helper because without CAP_PERFMON the verifier refuses both `data_end - data`
    // and adding a variable to a packet pointer (Spectre v1 sanitising), and lbd should
    // need only CAP_BPF and CAP_NET_ADMIN.
    let frame_len = unsafe { bpf_xdp_get_buff_len(ctx.ctx) } as usize;
    if tot_len < Ipv4Hdr::LEN || EthHdr::LEN + tot_len > frame_len {
        return Err(Reason::PassMalformedIpv4);
    }
    if frags & (IP_MF | IP_OFFSET_MASK) != 0 {
        return Err(Reason::PassFragment);
    }
    if proto != PROTO_TCP {
        return Err(Reason::PassNotTcp);
    }
    let tcp: *mut TcpHdr =
        ptr_at(ctx, EthHdr::LEN + Ipv4Hdr::LEN).ok_or(Reason::PassMalformedTcp)?;
    if tot_len < Ipv4Hdr::LEN + TcpHdr::LEN {
        return Err(Reason::PassMalformedTcp);
    }
    let l4_len = tot_len - Ipv4Hdr::LEN;
    let (doff_flags, src_port, dst_port) = unsafe {
        let raw = tcp as *const u8;
        (
            [*raw.add(12), *raw.add(13)],
            u16::from_ne_bytes((*tcp).source),
            u16::from_ne_bytes((*tcp).dest),
        )
    };
    let doff = (doff_flags[0] >> 4) as usize * 4;
    let (src_addr, dst_addr) = unsafe {
        (
            u32::from_ne_bytes((*ip).src_addr),
            u32::from_ne_bytes((*ip).dst_addr),
        )
    };
    Ok(Packet {
        eth,
        ip,
        tcp,
        flow: FlowKey {
            src_addr,
            dst_addr,
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
