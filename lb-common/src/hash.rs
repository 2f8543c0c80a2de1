//! The flow hash. Both the data path (to index the Maglev ring) and the controller (to
//! predict placements in tests and tools) compute it, so it lives here.
//!
//! For several LB nodes behind one ECMP router to place a flow identically, the hash must
//! be a pure function of the packet and a cluster-wide seed from config: no per-node
//! randomness, no per-boot key. The inputs are the wire-order integers of
//! [`crate::flow::FlowKey`], loaded little-endian (the only byte order BPF hosts of this
//! project run on).

use crate::{
    flow::FlowKey,
    ipv6::{Addr6, FlowKey6},
};

/// The 32-bit finalizer of MurmurHash3: cheap (two multiplies) and every input bit
/// affects every output bit, which the ring index needs.
#[inline(always)]
pub const fn mix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

/// Hash of a flow in the client -> VIP direction.
#[inline(always)]
pub const fn flow_hash(key: &FlowKey, seed: u32) -> u32 {
    let mut h = mix32(seed ^ 0x9e37_79b9);
    h = mix32(h ^ key.src_addr);
    h = mix32(h ^ key.dst_addr);
    h = mix32(h ^ (((key.src_port as u32) << 16) | key.dst_port as u32));
    mix32(h ^ (((key.proto as u32) << 8) | key.family as u32))
}

/// Hash of the client address alone, for source-hash affinity: every port of one client
/// lands on the same ring slot.
#[inline(always)]
pub const fn source_hash(src_addr: u32, seed: u32) -> u32 {
    mix32(mix32(seed ^ 0x7f4a_7c15) ^ src_addr)
}

/// Hash of an IPv6 flow in the client -> VIP direction: [`flow_hash`]'s rounds over every
/// word of both addresses, so that clients of one /64 (which differ only in the low words)
/// spread as widely as IPv4 clients do.
#[inline(always)]
pub const fn flow_hash6(key: &FlowKey6, seed: u32) -> u32 {
    let mut h = mix32(seed ^ 0x9e37_79b9);
    h = mix_words(h, &key.src_addr);
    h = mix_words(h, &key.dst_addr);
    h = mix32(h ^ (((key.src_port as u32) << 16) | key.dst_port as u32));
    mix32(h ^ (((key.proto as u32) << 8) | key.family as u32))
}

/// [`source_hash`] of an IPv6 client address.
#[inline(always)]
pub const fn source_hash6(src_addr: &Addr6, seed: u32) -> u32 {
    mix_words(mix32(seed ^ 0x7f4a_7c15), src_addr)
}

