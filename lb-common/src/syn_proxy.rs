//! The SYN proxy (see docs/edge-protection.md): for a service with it on, the data path
//! answers a client's SYN itself with a SYN-ACK whose sequence number is a SYN cookie
//! (the kernel's, `bpf_tcp_raw_gen_syncookie_ipv4`), records nothing, and only when the
//! client's ACK proves the cookie opens the connection to a backend with the client's
//! sequence number. The backend picks its own initial sequence number, so from then on
//! the backend's sequence numbers are shifted into the cookie's space on the way to the
//! client and the client's acknowledgement numbers shifted back on the way to the
//! backend, by the [`SynProxyFlow`] of the flow, kept in a map of its own
//! (`SYN_PROXY_FLOWS`) that only flows marked `FLOW_F_SYN_PROXY` read.
//!
//! Options: the cookie's SYN-ACK carries only an MSS option ([`SYN_PROXY_MSS`]), so the
//! client turns off window scaling, SACK and timestamps for the connection; the SYN to
//! the backend carries the same MSS and nothing else, so both ends agree. The cookie
//! encodes the client's MSS, but the kernel's check helper does not give it back, which
//! is why a fixed MSS is sent.

/// The flow was opened through the SYN proxy: its packets' sequence and
/// acknowledgement numbers are translated by its [`SynProxyFlow`]. A bit of
/// `FlowTarget::state`.
/// (`crate::flow` checks that no two flow flags share a bit.)
pub const FLOW_F_SYN_PROXY: u64 = 1 << 6;

/// The reply direction of a flow opened through the SYN proxy: a bit of
/// `NatReturn::flags`.
pub const NAT_F_SYN_PROXY: u16 = 1 << 0;

/// The MSS the proxy announces to the client in its SYN-ACK and to the backend in its
/// SYN: an Ethernet path's (1500 - 40). A path with a smaller MTU relies on path MTU
/// discovery.
pub const SYN_PROXY_MSS: u16 = 1460;

/// The receive window of the proxy's SYN-ACK (unscaled: the proxy turns window scaling
/// off). The client's view of the backend's window until the backend's first segment.
pub const SYN_PROXY_WINDOW: u16 = 65535;

/// The backend's SYN-ACK has not come yet: client packets wait (they are dropped and
/// retransmitted), as their acknowledgement numbers cannot be translated.
pub const SYN_PROXY_OPENING: u16 = 0;
/// The backend answered: [`SynProxyFlow::seq_delta`] holds.
pub const SYN_PROXY_OPEN: u16 = 1;

/// Value of `SYN_PROXY_FLOWS`, keyed by the client -> VIP tuple (`flow::FlowKey`). Sequence
/// numbers in host order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SynProxyFlow {
    /// Added (wrapping) to the backend's sequence numbers towards the client, taken from
    /// the client's acknowledgement numbers towards the backend: the cookie minus the
    /// backend's initial sequence number. While [`SYN_PROXY_OPENING`], the cookie + 1, so
    /// that the backend's RST refusing the SYN (sequence number 0, RFC 793) reaches the
    /// client at the sequence number it expects.
    pub seq_delta: u32,
    /// The proxy's initial sequence number towards the client: the cookie.
    pub cookie: u32,
    /// The client's initial sequence number, which the backend's SYN carried.
    pub client_isn: u32,
    /// The window of the client's ACK, which the ACK to the backend carries.
    pub client_window: u16,
    /// [`SYN_PROXY_OPENING`] or [`SYN_PROXY_OPEN`].
    pub state: u16,
}
const _: () = assert!(core::mem::size_of::<SynProxyFlow>() == 16);

impl SynProxyFlow {
    /// The state of a flow whose client's ACK of `cookie` just opened it.
    pub const fn opening(cookie: u32, client_isn: u32, client_window: u16) -> Self {
        Self {
            seq_delta: cookie.wrapping_add(1),
            cookie,
            client_isn,
            client_window,
            state: SYN_PROXY_OPENING,
        }
    }

