//! The SYN cache for IPv6 handshakes: the same cache as IPv4's ([`crate::syn_cache`]),
//! its slots family-tagged rather than a map of their own.
//!
//! An IPv6 handshake takes a slot of the set its client's address (folded to one word,
//! [`crate::ipv6::fold`]) and port index, written and read exactly as an IPv4 one. What
//! differs is what the slot's middle field names and how its tag is hashed:
//!
//! - the field holds the service id rather than a service-index slot (IPv6 services are
//!   not in the index); the SYN-ACK reads the service's VIP from the VIP array by id
//!   ([`crate::limits::MAP_SERVICE_VIPS6`]);
//! - the tag is hashed from every word of the client's and the VIP's addresses
//!   ([`syn_handshake_hash6`]), starting from a constant of its own, so an IPv4 lookup
//!   never takes an IPv6 slot for its own (nor the other way round) but by a 28-bit
//!   chance, and then the backend's family tells them apart.
//!
//! Why one cache: a SYN writes a random set, and what that costs steps with the memory
//! the cache spans (see [`crate::limits::syn_cache_slots`]); a cache of its own for
//! IPv6, whose slots would carry the 16-byte VIP, would double that span and add 4 MiB on
//! every node (docs/syn-cache.md, "IPv6 handshakes", has the measurement).
use crate::{
    hash::mix32,
    ipv6::{fold, Addr6, FlowKey6},
    syn_cache::syn_set,
};

/// The set of an IPv6 handshake in a cache of `mask + 1` sets: IPv4's
/// ([`syn_set`]) over the folded client address.
#[inline(always)]
pub const fn syn_set6(seed: u32, client_addr: &Addr6, client_port: u16, mask: u32) -> u32 {
    syn_set(seed, fold(client_addr), client_port, mask)
}

/// The hash of an IPv6 handshake's client and VIP:port, seeded; each backend's tag
/// follows from it ([`crate::syn_cache::syn_tag_for`]), as for IPv4. Every word of the
/// client's address takes a round of its own (the ports ride with the last), so a client
/// can no more pass for another by choosing its own address than an IPv4 one can; the
/// VIP, one of the few the operator configured, is folded into one. Five rounds, where
/// IPv4 takes four: every packet of a handshake pays them (docs/syn-cache.md has the
/// costs).
#[inline(always)]
pub const fn syn_handshake_hash6(
    seed: u32,
    client_addr: &Addr6,
    client_port: u16,
    vip: &Addr6,
    vip_port: u16,
) -> u32 {
    let mut h = mix32(seed ^ client_addr[0] ^ 0x6a09_e667);
    h = mix32(h ^ client_addr[1]);
    h = mix32(h ^ client_addr[2]);
    h = mix32(h ^ client_addr[3] ^ ((client_port as u32) << 16 | vip_port as u32));
    mix32(h ^ fold(vip))
}

/// [`syn_handshake_hash6`] of the handshake `flow` (client -> VIP).
#[inline(always)]
pub const fn syn_handshake_hash6_of_flow(seed: u32, flow: &FlowKey6) -> u32 {
    syn_handshake_hash6(
        seed,
        &flow.src_addr,
        flow.src_port,
        &flow.dst_addr,
        flow.dst_port,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        flow::FlowKey,
        ipv6::FAMILY_IPV6,
        net::{FAMILY_IPV4, PROTO_TCP},
        syn_cache::{syn_handshake_hash_of_flow, syn_tag_for, SynEntry},
    };

    fn flow6(word: u32, port: u16) -> FlowKey6 {
        FlowKey6 {
            src_addr: [0xb80d_0120, 0, 0x1000, word],
            dst_addr: [0xb80d_0120, 0x100, 0, 0x0001_0000],
            src_port: port,
            dst_port: 0x5000,
            proto: PROTO_TCP,
            family: FAMILY_IPV6,
            _pad: [0; 2],
        }
    }

    #[test]
    fn the_hash_covers_every_word_of_the_client_the_vip_and_both_ports() {
        let f = flow6(0x0200_0000, 0x901f);
        let base = syn_handshake_hash6_of_flow(7, &f);
        let mut changed = Vec::new();
        for i in 0..4 {
            let mut g = f;
            g.src_addr[i] ^= 1;
            changed.push(syn_handshake_hash6_of_flow(7, &g));
            let mut g = f;
            g.dst_addr[i] ^= 1 << 31;
            changed.push(syn_handshake_hash6_of_flow(7, &g));
        }
        changed.push(syn_handshake_hash6_of_flow(8, &f));
        changed.push(syn_handshake_hash6(
            7,
            &f.src_addr,
            0x9020,
            &f.dst_addr,
            0x5000,
        ));
        changed.push(syn_handshake_hash6(
            7,
            &f.src_addr,
            0x901f,
            &f.dst_addr,
            0x5001,
        ));
        assert!(changed.iter().all(|c| *c != base), "{base:#x} {changed:x?}");
    }

    #[test]
    fn an_ipv6_slot_never_passes_for_the_ipv4_handshake_of_the_same_words() {
        // An IPv4 tuple whose words are the IPv6 one's folds: same set, other tag.
        let mut same = 0;
        for port in 0..20_000u16 {
            let f6 = flow6(port as u32 * 7, port);
            let f4 = FlowKey {
                src_addr: fold(&f6.src_addr),
                dst_addr: fold(&f6.dst_addr),
                src_port: port,
                dst_port: f6.dst_port,
                proto: PROTO_TCP,
                family: FAMILY_IPV4,
                _pad: [0; 2],
            };
            assert_eq!(
                syn_set6(3, &f6.src_addr, port, 0xffff),
                syn_set(3, f4.src_addr, port, 0xffff)
            );
            let h6 = syn_handshake_hash6_of_flow(3, &f6);
            let slot = SynEntry::new(syn_tag_for(h6, 5), 9, 5);
            assert!(slot.is_of(h6));
            same += slot.is_of(syn_handshake_hash_of_flow(3, &f4)) as u32;
        }
        assert_eq!(same, 0, "IPv6 slots taken for IPv4 handshakes");
    }

    #[test]
    fn clients_of_one_prefix_spread_over_the_sets() {
        let mut seen = std::collections::HashSet::new();
        for host in 0..4096u32 {
            seen.insert(syn_set6(
                0,
                &[0xb80d_0120, 0, 0x1000, host.to_be()],
                0x901f,
                1023,
            ));
        }
        assert!(seen.len() > 950, "{} of 1,024 sets", seen.len());
    }
}
