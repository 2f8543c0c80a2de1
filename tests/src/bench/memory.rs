//! The memory floor under the flow-table fill figures: how long one dependent read of a
//! random cache line takes in a region of a given size, mapped in 4 KiB pages as the
//! kernel maps a BPF map's memory (`/proc/vmallocinfo` lists a hash map's buckets and
//! elements as vmalloc areas of 4 KiB pages). Looking up a random one of many live flows
//! in a table of that size reads at least one such line.
use std::time::Instant;

use super::stats::pin_to_cpu;

const LINE: usize = 64;
const PAGE: usize = 4096;

/// A private anonymous mapping of `bytes`, kept out of transparent huge pages.
struct Region {
    base: *mut u8,
    bytes: usize,
}

impl Region {
    fn small_pages(bytes: usize) -> Region {
        let bytes = bytes.div_ceil(PAGE) * PAGE;
        // SAFETY: a fresh anonymous mapping, checked below, unmapped in Drop.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert!(
            base != libc::MAP_FAILED,
            "mmap of {bytes} bytes: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: the mapping just made.
        if unsafe { libc::madvise(base, bytes, libc::MADV_NOHUGEPAGE) } != 0 {
            let e = std::io::Error::last_os_error();
            // EINVAL: a kernel without transparent huge pages, whose pages are small
            // anyway.
            assert_eq!(
                e.raw_os_error(),
                Some(libc::EINVAL),
                "madvise(MADV_NOHUGEPAGE): {e}"
            );
        }
        Region {
            base: base.cast(),
            bytes,
        }
    }

    fn lines(&self) -> usize {
        self.bytes / LINE
    }

    /// The word at the start of cache line `i`.
    fn word(&self, i: usize) -> *mut usize {
        assert!(i < self.lines());
        // SAFETY: in bounds (checked), line-aligned.
        unsafe { self.base.add(i * LINE).cast() }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `small_pages`, no reference to it outlives self.
        unsafe { libc::munmap(self.base.cast(), self.bytes) };
    }
}

/// Links the region's cache lines into one cycle in a seeded random order: each line's
/// first word holds the index of the next, so every read depends on the one before.
fn link_randomly(region: &Region, mut seed: u64) {
    let n = region.lines();
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        order.swap(i, (seed % (i as u64 + 1)) as usize);
    }
    for w in 0..n {
        // SAFETY: `word` is in bounds and nothing else reads the region meanwhile.
        unsafe { region.word(order[w]).write(order[(w + 1) % n]) };
    }
}

/// Median ns per dependent read of a random line in a region of `bytes`, over `rounds`
/// rounds of `reads` reads, on CPU 0 (where the per-packet figures are taken). It runs
/// on a thread of its own, so the caller's CPU affinity stays as it was.
pub fn random_read_ns(bytes: usize, rounds: usize, reads: usize) -> f64 {
    std::thread::spawn(move || {
        pin_to_cpu(0);
        chase(bytes, rounds, reads)
    })
    .join()
    .expect("the random-read thread panicked")
}

fn chase(bytes: usize, rounds: usize, reads: usize) -> f64 {
    let region = Region::small_pages(bytes);
    link_randomly(&region, 0x2545_f491_4f6c_dd1d ^ bytes as u64);
    let base = region.base;
    // SAFETY: every index stored by `link_randomly` is a line of the region, so each
    // read is of an aligned word inside the mapping. Unchecked: the bounds check of
    // `Region::word` would be timed with the read.
    let next = |at: usize| unsafe { base.add(at * LINE).cast::<usize>().read_volatile() };
    let mut at = 0usize;
    // One pass first, so what fits in the caches is there before the timed rounds.
    for _ in 0..region.lines() {
        at = next(at);
    }
    let mut per_round: Vec<f64> = (0..rounds)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..reads {
                at = next(at);
            }
            start.elapsed().as_nanos() as f64 / reads as f64
        })
        .collect();
    std::hint::black_box(at);
    per_round.sort_by(f64::total_cmp);
    per_round[per_round.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_random_order_visits_every_line_once_per_cycle() {
        let region = Region::small_pages(64 * LINE);
        link_randomly(&region, 7);
        let mut seen = vec![false; region.lines()];
        let mut at = 0;
        for _ in 0..region.lines() {
            assert!(!seen[at], "line {at} visited twice in one cycle");
            seen[at] = true;
            // SAFETY: `word` checks the index; nothing writes the region meanwhile.
            at = unsafe { region.word(at).read() };
        }
        assert_eq!(at, 0, "the chain closes after every line");
    }
}
