//! A set of flow keys in about one byte a key: it never answers "no" for a key it holds,
//! and answers "maybe" for about 5% of the keys it does not (two bits a key among eight
//! a key). What a walk of an LRU map keeps to tell which keys another map's entries lack,
//! where a `HashSet` of millions of keys would take tens of bytes each.
use lb_common::{flow::FlowKey, flow_slots::key_words};

pub struct KeySketch {
    words: Vec<u64>,
    /// Bits in `words`, less one (a power of two).
    mask: u64,
}

/// splitmix64's finalizer: every input bit moves every output bit.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl KeySketch {
    /// Room for `keys` keys at about 5% false "maybe".
    pub fn with_capacity(keys: usize) -> Self {
        let bits = (keys.max(8) * 8).next_power_of_two();
        Self {
            words: vec![0; bits / 64],
            mask: bits as u64 - 1,
        }
    }

    fn bits(&self, key: &FlowKey) -> [u64; 2] {
        let (a, b) = key_words(key);
        let h = mix(a ^ mix(b));
        [h & self.mask, (h >> 32) & self.mask]
    }

    pub fn insert(&mut self, key: &FlowKey) {
        for bit in self.bits(key) {
            self.words[(bit / 64) as usize] |= 1 << (bit % 64);
        }
    }

    /// False only for a key never inserted.
    pub fn may_contain(&self, key: &FlowKey) -> bool {
        self.bits(key)
            .iter()
            .all(|&bit| self.words[(bit / 64) as usize] & (1 << (bit % 64)) != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u32) -> FlowKey {
        FlowKey {
            src_addr: 0x0a00_0000 | (n >> 16),
            dst_addr: 0x0a00_0064,
            src_port: n as u16,
            dst_port: 80,
            proto: 6,
            family: 2,
            _pad: [0; 2],
        }
    }

    #[test]
    fn every_key_inserted_is_kept_and_about_one_in_twenty_others_is_a_false_maybe() {
        let n = 100_000;
        let mut sketch = KeySketch::with_capacity(n as usize);
        for i in 0..n {
            sketch.insert(&key(i));
        }
        assert!((0..n).all(|i| sketch.may_contain(&key(i))));
        let false_maybe = (n..2 * n).filter(|&i| sketch.may_contain(&key(i))).count();
        // Two bits of 8 a key, filled to 1 - e^(-2/8): (0.221)^2 = 4.9% expected.
        assert!(
            (2_000..8_000).contains(&false_maybe),
            "{false_maybe} false maybes of {n}"
        );
        let empty = KeySketch::with_capacity(0);
        assert!(!empty.may_contain(&key(1)));
    }
}
