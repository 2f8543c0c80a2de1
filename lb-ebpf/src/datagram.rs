//! Parse for `lb_udp`: Ethernet -> IPv4 (no options, not fragmented) -> UDP, with integer
//! compares against `data_end` before every access, into the view the UDP stages work
//! on. `lb_xdp` hands over only what its own parse found to be such a frame carrying UDP
//! (see `udp::carried`); a tail call keeps only the context, so it is read again here.
use aya_ebpf::{helpers::generated::bpf_xdp_get_buff_len, programs::XdpContext};
use lb_common::{
    counters::Reason,
    encap::{PROTO_UDP, UDP_HEADER_LEN},
    flow::FlowKey,
    net::{ETH_P_IPV4, FAMILY_IPV4},
};
use network_types::{eth::EthHdr, ip::Ipv4Hdr};

use crate::wire;

/// Pointers into the frame, bounds-checked: the Ethernet header, an option-less IPv4
/// header right after it, and the 8-byte UDP header after that.
pub struct Datagram {
    pub eth: *mut EthHdr,
    pub ip: *mut Ipv4Hdr,
    pub udp: *mut u8,
    /// The 5-tuple in the datagram's direction (`proto` UDP).
    pub flow: FlowKey,
    /// Whether the UDP length field covers the header and stays inside the IP packet,
    /// which itself stays inside the frame.
    pub valid: bool,
    /// Ethernet header plus IP total length, for byte counters.
    pub frame_len: u64,
}

const IP_MF: u16 = 0x2000;
const IP_OFFSET_MASK: u16 = 0x1fff;
const ETH_LEN: usize = EthHdr::LEN;
const IP_LEN: usize = Ipv4Hdr::LEN;
const UDP_LEN: usize = UDP_HEADER_LEN;

/// The datagram of an IPv4 frame without options, not a fragment, carrying UDP whose
/// header is inside the frame. Anything else is returned as the reason to pass it.
#[inline(always)]
pub fn parse(ctx: &XdpContext) -> Result<Datagram, Reason> {
    let start = ctx.data();
    if start + ETH_LEN + IP_LEN > ctx.data_end() {
        return Err(Reason::PassMalformedIpv4);
    }
    let eth = start as *mut EthHdr;
    let ip = (start + ETH_LEN) as *mut Ipv4Hdr;
    let raw = ip as *const u8;
    // SAFETY: the Ethernet and fixed IPv4 headers are inside the frame (checked above).
    let (ether_type, vihl, tot_len, frags, proto, src, dst) = unsafe {
        (
            (*eth).ether_type,
            *raw,
            u16::from_be(wire::get16(raw.add(2))) as usize,
            u16::from_be(wire::get16(raw.add(6))),
            *raw.add(9),
            wire::get32(raw.add(12)),
            wire::get32(raw.add(16)),
        )
    };
    if ether_type != ETH_P_IPV4.to_be() {
        return Err(Reason::PassNotIpv4);
    }
    if vihl >> 4 != 4 || vihl & 0x0f < 5 || tot_len < IP_LEN {
        return Err(Reason::PassMalformedIpv4);
    }
    if vihl & 0x0f > 5 {
        return Err(Reason::PassIpOptions);
    }
    if frags & (IP_MF | IP_OFFSET_MASK) != 0 {
        return Err(Reason::PassFragment);
    }
    if proto != PROTO_UDP {
        return Err(Reason::PassNotTcp);
    }
    let at = start + ETH_LEN + IP_LEN;
    if at + UDP_LEN > ctx.data_end() {
        return Err(Reason::PassMalformedUdp);
    }
    let udp = at as *mut u8;
    // SAFETY: the 8-byte UDP header is inside the frame (checked above).
    let (src_port, dst_port, udp_len) = unsafe {
        (
            wire::get16(udp),
            wire::get16(udp.add(2)),
            u16::from_be(wire::get16(udp.add(4))) as usize,
        )
    };
    Ok(Datagram {
        eth,
        ip,
        udp,
        flow: FlowKey {
            src_addr: src,
            dst_addr: dst,
            src_port,
            dst_port,
            proto,
            family: FAMILY_IPV4,
            _pad: [0; 2],
        },
        valid: lengths_agree(ctx, tot_len, udp_len),
        frame_len: (ETH_LEN + tot_len) as u64,
    })
}

/// Whether a UDP length of `udp_len` fits an IP packet of `tot_len` that fits the frame.
/// Ethernet may pad short frames, so both lengths may be shorter than what holds them,
/// never longer. As in `parse::tcp_header`, the frame length comes from the helper: the
/// verifier refuses `data_end - data` without CAP_PERFMON.
#[inline(always)]
fn lengths_agree(ctx: &XdpContext, tot_len: usize, udp_len: usize) -> bool {
    if udp_len < UDP_LEN || IP_LEN + udp_len > tot_len {
        return false;
    }
    if tot_len <= IP_LEN + UDP_LEN {
        return true;
    }
    let frame_len = unsafe { bpf_xdp_get_buff_len(ctx.ctx) } as usize;
    ETH_LEN + tot_len <= frame_len
}

impl Datagram {
    /// A router must not forward a packet whose TTL would reach zero (see
    /// `forward::ttl_allows`).
    #[inline(always)]
    pub fn ttl_allows(&self) -> bool {
        unsafe { (*self.ip).ttl > 1 }
    }
}
