//! Counters kept by the data path. Every slot has a name here; nothing depends on an
//! unnamed slot number.

/// Per-service and per-backend traffic counters (per-CPU arrays, summed by userspace).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TrafficCounters {
    /// Packets rewritten towards a backend.
    pub packets_to_backend: u64,
    /// Bytes rewritten towards a backend (Ethernet header + IP total length).
    pub bytes_to_backend: u64,
    /// Packets rewritten back towards a client.
    pub packets_to_client: u64,
    /// Bytes rewritten back towards a client (Ethernet header + IP total length).
    pub bytes_to_client: u64,
    /// Flows created: recorded by a SYN (`round_robin`, `least_conn`) or by the client's
    /// ACK of a handshake whose SYN left a SYN-cache slot.
    pub new_flows: u64,
    /// Client packets without a flow entry and not of a handshake we placed (an
    /// established connection after an ECMP move or an eviction, or spoofed ACKs, RSTs,
    /// data): forwarded by the service's Maglev table, recording nothing.
    pub stateless_forwards: u64,
    /// Flows recorded (both directions) by a backend's reply that found no flow entry:
    /// a connection proved real by its backend answering a stateless forward.
    pub flows_from_replies: u64,
    /// Client ACKs that found their handshake's SYN-cache slot but do not acknowledge the
    /// backend's SYN-ACK as it passed through (an ACK number other than its sequence
    /// number + 1, or no SYN-ACK seen yet): a client that never saw the SYN-ACK, such as a
    /// spoofed SYN and ACK pair. Forwarded to the SYN's backend like a stateless forward
    /// (and counted in `stateless_forwards` too), recording nothing; or, when the tuple
    /// has the entry of an earlier connection, along that entry, left as it is.
    pub unproven_acks: u64,
    /// Backend replies with no return entry and no SYN-cache slot translated by the
    /// reverse map (see [`crate::reverse`]): replies of connections this node did not
    /// see opened, in a tier of nodes behind ECMP. Counted in `packets_to_client` too.
    pub replies_reverse_mapped: u64,
}
const _: () = assert!(core::mem::size_of::<TrafficCounters>() == 72);

impl TrafficCounters {
    /// Adds another CPU's counters to this one.
    pub fn accumulate(&mut self, other: &TrafficCounters) {
        self.packets_to_backend += other.packets_to_backend;
        self.bytes_to_backend += other.bytes_to_backend;
        self.packets_to_client += other.packets_to_client;
        self.bytes_to_client += other.bytes_to_client;
        self.new_flows += other.new_flows;
        self.stateless_forwards += other.stateless_forwards;
        self.flows_from_replies += other.flows_from_replies;
        self.unproven_acks += other.unproven_acks;
        self.replies_reverse_mapped += other.replies_reverse_mapped;
    }
}

/// Per-backend TCP handshake and reset counts (and a UDP service's flows and port
/// unreachables), the passive health signal (a per-CPU array
/// indexed by backend id, summed by userspace). NAT mode sees both directions of a flow,
/// so the data path can tell a connection attempt that the backend accepted from one it
/// refused or never answered: `syns - syn_acks` over a window is the attempts that failed.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct BackendSignals {
    /// SYNs without ACK forwarded to the backend: connection attempts (retransmits too).
    pub syns: u64,
    /// SYN-ACKs from the backend: attempts it accepted.
    pub syn_acks: u64,
    /// RSTs from the backend: refused attempts and aborted connections.
    pub resets: u64,
    /// SYNs a client sent again on a tuple whose SYN went to this backend and whose
    /// handshake no ACK completed yet (a direct-server-return backend's signal: the
    /// SYN-ACK never passes through the node, but a client retransmits a SYN that got no
    /// answer). Counted in `syns` too.
    pub syn_retransmits: u64,
    /// A UDP service's flows placed on the backend (their first datagrams): its attempts.
    pub datagram_flows: u64,
    /// ICMP port unreachables from the backend about a client's datagram (nothing listens
    /// on the backend's port): a UDP service's failed attempts.
    pub unreachables: u64,
}
const _: () = assert!(core::mem::size_of::<BackendSignals>() == 48);

impl BackendSignals {
    /// Adds another CPU's counters to this one.
    pub fn accumulate(&mut self, other: &BackendSignals) {
        self.syns += other.syns;
        self.syn_acks += other.syn_acks;
        self.resets += other.resets;
        self.syn_retransmits += other.syn_retransmits;
        self.datagram_flows += other.datagram_flows;
        self.unreachables += other.unreachables;
    }
}

