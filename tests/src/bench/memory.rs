//! The memory floor under the flow-table fill figures: how long one dependent read of a
//! random cache line takes in a region of a given size, mapped in 4 KiB pages as the
//! kernel maps a BPF map's memory (`/proc/vmallocinfo` lists a hash map's buckets and
//! elements as vmalloc areas of 4 KiB pages). Looking up a random one of many live flows
//! in a table of that size reads at least one such line. The same read in a region of
//! 2 MiB pages, where one TLB entry covers 512 times as much, tells how much of that
//! read is the page walk rather than the line.
use std::time::Instant;

use super::stats::pin_to_cpu;

const LINE: usize = 64;
const PAGE: usize = 4096;
const HUGE_PAGE: usize = 2 << 20;

/// The pages a [`Region`] is mapped in.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Pages {
    /// 4 KiB, as a BPF map's memory is.
    Small,
    /// 2 MiB transparent huge pages, where the kernel has them to give.
    Huge,
}

/// A private anonymous mapping of `bytes`, in the pages asked for.
struct Region {
    base: *mut u8,
    bytes: usize,
    /// The whole mapping (address, length), inside which `base` is aligned for huge
    /// pages.
    mapping: (*mut libc::c_void, usize),
}

impl Region {
    fn new(bytes: usize, pages: Pages) -> Region {
        let bytes = bytes.div_ceil(PAGE) * PAGE;
        let align = match pages {
            Pages::Small => PAGE,
            Pages::Huge => HUGE_PAGE,
        };
        let len = bytes + align - PAGE;
        // SAFETY: a fresh anonymous mapping, checked below, unmapped in Drop.
        let mapped = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert!(
            mapped != libc::MAP_FAILED,
            "mmap of {len} bytes: {}",
            std::io::Error::last_os_error()
        );
        let base = (mapped as usize).next_multiple_of(align) as *mut libc::c_void;
        let (advice, name) = match pages {
            Pages::Small => (libc::MADV_NOHUGEPAGE, "MADV_NOHUGEPAGE"),
            Pages::Huge => (libc::MADV_HUGEPAGE, "MADV_HUGEPAGE"),
        };
        // SAFETY: inside the mapping just made.
        if unsafe { libc::madvise(base, bytes, advice) } != 0 {
            let e = std::io::Error::last_os_error();
            // EINVAL: a kernel without transparent huge pages, whose pages are small
            // anyway (`huge_share` then says so).
            assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "madvise({name}): {e}");
        }
        Region {
            base: base.cast(),
            bytes,
            mapping: (mapped, len),
        }
    }

    /// The share of the region the kernel has mapped in huge pages: the `AnonHugePages`
    /// of this process's `smaps` entries that overlap it (at most 1: an entry the kernel
    /// merged with a neighbour counts the neighbour's too).
    fn huge_share(&self) -> f64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("reading smaps");
        let start = self.base as usize;
        let kb = huge_kb_overlapping(&smaps, start, start + self.bytes);
        ((kb * 1024) as f64 / self.bytes as f64).min(1.0)
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
        // SAFETY: the mapping made in `new`, no reference to it outlives self.
        unsafe { libc::munmap(self.mapping.0, self.mapping.1) };
    }
}

