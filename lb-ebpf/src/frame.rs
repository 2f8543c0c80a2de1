//! The two hooks the IPv4 TCP NAT path runs at, behind one seam: XDP, where the frame is
//! the driver's buffer, and tc ingress (`lb_tc`), where it is the kernel's skb. Parsing,
//! lookups, selection and the rewrite read and write the frame through `data`..`data_end`
//! at both; only how the frame's length is known, how a route is checked against the MTU
//! and how the frame leaves differ.
use core::ffi::c_void;

use aya_ebpf::{
    bindings::bpf_check_mtu_flags::BPF_MTU_CHK_SEGS,
    bindings::xdp_action,
    helpers::generated::{bpf_check_mtu, bpf_redirect, bpf_xdp_get_buff_len},
    programs::{TcContext, XdpContext},
    EbpfContext,
};
use lb_common::counters::Reason;

use crate::{count, maps::EGRESS};

pub trait Frame {
    /// The first byte of the frame (its Ethernet header).
    fn data(&self) -> usize;
    /// One past the last byte the program may read directly.
    fn data_end(&self) -> usize;
    /// The whole frame's length, including what lies past `data_end` (XDP fragments, an
    /// skb's pages).
    fn whole_len(&self) -> usize;
    /// The NIC the frame arrived on.
    fn ingress_ifindex(&self) -> u32;
    /// The context pointer helpers take.
    fn as_ctx(&self) -> *mut c_void;
    /// The length a FIB lookup checks against the route's MTU, for a packet whose IPv4
    /// total length is `tot_len`.
    fn fib_tot_len(&self, tot_len: u16) -> u16;
    /// Whether the frame fits NIC `ifindex`'s MTU, checked before the router hop
    /// changes anything but the addresses, so that a frame that does not goes to the
    /// kernel as the kernel would have got it.
    fn fits(&self, ifindex: u32) -> bool;
    /// Sends the rewritten frame out of NIC `ifindex` (the ingress NIC included): the
    /// XDP action that does it (XDP_TX, XDP_REDIRECT), counted, or a counted pass.
    fn send_out(&self, ifindex: u32) -> u32;
}

impl Frame for XdpContext {
    #[inline(always)]
    fn data(&self) -> usize {
        XdpContext::data(self)
    }

    #[inline(always)]
    fn data_end(&self) -> usize {
        XdpContext::data_end(self)
    }

    #[inline(always)]
    fn whole_len(&self) -> usize {
        unsafe { bpf_xdp_get_buff_len(self.ctx) as usize }
    }

    #[inline(always)]
    fn ingress_ifindex(&self) -> u32 {
        XdpContext::ingress_ifindex(self) as u32
    }

    #[inline(always)]
    fn as_ctx(&self) -> *mut c_void {
        EbpfContext::as_ptr(self)
    }

    #[inline(always)]
    fn fib_tot_len(&self, tot_len: u16) -> u16 {
        tot_len
    }

    /// The FIB lookup checked the length (a cached next hop is one that fitted: an XDP
    /// frame is one MTU-sized packet).
    #[inline(always)]
    fn fits(&self, _ifindex: u32) -> bool {
        true
    }

    #[inline(always)]
    fn send_out(&self, ifindex: u32) -> u32 {
        if ifindex == Frame::ingress_ifindex(self) {
            count::reason(Reason::TxSameInterface);
            return xdp_action::XDP_TX;
        }
        match EGRESS.redirect(ifindex, 0) {
            Ok(action) => {
                count::reason(Reason::RedirectInterface);
                action
            }
            Err(_) => count::pass(Reason::PassEgressNotAttached),
        }
    }
}

impl Frame for TcContext {
    #[inline(always)]
    fn data(&self) -> usize {
        TcContext::data(self)
    }

    #[inline(always)]
    fn data_end(&self) -> usize {
        TcContext::data_end(self)
    }

    #[inline(always)]
    fn whole_len(&self) -> usize {
        self.len() as usize
    }

    /// At tc ingress the skb's device is the NIC it arrived on (`ingress_ifindex` is the
    /// same there, but a test run leaves it zero).
    #[inline(always)]
    #[expect(
        clippy::misnamed_getters,
        reason = "skb->ifindex is the ingress NIC at tc ingress"
    )]
    fn ingress_ifindex(&self) -> u32 {
        unsafe { (*self.skb.skb).ifindex }
    }

    #[inline(always)]
    fn as_ctx(&self) -> *mut c_void {
        EbpfContext::as_ptr(self)
    }

    /// None: an skb may be a GSO packet far longer than the MTU whose segments all fit
    /// (`fits` checks the segments against the egress NIC's MTU).
    #[inline(always)]
    fn fib_tot_len(&self, _tot_len: u16) -> u16 {
        0
    }

    /// The packet, or each segment of a GSO packet, against the NIC's MTU: a FIB lookup
    /// given no length does not check a GSO packet's segments, and a cached next hop
    /// checks nothing.
    #[inline(always)]
    fn fits(&self, ifindex: u32) -> bool {
        let mut mtu = 0u32;
        let flags = BPF_MTU_CHK_SEGS as u64;
        unsafe { bpf_check_mtu(self.as_ctx(), ifindex, &mut mtu, 0, flags) == 0 }
    }

    /// `bpf_redirect` to the NIC's egress, its own included: no devmap, and no program
    /// needed on the peer of a veth. The action stays XDP's (`lb_tc` translates it), so
    /// that counting and tracing read it as they do at XDP.
    #[inline(always)]
    fn send_out(&self, ifindex: u32) -> u32 {
        unsafe { bpf_redirect(ifindex, 0) };
        if ifindex == Frame::ingress_ifindex(self) {
            count::reason(Reason::TxSameInterface);
            return xdp_action::XDP_TX;
        }
        count::reason(Reason::RedirectInterface);
        xdp_action::XDP_REDIRECT
    }
}