    /// The backend's SYN-ACK with initial sequence number `backend_isn` arrived: from now
    /// on its sequence numbers are shifted into the cookie's space.
    pub fn open(&mut self, backend_isn: u32) {
        self.seq_delta = self.cookie.wrapping_sub(backend_isn);
        self.state = SYN_PROXY_OPEN;
    }

    /// A backend's sequence number as the client knows it.
    pub const fn to_client_seq(&self, backend_seq: u32) -> u32 {
        backend_seq.wrapping_add(self.seq_delta)
    }

    /// A client's acknowledgement number as the backend knows it.
    pub const fn to_backend_ack(&self, client_ack: u32) -> u32 {
        client_ack.wrapping_sub(self.seq_delta)
    }
}

/// Sums a TCP segment of `words` 16-bit words (as loaded from the packet, wire order)
/// with the IPv4 pseudo-header of `src` and `dst` (wire order) and the segment's length,
/// folding the result into the checksum field value (wire order, as loaded). The
/// segment's checksum field must read 0 in `segment_sum`.
#[inline(always)]
pub const fn tcp_checksum(src: u32, dst: u32, tcp_len: u16, segment_sum: u64) -> u16 {
    let pseudo = (src & 0xffff) as u64
        + (src >> 16) as u64
        + (dst & 0xffff) as u64
        + (dst >> 16) as u64
        // Protocol and length, as the little-endian load of their big-endian words.
        + (crate::net::PROTO_TCP as u16).to_be() as u64
        + tcp_len.to_be() as u64;
    !crate::checksum::fold(pseudo + segment_sum)
}

/// The IPv4 header checksum of a header whose ten 16-bit words (checksum field 0, as
/// loaded, wire order) sum to `header_sum`.
#[inline(always)]
pub const fn ipv4_checksum(header_sum: u64) -> u16 {
    !crate::checksum::fold(header_sum)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum::{internet_checksum, ipv4_l4_checksum};

    fn words(bytes: &[u8]) -> u64 {
        bytes
            .chunks_exact(2)
            .map(|w| u16::from_ne_bytes([w[0], w[1]]) as u64)
            .sum()
    }

    #[test]
    fn tcp_checksum_of_loaded_words_is_the_internet_checksum() {
        let src = [10, 10, 0, 2];
        let dst = [10, 0, 0, 100];
        let mut seg = [
            0x1f, 0x90, 0x9c, 0x40, 1, 2, 3, 4, 5, 6, 7, 8, 0x60, 0x12, 0xff, 0xff, 0, 0, 0, 0, 2,
            4, 5, 0xb4,
        ];
        let c = tcp_checksum(
            u32::from_ne_bytes(src),
            u32::from_ne_bytes(dst),
            seg.len() as u16,
            words(&seg),
        );
        seg[16..18].copy_from_slice(&c.to_ne_bytes());
        assert_eq!(ipv4_l4_checksum(src, dst, 6, &seg), 0);
    }

    #[test]
    fn ipv4_checksum_of_loaded_words_is_the_internet_checksum() {
        let mut ip = [
            0x45, 0, 0, 44, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 100, 10, 10, 0, 2,
        ];
        let c = ipv4_checksum(words(&ip));
        ip[10..12].copy_from_slice(&c.to_ne_bytes());
        assert_eq!(internet_checksum(&ip, 0), 0);
    }

    #[test]
    fn sequence_numbers_move_between_the_cookie_and_backend_spaces_wrapping() {
        let mut f = SynProxyFlow::opening(0xffff_fff0, 1000, 512);
        // The backend's RST refusing the SYN has sequence number 0.
        assert_eq!(f.to_client_seq(0), 0xffff_fff1);
        f.open(0x20);
        assert_eq!(f.state, SYN_PROXY_OPEN);
        // The backend's first byte (ISN + 1) is the cookie + 1 to the client.
        assert_eq!(f.to_client_seq(0x21), 0xffff_fff1);
        assert_eq!(f.to_client_seq(0x21 + 0x100), 0xf1);
        assert_eq!(f.to_backend_ack(0xf1), 0x121);
    }
}
