//! The parsed view of a packet that later stages work on.
use lb_common::flow::FlowKey;
use network_types::{eth::EthHdr, ip::Ipv4Hdr, tcp::TcpHdr};

use crate::wire;

/// Pointers into the frame, already bounds-checked by `parse`: the Ethernet header, an
/// option-less IPv4 header right after it, and a full 20-byte TCP header after that.
pub struct Packet {
    pub eth: *mut EthHdr,
    pub ip: *mut Ipv4Hdr,
    pub tcp: *mut TcpHdr,
    /// The 5-tuple in the packet's direction.
    pub flow: FlowKey,
    /// TCP flag byte (byte 13 of the header).
    pub tcp_flags: u8,
    /// Whether the segment carries data (beyond the TCP header).
    pub has_payload: bool,
    /// Whether the TCP data offset is sane (>= 5 words and inside the frame).
    pub tcp_valid: bool,
    /// Ethernet header plus IP total length (the frame without link padding), for byte
    /// counters.
    pub frame_len: u64,
}

impl Packet {
    /// The TCP sequence number (host order).
    #[inline(always)]
    pub fn seq(&self) -> u32 {
        // Bytes 4..8 of the header `parse` checked is whole in the frame.
        u32::from_be(unsafe { wire::get32((self.tcp as *const u8).add(4)) })
    }

    /// The TCP acknowledgment number (host order).
    #[inline(always)]
    pub fn ack_seq(&self) -> u32 {
        // Bytes 8..12 of the header `parse` checked is whole in the frame.
        u32::from_be(unsafe { wire::get32((self.tcp as *const u8).add(8)) })
    }
}
