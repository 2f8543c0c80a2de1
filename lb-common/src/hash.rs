//! The flow hash. Both the data path (to index the Maglev ring) and the controller (to
//! predict placements in tests and tools) compute it, so it lives here.
//!
//! For several LB nodes behind one ECMP router to place a flow identically, the hash must
//! be a pure function of the packet and a cluster-wide seed from config: no per-node
//! randomness, no per-boot key. The inputs are the wire-order integers of
//! [`crate::flow::FlowKey`], loaded little-endian (the only byte order BPF hosts of this
//! project run on).

use crate::flow::FlowKey;

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
}
