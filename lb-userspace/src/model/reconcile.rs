//! Keeps the kernel's per-backend active-flow counts true. The data path counts a flow up
//! when it creates it and down when it sees it close (RST, or a FIN from each side); a
//! flow that ends without either, or whose entry the LRU evicts, is never counted down.
//! The controller finds those by counting the open flows actually in the flow table and
//! records the difference in a per-backend adjustment that only it writes (the data path
//! reads active = counted - adjustment), so it never races the data path's atomic counts.
//!
//! A correction is only made for a backend whose kernel count did not move while the
//! table was being scanned: then the scan and the count describe the same moment, and
//! the correction is exact. A busy backend is corrected on a later, quieter scan.

/// One backend's figures from one scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observed {
    pub id: u32,
    /// The data path's opened-minus-closed count, read before and after the scan.
    pub counted_before: u64,
    pub counted_after: u64,
    /// The adjustment currently in the kernel.
    pub adjust: u64,
    /// Open (counted, not closed) entries of this backend found in the flow table.
    pub open_in_table: u64,
}

/// New adjustment values for the backends whose count drifted: (id, adjustment).
pub fn corrections(observed: &[Observed]) -> Vec<(u32, u64)> {
    observed
        .iter()
        .filter(|o| o.counted_before == o.counted_after)
        .filter_map(|o| {
            let active = o.counted_before.wrapping_sub(o.adjust);
            (active != o.open_in_table).then(|| {
                let drift = active.wrapping_sub(o.open_in_table);
                (o.id, o.adjust.wrapping_add(drift))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(counted: (u64, u64), adjust: u64, open: u64) -> Observed {
        Observed {
            id: 7,
            counted_before: counted.0,
            counted_after: counted.1,
            adjust,
            open_in_table: open,
        }
    }

    #[test]
    fn exact_counts_need_nothing() {
        assert!(corrections(&[seen((5, 5), 0, 5), seen((9, 9), 4, 5)]).is_empty());
    }

    #[test]
    fn evicted_flows_are_subtracted() {
        // 10 counted, 3 evicted without close: 7 in the table.
        assert_eq!(corrections(&[seen((10, 10), 0, 7)]), [(7, 3)]);
        // An earlier adjustment of 3, two more evicted since.
        assert_eq!(corrections(&[seen((12, 12), 3, 7)]), [(7, 5)]);
    }

    #[test]
    fn a_count_that_moved_during_the_scan_is_left_for_later() {
        assert!(corrections(&[seen((10, 11), 0, 7)]).is_empty());
    }

    #[test]
    fn an_adjustment_that_went_too_far_is_taken_back() {
        // Counted 4, adjusted by 3 earlier, but 2 flows are open: active must be 2.
        assert_eq!(corrections(&[seen((4, 4), 3, 2)]), [(7, 2)]);
    }
}
