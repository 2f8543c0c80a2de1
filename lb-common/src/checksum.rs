//! Internet checksum (RFC 1071) and its incremental update (RFC 1624, eqn. 3:
//! `HC' = ~(~HC + ~m + m')`).
//!
//! The one's-complement sum does not depend on byte order as long as every 16-bit word
//! is loaded the same way, so these functions take fields exactly as they sit in the
//! packet (wire-order integers loaded natively) and return the checksum field the same
//! way.

/// Folds a 64-bit one's-complement accumulator to 16 bits. A fixed number of folds
/// rather than a loop, so the BPF verifier sees straight-line code.
#[inline(always)]
pub const fn fold(mut sum: u64) -> u16 {
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// New checksum after a 32-bit field changed from `old` to `new`.
#[inline(always)]
pub const fn replace4(check: u16, old: u32, new: u32) -> u16 {
    let old = !old;
    let sum = (!check) as u64
        + (old >> 16) as u64
        + (old & 0xffff) as u64
        + (new >> 16) as u64
        + (new & 0xffff) as u64;
    !fold(sum)
}

/// New checksum after a 16-bit field changed from `old` to `new`.
#[inline(always)]
pub const fn replace2(check: u16, old: u16, new: u16) -> u16 {
    let sum = (!check) as u64 + (!old) as u64 + new as u64;
    !fold(sum)
}

/// New UDP checksum (over IPv4) after an address changed from `old_addr` to `new_addr`
/// and a port from `old_port` to `new_port`. A zero checksum means the sender computed
/// none (RFC 768) and stays zero; a computed zero is sent as all ones, so an update that
/// comes out zero becomes 0xffff (as the kernel's `CSUM_MANGLED_0`).
#[inline(always)]
pub const fn udp_replace(
    check: u16,
    old_addr: u32,
    new_addr: u32,
    old_port: u16,
    new_port: u16,
) -> u16 {
    if check == 0 {
        return 0;
    }
    match replace2(replace4(check, old_addr, new_addr), old_port, new_port) {
        0 => 0xffff,
        updated => updated,
    }
}

/// New checksum after a 128-bit field (an IPv6 address, which the TCP and UDP
/// checksums cover through the pseudo-header) changed from `old` to `new`: the
/// difference of all eight 16-bit words in one sum.
#[inline(always)]
pub const fn replace16(check: u16, old: &[u32; 4], new: &[u32; 4]) -> u16 {
    let mut sum = (!check) as u64;
    let mut i = 0;
    while i < 4 {
        let o = !old[i];
        sum += (o >> 16) as u64 + (o & 0xffff) as u64;
        sum += (new[i] >> 16) as u64 + (new[i] & 0xffff) as u64;
        i += 1;
    }
    !fold(sum)
}

/// New UDP checksum over IPv6 after an address changed from `old_addr` to `new_addr` and
/// a port from `old_port` to `new_port`. Over IPv6 the checksum is mandatory (RFC 8200
/// 8.1: a zero one is invalid and the data path drops such a datagram before this), and
/// a computed zero is sent as all ones, so an update that comes out zero becomes 0xffff.
#[inline(always)]
pub const fn udp6_replace(
    check: u16,
    old_addr: &[u32; 4],
    new_addr: &[u32; 4],
    old_port: u16,
    new_port: u16,
) -> u16 {
    match replace2(replace16(check, old_addr, new_addr), old_port, new_port) {
        0 => 0xffff,
        updated => updated,
    }
}

/// The full Internet checksum of `data` with `initial` already summed in (for
/// pseudo-headers). Returns the checksum field value, big-endian numeric.
pub fn internet_checksum(data: &[u8], initial: u64) -> u16 {
    let mut sum = initial;
    let mut chunks = data.chunks_exact(2);
    for pair in &mut chunks {
        sum += u16::from_be_bytes([pair[0], pair[1]]) as u64;
    }
    if let [last] = chunks.remainder() {
        sum += u16::from_be_bytes([*last, 0]) as u64;
    }
    !fold(sum)
}

/// TCP/UDP checksum over an IPv4 pseudo-header and the L4 segment (checksum field
/// included as it is: a segment with a valid checksum yields 0).
pub fn ipv4_l4_checksum(src: [u8; 4], dst: [u8; 4], proto: u8, segment: &[u8]) -> u16 {
    let pseudo = u16::from_be_bytes([src[0], src[1]]) as u64
        + u16::from_be_bytes([src[2], src[3]]) as u64
        + u16::from_be_bytes([dst[0], dst[1]]) as u64
        + u16::from_be_bytes([dst[2], dst[3]]) as u64
        + proto as u64
        + segment.len() as u64;
    internet_checksum(segment, pseudo)
}

/// TCP/UDP checksum over an IPv6 pseudo-header (RFC 8200 8.1: addresses, upper-layer
/// length, next header) and the L4 segment, computed from scratch (checksum field
/// included as it is: a segment with a valid checksum yields 0).
pub fn ipv6_l4_checksum(src: [u8; 16], dst: [u8; 16], proto: u8, segment: &[u8]) -> u16 {
    let mut pseudo = [0u8; 40];
    pseudo[..16].copy_from_slice(&src);
    pseudo[16..32].copy_from_slice(&dst);
    pseudo[32..36].copy_from_slice(&(segment.len() as u32).to_be_bytes());
    pseudo[39] = proto;
    let mut sum = 0u64;
    for pair in pseudo.chunks_exact(2) {
        sum += u16::from_be_bytes([pair[0], pair[1]]) as u64;
    }
    internet_checksum(segment, sum)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// An IPv4+TCP packet (no options) with valid checksums, built from parts.
    fn packet(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> [u8; 1500] {
        let mut p = [0u8; 1500];
        let tot = 40 + payload.len();
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(tot as u16).to_be_bytes());
        p[8] = 64;
        p[9] = 6;
        p[12..16].copy_from_slice(&src);
        p[16..20].copy_from_slice(&dst);
        let c = internet_checksum(&p[..20], 0);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p[20..22].copy_from_slice(&sport.to_be_bytes());
        p[22..24].copy_from_slice(&dport.to_be_bytes());
        p[32] = 5 << 4;
        p[40..tot].copy_from_slice(payload);
        let c = ipv4_l4_checksum(src, dst, 6, &p[20..tot]);
        p[36..38].copy_from_slice(&c.to_be_bytes());
        p
    }

    fn field16(p: &[u8], at: usize) -> u16 {
        u16::from_ne_bytes([p[at], p[at + 1]])
    }
    fn field32(p: &[u8], at: usize) -> u32 {
        u32::from_ne_bytes([p[at], p[at + 1], p[at + 2], p[at + 3]])
    }

    proptest! {
        /// A destination NAT rewrite done incrementally leaves exactly the checksums a
        /// full recompute gives.
        #[test]
        fn incremental_update_equals_full_recompute(
            src: [u8; 4], dst: [u8; 4], new_dst: [u8; 4],
            sport: u16, dport: u16, new_dport: u16,
            payload in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut p = packet(src, dst, sport, dport, &payload);
            let tot = 40 + payload.len();

            let old_addr = field32(&p, 16);
            let new_addr = u32::from_ne_bytes(new_dst);
            let old_port = field16(&p, 22);
            let new_port = new_dport.to_be();

            let ip_check = replace4(field16(&p, 10), old_addr, new_addr);
            let mut tcp_check = replace4(field16(&p, 36), old_addr, new_addr);
            tcp_check = replace2(tcp_check, old_port, new_port);
            p[16..20].copy_from_slice(&new_dst);
            p[22..24].copy_from_slice(&new_dport.to_be_bytes());
            p[10..12].copy_from_slice(&ip_check.to_ne_bytes());
            p[36..38].copy_from_slice(&tcp_check.to_ne_bytes());

            // A correct checksum sums (with itself included) to zero.
            prop_assert_eq!(internet_checksum(&p[..20], 0), 0);
            prop_assert_eq!(ipv4_l4_checksum(src, new_dst, 6, &p[20..tot]), 0);
        }

        /// A UDP NAT rewrite keeps a zero checksum zero and otherwise leaves one that
        /// verifies, never zero.
        #[test]
        fn udp_update_verifies_and_keeps_zero_meaning_none(
            src: [u8; 4], dst: [u8; 4], new_dst: [u8; 4],
            sport: u16, dport: u16, new_dport: u16,
            payload in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut seg = vec![0u8; 8 + payload.len()];
            seg[0..2].copy_from_slice(&sport.to_be_bytes());
            seg[2..4].copy_from_slice(&dport.to_be_bytes());
            let len = seg.len() as u16;
            seg[4..6].copy_from_slice(&len.to_be_bytes());
            seg[8..].copy_from_slice(&payload);
            let mut c = ipv4_l4_checksum(src, dst, 17, &seg);
            if c == 0 {
                c = 0xffff;
            }
            seg[6..8].copy_from_slice(&c.to_be_bytes());
            let (old_addr, new_addr) = (u32::from_ne_bytes(dst), u32::from_ne_bytes(new_dst));
            let (old_port, new_port) = (dport.to_be(), new_dport.to_be());
            let check = field16(&seg, 6);
            let updated = udp_replace(check, old_addr, new_addr, old_port, new_port);
            prop_assert_ne!(updated, 0);
            seg[2..4].copy_from_slice(&new_dport.to_be_bytes());
            seg[6..8].copy_from_slice(&updated.to_ne_bytes());
            let verify = ipv4_l4_checksum(src, new_dst, 17, &seg);
            // All ones and zero are the same one's-complement number.
            prop_assert!(verify == 0 || verify == 0xffff, "sums to {verify:#x}");
            prop_assert_eq!(udp_replace(0, old_addr, new_addr, old_port, new_port), 0);
        }

        #[test]
        fn ttl_decrement_update_equals_full_recompute(src: [u8; 4], dst: [u8; 4], ttl in 2u8..=255) {
            let mut p = packet(src, dst, 1, 2, b"");
            p[8] = ttl;
            p[10] = 0;
            p[11] = 0;
            let c = internet_checksum(&p[..20], 0);
            p[10..12].copy_from_slice(&c.to_be_bytes());
            let old = field16(&p, 8);
            p[8] = ttl - 1;
            let new = field16(&p, 8);
            let c = replace2(field16(&p, 10), old, new);
            p[10..12].copy_from_slice(&c.to_ne_bytes());
            prop_assert_eq!(internet_checksum(&p[..20], 0), 0);
        }
    }

    fn words6(a: [u8; 16]) -> [u32; 4] {
        crate::ipv6::addr6_wire(a)
    }

    /// An IPv6 TCP or UDP segment (header and payload) with a checksum computed from
    /// scratch.
    fn segment6(
        src: [u8; 16],
        dst: [u8; 16],
        proto: u8,
        ports: (u16, u16),
        payload: &[u8],
    ) -> Vec<u8> {
        let header = if proto == 6 { 20 } else { 8 };
        let check_at = if proto == 6 { 16 } else { 6 };
        let mut seg = vec![0u8; header + payload.len()];
        seg[0..2].copy_from_slice(&ports.0.to_be_bytes());
        seg[2..4].copy_from_slice(&ports.1.to_be_bytes());
        if proto == 6 {
            seg[12] = 5 << 4;
        } else {
            let len = seg.len() as u16;
            seg[4..6].copy_from_slice(&len.to_be_bytes());
        }
        seg[header..].copy_from_slice(payload);
        let c = match ipv6_l4_checksum(src, dst, proto, &seg) {
            0 if proto == 17 => 0xffff,
            c => c,
        };
        seg[check_at..check_at + 2].copy_from_slice(&c.to_be_bytes());
        seg
    }

    #[test]
    fn the_ipv6_pseudo_header_checksum_matches_a_known_segment() {
        // A UDP datagram [2001:db8::1]:1234 -> [2001:db8::2]:53 carrying "ab", summed
        // by hand.
        let mut src = [0u8; 16];
        src[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        let mut dst = src;
        src[15] = 1;
        dst[15] = 2;
        let seg = [0x04, 0xd2, 0x00, 0x35, 0x00, 0x0a, 0x00, 0x00, b'a', b'b'];
        // Pseudo-header 0x2001+0x0db8+0x0001 + 0x2001+0x0db8+0x0002 + length 0x000a +
        // next header 0x0011 = 0x5b90; segment 0x04d2+0x0035+0x000a+0x0000+0x6162 =
        // 0x6673; 0x5b90 + 0x6673 = 0xc203, complemented.
        assert_eq!(ipv6_l4_checksum(src, dst, 17, &seg), !0xc203u16);
    }

    proptest! {
        /// An IPv6 destination NAT done incrementally (128-bit address, then port) leaves
        /// the TCP checksum a from-scratch computation over the new pseudo-header gives.
        #[test]
        fn ipv6_incremental_update_equals_full_recompute(
            src: [u8; 16], dst: [u8; 16], new_dst: [u8; 16],
            sport: u16, dport: u16, new_dport: u16,
            payload in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut seg = segment6(src, dst, 6, (sport, dport), &payload);
            let check = replace16(field16(&seg, 16), &words6(dst), &words6(new_dst));
            let check = replace2(check, dport.to_be(), new_dport.to_be());
            seg[2..4].copy_from_slice(&new_dport.to_be_bytes());
            seg[16..18].copy_from_slice(&check.to_ne_bytes());
            prop_assert_eq!(ipv6_l4_checksum(src, new_dst, 6, &seg), 0);
        }

        /// The UDP update over IPv6 verifies and never leaves a zero checksum.
        #[test]
        fn ipv6_udp_update_verifies_and_is_never_zero(
            src: [u8; 16], dst: [u8; 16], new_src: [u8; 16],
            sport: u16, dport: u16, new_sport: u16,
            payload in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut seg = segment6(src, dst, 17, (sport, dport), &payload);
            let updated = udp6_replace(
                field16(&seg, 6), &words6(src), &words6(new_src), sport.to_be(), new_sport.to_be(),
            );
            prop_assert_ne!(updated, 0);
            seg[0..2].copy_from_slice(&new_sport.to_be_bytes());
            seg[6..8].copy_from_slice(&updated.to_ne_bytes());
            let verify = ipv6_l4_checksum(new_src, dst, 17, &seg);
            prop_assert!(verify == 0 || verify == 0xffff, "sums to {verify:#x}");
        }
    }

    #[test]
    fn an_ipv6_udp_update_that_comes_out_zero_is_sent_as_all_ones() {
        // Changing a port by exactly what brings the sum to all ones: ~check is the old
        // sum, and a new port that adds its complement makes the new sum 0xffff, whose
        // checksum is 0.
        let check: u16 = 0x1234;
        let old_port: u16 = 0;
        let sum_without_port = !check;
        let new_port = !sum_without_port;
        assert_eq!(replace2(check, old_port, new_port), 0);
        let same = [1u32, 2, 3, 4];
        assert_eq!(
            udp6_replace(check, &same, &same, old_port, new_port),
            0xffff
        );
    }
}