/// Why the data path did what it did with a packet; each has a slot in the reasons
/// per-CPU array. Used as an index only: packet bytes are never read as this enum.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Frame shorter than an Ethernet header.
    PassShortEthernet = 0,
    /// Not IPv4 (ARP, IPv6, VLAN-tagged, ...): the kernel's business.
    PassNotIpv4,
    /// IPv4 header truncated or with an invalid IHL / total length.
    PassMalformedIpv4,
    /// IPv4 header with options (IHL > 5): not rewritten, left to the kernel.
    PassIpOptions,
    /// IPv4 fragment: not rewritten, left to the kernel.
    PassFragment,
    /// Not TCP.
    PassNotTcp,
    /// TCP header truncated, not to a VIP: the kernel's business.
    PassMalformedTcp,
    /// TCP, but neither to a VIP nor a tracked return flow.
    PassNoService,
    /// TTL would expire: the kernel sends the ICMP error.
    PassTtlExpired,
    /// Rewritten, but the next hop's neighbour is unresolved: handed to the kernel so it
    /// resolves it (and forwards this packet).
    PassNoNeighbour,
    /// Rewritten, but the FIB lookup did not give a usable route (blackhole, forwarding
    /// disabled, ...): handed to the kernel to route or report.
    PassFibFailed,
    /// To a VIP, but the TCP header is truncated or its data offset is invalid.
    DropMalformedTcp,
    /// To a VIP whose service has no usable backend (empty ring or fail-closed).
    DropNoBackend,
    /// Forwarded with XDP_TX (next hop is on the ingress NIC).
    TxSameInterface,
    /// Forwarded with XDP_REDIRECT to another attached NIC.
    RedirectInterface,
    /// The egress NIC is not attached: handed to the kernel to forward.
    PassEgressNotAttached,
    /// To a VIP:port from a source no router forwards from (see
    /// [`crate::net::is_martian`]) or from the VIP itself: dropped, as the kernel's own
    /// checks (which XDP runs before) would.
    DropMartianSource,
    /// A backend's reply with no return entry that answers a stateless forward, but
    /// arrived on another NIC than the one the kernel routes that backend through (or
    /// the backend has no route): a spoofed reply, recording nothing, handed to the
    /// kernel (its own reverse-path filter and routing decide).
    PassReplyWrongInterface,
    /// A backend's reply that the reverse map would translate (see [`crate::reverse`]),
    /// but addressed to this node itself (the reply to one of `lbd`'s health probes, or
    /// to anything else the node sent from its own address): the kernel's, untouched.
    PassReplyToNode,
    /// A packet without a flow entry whose source the most specific matching rule of its
    /// service denies (see [`crate::edge`]).
    DropEdgeDenied,
    /// A packet without a flow entry to a service with allow rules, none of which
    /// matches its source.
    DropEdgeNotAllowed,
    /// A SYN over its source's rate limit for the service.
    DropRateLimited,
    /// To a VIP address on a port or protocol no service listens on, with
    /// `unlisted_ports: drop`.
    DropUnlistedPort,
    /// A SYN to a service with the SYN proxy on, answered with a SYN-ACK carrying a SYN
    /// cookie (sent back with XDP_TX; see [`crate::syn_proxy`]).
    TxSynCookie,
    /// A packet without a flow entry to a service with the SYN proxy on that is neither a
    /// SYN nor an ACK whose acknowledgement number is a valid cookie: forged, stale (older
    /// than the kernel's cookie lifetime, about two minutes), or of a flow whose entry
    /// was lost.
    DropSynCookieInvalid,
    /// A proxied flow's client packet before its backend's SYN-ACK came: its
    /// acknowledgement number cannot be translated yet, so the client retransmits it.
    DropSynProxyOpening,
    /// A proxied flow's backend SYN-ACK turned into the ACK the backend expects (sent back
    /// with XDP_TX).
    TxSynProxyAck,
    /// A packet for a direct-server-return backend that could not be handed to `lb_dsr`
    /// (missing from the program array).
    DropDsrUnavailable,
    /// For a direct-server-return backend whose neighbour entry is unresolved (its
    /// health probes resolve it).
    DropDsrNoNeighbour,
    /// For a direct-server-return backend the node has no usable route to.
    DropDsrNoRoute,
    /// For a `dsr_l2` backend that is not on the node's own segment (routed through a
    /// gateway).
    DropDsrNotOnLink,
    /// Too big for the egress MTU once encapsulated, without don't-fragment: dropped (the
    /// data path does not fragment).
    DropDsrTooBig,
    /// Too big for the egress MTU once encapsulated, with don't-fragment: answered with
    /// an ICMP fragmentation-needed to the client.
    TxFragNeeded,
    /// To a UDP service, but the UDP length field is below the header's 8 bytes or runs
    /// past the IP packet.
    DropMalformedUdp,
    /// A backend's UDP reply with a return entry whose UDP length field is below 8 bytes
    /// or runs past the IP packet: not translated, the kernel's.
    PassMalformedUdp,
    /// An IPv6 frame (EtherType 0x86dd) whose fixed 40-byte header is cut short or whose
    /// version is not 6, or whose payload length runs past the frame.
    PassMalformedIpv6,
    /// An IPv6 packet to a maybe-VIP or from a maybe-backend whose next header is an
    /// extension header (hop-by-hop, routing, destination options, AH, ESP, mobility,
    /// HIP, shim6, experimental): not followed, left to the kernel. (A fragment header
    /// counts as `pass_fragment`.)
    PassIpv6Extension,
    /// An IPv6 UDP datagram of a UDP service or flow with a zero checksum, which IPv6
    /// forbids (RFC 8200 8.1): dropped, as the receiving kernel would.
    DropUdpZeroChecksum,
    /// An IPv6 packet too big for the egress MTU once wrapped for its DSR backend:
    /// answered with an ICMPv6 packet too big to the client (IPv6 is never fragmented
    /// on the way).
    TxPacketTooBig,
}