/// `h` mixed with each word of an IPv6 address in turn.
#[inline(always)]
const fn mix_words(mut h: u32, addr: &Addr6) -> u32 {
    h = mix32(h ^ addr[0]);
    h = mix32(h ^ addr[1]);
    h = mix32(h ^ addr[2]);
    mix32(h ^ addr[3])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(src_port: u16) -> FlowKey {
        FlowKey {
            src_addr: u32::from_ne_bytes([10, 10, 0, 2]),
            dst_addr: u32::from_ne_bytes([10, 0, 0, 100]),
            src_port: src_port.to_be(),
            dst_port: 80u16.to_be(),
            proto: 6,
            family: 4,
            _pad: [0; 2],
        }
    }

    #[test]
    fn hash_is_a_pure_function_of_key_and_seed() {
        assert_eq!(flow_hash(&key(40000), 7), flow_hash(&key(40000), 7));
        assert_ne!(flow_hash(&key(40000), 7), flow_hash(&key(40000), 8));
        assert_ne!(flow_hash(&key(40000), 7), flow_hash(&key(40001), 7));
    }

    #[test]
    fn consecutive_source_ports_spread_over_buckets() {
        // Clients open connections from consecutive ephemeral ports; those must not
        // cluster on a few ring slots.
        let mut buckets = [0u32; 16];
        for port in 30000..46000u16 {
            buckets[(flow_hash(&key(port), 1) % 16) as usize] += 1;
        }
        for (i, n) in buckets.iter().enumerate() {
            assert!((900..=1100).contains(n), "bucket {i} got {n} of 16000");
        }
    }

    /// Golden vectors: the data path places every flow by these values (the ring slot is
    /// `hash % ring_size`, see `service::ring_index`), and every LB node of a tier must
    /// compute the same ones. A change that makes this test fail moves (nearly) every
    /// established flow to another backend when nodes of two versions serve side by side
    /// or a node is upgraded: a breaking upgrade, see docs/tier.md ("Identical tables on
    /// every node"). Do not update the values; keep the old function instead. They were
    /// checked against an independent implementation of the documented algorithm.
    #[test]
    fn golden_flow_and_source_hashes_are_unchanged() {
        type Tuple = ([u8; 4], [u8; 4], u16, u16);
        fn wire_key((src, dst, src_port, dst_port): Tuple) -> FlowKey {
            FlowKey {
                src_addr: crate::net::ipv4_wire(src),
                dst_addr: crate::net::ipv4_wire(dst),
                src_port: crate::net::port_wire(src_port),
                dst_port: crate::net::port_wire(dst_port),
                proto: crate::net::PROTO_TCP,
                family: crate::net::FAMILY_IPV4,
                _pad: [0; 2],
            }
        }
        let tuples: [Tuple; 5] = [
            ([10, 10, 0, 2], [10, 0, 0, 100], 40000, 80),
            ([192, 168, 1, 1], [10, 0, 0, 100], 1024, 443),
            ([1, 2, 3, 4], [5, 6, 7, 8], 65535, 1),
            ([0, 0, 0, 0], [0, 0, 0, 0], 0, 0),
            ([203, 0, 113, 7], [198, 51, 100, 10], 51515, 8080),
        ];
        // (seed, tuple, its flow hash, the source hash of its client address);
        // 0x4c42_5844 is the default `cluster.hash_seed`.
        let golden: [(u32, usize, u32, u32); 15] = [
            (0, 0, 0x3987_0060, 0xc760_b1f4),
            (0, 1, 0xc447_fabb, 0xb91d_23fc),
            (0, 2, 0x53f8_7e9f, 0x6294_33d4),
            (0, 3, 0x5c93_0351, 0x346b_92aa),
            (0, 4, 0x3208_2855, 0x0535_f69f),
            (0x4c42_5844, 0, 0x7b8d_794c, 0xea4b_9e3f),
            (0x4c42_5844, 1, 0xcaad_805f, 0x1ed3_60af),
            (0x4c42_5844, 2, 0x44ea_7507, 0x40fb_4dd8),
            (0x4c42_5844, 3, 0x51d4_164e, 0x5a8a_df74),
            (0x4c42_5844, 4, 0xa22a_62e0, 0x8909_831e),
            (0xffff_ffff, 0, 0x26cf_1c1d, 0xc00d_abf7),
            (0xffff_ffff, 1, 0xf308_b095, 0xaeb9_6365),
            (0xffff_ffff, 2, 0x2a32_e111, 0x483b_7897),
            (0xffff_ffff, 3, 0x7459_8873, 0x3f64_0af1),
            (0xffff_ffff, 4, 0x1d4c_8a38, 0xcd47_f3b1),
        ];
        for (seed, i, flow, source) in golden {
            let key = wire_key(tuples[i]);
            let tuple = tuples[i];
            assert_eq!(
                flow_hash(&key, seed),
                flow,
                "flow hash of {tuple:?} under seed {seed:#x}"
            );
            assert_eq!(
                source_hash(key.src_addr, seed),
                source,
                "source hash of {:?} under seed {seed:#x}",
                tuple.0
            );
        }
        // The slot a hash selects in a ring of 65537 entries (service 0, first copy).
        let slots = [64960, 46515, 12317, 50299, 49335];
        for ((_, _, hash, _), slot) in golden[5..10].iter().zip(slots) {
            assert_eq!(crate::service::ring_index(0, 0, 65537, *hash), slot);
        }
    }

    fn key6(src_last: u8, src_port: u16) -> FlowKey6 {
        let mut src = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        src[15] = src_last;
        let vip = [
            0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x64,
        ];
        FlowKey6 {
            src_addr: crate::ipv6::addr6_wire(src),
            dst_addr: crate::ipv6::addr6_wire(vip),
            src_port: src_port.to_be(),
            dst_port: 80u16.to_be(),
            proto: 6,
            family: crate::ipv6::FAMILY_IPV6,
            _pad: [0; 2],
        }
    }

    #[test]
    fn the_ipv6_hash_is_a_pure_function_of_every_field_and_the_seed() {
        let base = key6(2, 40000);
        assert_eq!(flow_hash6(&base, 7), flow_hash6(&key6(2, 40000), 7));
        assert_ne!(flow_hash6(&base, 7), flow_hash6(&base, 8));
        assert_ne!(flow_hash6(&base, 7), flow_hash6(&key6(2, 40001), 7));
        assert_ne!(flow_hash6(&base, 7), flow_hash6(&key6(3, 40000), 7));
        // Every word of either address counts, not only a fold of them: two addresses
        // whose words are swapped fold alike but hash apart.
        let mut swapped = base;
        swapped.src_addr.swap(2, 3);
        swapped.src_addr[2] ^= 1;
        let mut other = base;
        other.src_addr[3] ^= 1;
        assert_eq!(
            crate::ipv6::fold(&swapped.src_addr) ^ crate::ipv6::fold(&base.src_addr),
            1
        );
        assert_ne!(flow_hash6(&swapped, 7), flow_hash6(&other, 7));
        for word in 0..4 {
            let mut dst = base;
            dst.dst_addr[word] ^= 0x100;
            assert_ne!(flow_hash6(&dst, 7), flow_hash6(&base, 7), "dst word {word}");
        }
        let mut udp = base;
        udp.proto = 17;
        assert_ne!(flow_hash6(&udp, 7), flow_hash6(&base, 7));
    }

    #[test]
    fn ipv6_clients_of_one_subnet_spread_over_buckets() {
        let mut buckets = [0u32; 16];
        for port in 30000..46000u16 {
            buckets[(flow_hash6(&key6(2, port), 1) % 16) as usize] += 1;
        }
        for (i, n) in buckets.iter().enumerate() {
            assert!((900..=1100).contains(n), "bucket {i} got {n} of 16000");
        }
        let mut buckets = [0u32; 16];
        for host in 0..=255u8 {
            for hi in 0..64u8 {
                let mut k = key6(host, 40000);
                k.src_addr[2] ^= u32::from_ne_bytes([0, 0, 0, hi]);
                buckets[(source_hash6(&k.src_addr, 1) % 16) as usize] += 1;
            }
        }
        for (i, n) in buckets.iter().enumerate() {
            assert!((900..=1150).contains(n), "bucket {i} got {n} of 16384");
        }
    }

    #[test]
    fn the_ipv6_source_hash_ignores_ports_and_follows_the_address() {
        let (a, b) = (key6(2, 40000), key6(2, 50000));
        assert_eq!(source_hash6(&a.src_addr, 9), source_hash6(&b.src_addr, 9));
        assert_ne!(
            source_hash6(&a.src_addr, 9),
            source_hash6(&key6(3, 40000).src_addr, 9)
        );
    }
}