/// The `AnonHugePages` kB of the `smaps` entries that overlap `[start, end)`.
fn huge_kb_overlapping(smaps: &str, start: usize, end: usize) -> usize {
    let mut inside = false;
    let mut kb = 0;
    for line in smaps.lines() {
        let range = line.split_once(' ').map_or(line, |(r, _)| r);
        let bounds = range.split_once('-').and_then(|(from, to)| {
            Some((
                usize::from_str_radix(from, 16).ok()?,
                usize::from_str_radix(to, 16).ok()?,
            ))
        });
        if let Some((from, to)) = bounds {
            inside = from < end && to > start;
        } else if let Some(field) = line.strip_prefix("AnonHugePages:").filter(|_| inside) {
            let field = field.trim().trim_end_matches("kB").trim();
            kb += field
                .parse::<usize>()
                .unwrap_or_else(|e| panic!("AnonHugePages {field:?} in smaps: {e}"));
        }
    }
    kb
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

/// Median ns per dependent read of a random line in a region of `bytes` of small pages,
/// over `rounds` rounds of `reads` reads, on CPU 0 (where the per-packet figures are
/// taken). It runs on a thread of its own, so the caller's CPU affinity stays as it was.
pub fn random_read_ns(bytes: usize, rounds: usize, reads: usize) -> f64 {
    random_read_in(bytes, Pages::Small, rounds, reads).0
}

/// Like [`random_read_ns`] in `pages`, and the share of the region the kernel mapped in
/// huge pages (below 1 for [`Pages::Huge`] when it had not enough to give).
pub fn random_read_in(bytes: usize, pages: Pages, rounds: usize, reads: usize) -> (f64, f64) {
    std::thread::spawn(move || {
        pin_to_cpu(0);
        chase(bytes, pages, rounds, reads)
    })
    .join()
    .expect("the random-read thread panicked")
}

fn chase(bytes: usize, pages: Pages, rounds: usize, reads: usize) -> (f64, f64) {
    let region = Region::new(bytes, pages);
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
    (per_round[per_round.len() / 2], region.huge_share())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_pages_are_counted_only_in_the_entries_over_the_range() {
        let smaps = "\
7f0000000000-7f0000400000 rw-p 00000000 00:00 0
Size:               4096 kB
AnonHugePages:      2048 kB
7f0000400000-7f0000a00000 rw-p 00000000 00:00 0
AnonHugePages:      4096 kB
7f0000a00000-7f0000c00000 rw-p 00000000 00:00 0 [heap]
AnonHugePages:      2048 kB
";
        let kb = |from, to| huge_kb_overlapping(smaps, from, to);
        assert_eq!(kb(0x7f00_0000_0000, 0x7f00_00a0_0000), 6144);
        assert_eq!(kb(0x7f00_0040_0000, 0x7f00_00a0_0000), 4096);
        assert_eq!(kb(0x7f00_0050_0000, 0x7f00_0060_0000), 4096);
        assert_eq!(kb(0x7f00_0000_0000, 0x7f00_0040_0000), 2048);
        assert_eq!(kb(0x7f00_00c0_0000, 0x7f00_00d0_0000), 0);
    }

    /// A region of `pages`, every page of it written (so mapped).
    fn touched(pages: Pages) -> Region {
        let region = Region::new(8 * HUGE_PAGE, pages);
        for line in (0..region.lines()).step_by(PAGE / LINE) {
            // SAFETY: `word` checks the index; nothing else uses the region.
            unsafe { region.word(line).write(line) };
        }
        region
    }

    /// The kernel's setting for 2 MiB transparent huge pages (`always`, `madvise` or
    /// `never`): its own file's, unless that says `inherit` (or, before 6.8, is absent).
    fn thp_2m_setting() -> String {
        let chosen = |path: &str| {
            let text = std::fs::read_to_string(path).ok()?;
            let (_, rest) = text.split_once('[')?;
            Some(rest.split_once(']')?.0.to_string())
        };
        let own = chosen("/sys/kernel/mm/transparent_hugepage/hugepages-2048kB/enabled");
        match own.as_deref() {
            Some("inherit") | None => chosen("/sys/kernel/mm/transparent_hugepage/enabled")
                .unwrap_or_else(|| "never".into()),
            Some(s) => s.to_string(),
        }
    }

    #[test]
    fn huge_pages_are_where_they_were_asked_for() {
        let setting = thp_2m_setting();
        let huge = touched(Pages::Huge).huge_share();
        if setting == "never" {
            assert_eq!(huge, 0.0, "no transparent huge pages here");
        } else {
            assert!(
                huge > 0.0,
                "none of a huge-page region in huge pages ({setting})"
            );
        }
        assert_eq!(touched(Pages::Small).huge_share(), 0.0);
    }

    #[test]
    fn the_random_order_visits_every_line_once_per_cycle() {
        let region = Region::new(64 * LINE, Pages::Small);
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