/// Number of reason slots (size of the reasons array).
pub const REASON_COUNT: u32 = 39;

/// All reasons in slot order, with the names used in metrics.
pub const REASONS: [(Reason, &str); REASON_COUNT as usize] = [
    (Reason::PassShortEthernet, "pass_short_ethernet"),
    (Reason::PassNotIpv4, "pass_not_ipv4"),
    (Reason::PassMalformedIpv4, "pass_malformed_ipv4"),
    (Reason::PassIpOptions, "pass_ip_options"),
    (Reason::PassFragment, "pass_fragment"),
    (Reason::PassNotTcp, "pass_not_tcp"),
    (Reason::PassMalformedTcp, "pass_malformed_tcp"),
    (Reason::PassNoService, "pass_no_service"),
    (Reason::PassTtlExpired, "pass_ttl_expired"),
    (Reason::PassNoNeighbour, "pass_no_neighbour"),
    (Reason::PassFibFailed, "pass_fib_failed"),
    (Reason::DropMalformedTcp, "drop_malformed_tcp"),
    (Reason::DropNoBackend, "drop_no_backend"),
    (Reason::TxSameInterface, "tx_same_interface"),
    (Reason::RedirectInterface, "redirect_interface"),
    (Reason::PassEgressNotAttached, "pass_egress_not_attached"),
    (Reason::DropMartianSource, "drop_martian_source"),
    (
        Reason::PassReplyWrongInterface,
        "pass_reply_wrong_interface",
    ),
    (Reason::PassReplyToNode, "pass_reply_to_node"),
    (Reason::DropEdgeDenied, "drop_edge_denied"),
    (Reason::DropEdgeNotAllowed, "drop_edge_not_allowed"),
    (Reason::DropRateLimited, "drop_rate_limited"),
    (Reason::DropUnlistedPort, "drop_unlisted_port"),
    (Reason::TxSynCookie, "tx_syn_cookie"),
    (Reason::DropSynCookieInvalid, "drop_syn_cookie_invalid"),
    (Reason::DropSynProxyOpening, "drop_syn_proxy_opening"),
    (Reason::TxSynProxyAck, "tx_syn_proxy_ack"),
    (Reason::DropDsrUnavailable, "drop_dsr_unavailable"),
    (Reason::DropDsrNoNeighbour, "drop_dsr_no_neighbour"),
    (Reason::DropDsrNoRoute, "drop_dsr_no_route"),
    (Reason::DropDsrNotOnLink, "drop_dsr_not_on_link"),
    (Reason::DropDsrTooBig, "drop_dsr_too_big"),
    (Reason::TxFragNeeded, "tx_frag_needed"),
    (Reason::DropMalformedUdp, "drop_malformed_udp"),
    (Reason::PassMalformedUdp, "pass_malformed_udp"),
    (Reason::PassMalformedIpv6, "pass_malformed_ipv6"),
    (Reason::PassIpv6Extension, "pass_ipv6_extension"),
    (Reason::DropUdpZeroChecksum, "drop_udp_zero_checksum"),
    (Reason::TxPacketTooBig, "tx_packet_too_big"),
];

/// A backend's active flows: `opened` (the data path's opened-minus-closed count,
/// `ACTIVE_FLOWS`) less `adjust` (the controller's count of flows that ended unseen,
/// `ACTIVE_ADJUST`). The adjustment can briefly exceed the count: a scan of the flow table
/// that missed an entry evicted mid-walk over-adjusts until a later scan takes it back,
/// and the flow's close counts it down meanwhile. That reads as none open, not as 2^64
/// less a few (which least-connections would take for a full backend, and a sum of them
/// for an overflow).
#[inline(always)]
pub const fn active_flows(opened: u64, adjust: u64) -> u64 {
    opened.saturating_sub(adjust)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_adjustment_past_the_count_reads_as_no_active_flow() {
        assert_eq!(active_flows(10, 3), 7);
        assert_eq!(active_flows(1, 2), 0);
        assert_eq!(active_flows(0, u64::MAX), 0);
    }

    #[test]
    fn reasons_are_listed_in_slot_order() {
        for (slot, (reason, name)) in REASONS.iter().enumerate() {
            assert_eq!(*reason as usize, slot, "{name} is out of order");
        }
    }
}
