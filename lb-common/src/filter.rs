//! The address prefilter: bitmaps of VIP addresses and of backend addresses, indexed by
//! a 16-bit hash of the address. A packet whose destination is no VIP and whose source is
//! no backend (the bulk of what a gateway routes) is handed to the kernel after two array
//! reads, without a hash-map lookup. A third bitmap, of the VIP addresses of services
//! with edge protection, spares every other service's SYNs the drop memo's read. A set
//! bit only means "maybe": the maps decide.

/// 32-bit words per bitmap (65,536 bits).
pub const FILTER_WORDS: u32 = 2048;
/// Bitmap of VIP addresses (checked against destinations).
pub const FILTER_VIPS: u32 = 0;
/// Bitmap of backend addresses (checked against sources, for replies).
pub const FILTER_BACKENDS: u32 = 1;
/// Bitmap of the VIP addresses of protected services (`service::SERVICE_F_EDGE`):
/// only a SYN to one of them may find its source in the drop memo (`edge::DropMemo`).
pub const FILTER_PROTECTED: u32 = 2;
/// Words in the filter array (every bitmap).
pub const FILTER_TOTAL_WORDS: u32 = 3 * FILTER_WORDS;

/// The word index (in the filter array) and bit mask of `addr` (wire order) in `bitmap`.
#[inline(always)]
pub const fn filter_slot(bitmap: u32, addr: u32) -> (u32, u32) {
    let bit = addr.wrapping_mul(0x9e37_79b1) >> 16;
    (bitmap * FILTER_WORDS + (bit >> 5), 1 << (bit & 31))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_stay_inside_their_bitmap() {
        for addr in [0u32, 1, u32::MAX, 0x6400_000a, 0x0b00_010a] {
            for bitmap in [FILTER_VIPS, FILTER_BACKENDS, FILTER_PROTECTED] {
                let (word, mask) = filter_slot(bitmap, addr);
                assert!(word >= bitmap * FILTER_WORDS && word < (bitmap + 1) * FILTER_WORDS);
                assert_eq!(mask.count_ones(), 1);
            }
        }
    }

    #[test]
    fn consecutive_addresses_spread_over_the_bitmap() {
        let mut words = std::collections::HashSet::new();
        for host in 0..256u32 {
            words.insert(filter_slot(FILTER_VIPS, u32::from_ne_bytes([10, 1, 0, host as u8])).0);
        }
        assert!(words.len() > 200, "{} distinct words of 256", words.len());
    }
}
