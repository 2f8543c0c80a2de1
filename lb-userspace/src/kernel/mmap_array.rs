//! A BPF array written through a memory mapping (`BPF_F_MMAPABLE`): the selection tables
//! have tens of thousands of entries per service, and one syscall per entry made a
//! 10-service rebuild take seconds. Writes through the mapping are stores the data path
//! sees at once:
//! - u32 entries ([`MmapArray::set_all`]) are plain stores: the controller only ever
//!   writes a slot no packet reads (the idle one) and then flips;
//! - the service index's 64-bit words ([`MmapArray::store_u64`]) are single atomic
//!   stores, each released after the ones before it, since packets read them live.
use std::{
    os::fd::{AsFd, AsRawFd},
    sync::atomic::{AtomicU64, Ordering},
};

use anyhow::{ensure, Context as _};
use aya::maps::{Map, MapData};

/// A write to an index the array does not have.
#[derive(Debug, thiserror::Error)]
#[error("index {index} beyond {entries} entries")]
pub struct OutOfRange {
    pub index: u32,
    pub entries: u32,
}

pub struct MmapArray {
    // Owns the fd the mapping belongs to.
    _map: MapData,
    base: *mut u8,
    entries: usize,
    /// Bytes from one element to the next: the kernel lays array elements out at a
    /// multiple of 8 bytes (`elem_size = round_up(value_size, 8)` in
    /// kernel/bpf/arraymap.c), so u32 values sit 8 bytes apart.
    stride: usize,
    value_size: usize,
    bytes: usize,
}

// SAFETY: the mapping is plain shared memory owned by this value; nothing about it is
// tied to the thread that created it.
unsafe impl Send for MmapArray {}
// SAFETY: through a shared reference the mapping is read (volatile), changed by atomic
// operations (`word`), or written where an atomic operation made the writer its only
// owner (a flow slot claimed by compare-and-swap, see `super::flow_table`): what
// other threads, and the data path, may do at once. Other stores take `&mut self`.
unsafe impl Sync for MmapArray {}

impl MmapArray {
    /// Maps an array whose values are `value_size` bytes.
    pub fn with_value_size(map: Map, name: &str, value_size: usize) -> anyhow::Result<Self> {
        let Map::Array(data) = map else {
            anyhow::bail!("map {name} is not an array");
        };
        let info = data.info().with_context(|| format!("map {name}"))?;
        ensure!(
            info.value_size() as usize == value_size,
            "map {name} holds {}-byte values, not {value_size}",
            info.value_size()
        );
        let entries = info.max_entries() as usize;
        let stride = value_size.next_multiple_of(8);
        // SAFETY: sysconf only reads a system constant.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let bytes = (entries * stride).div_ceil(page) * page;
        let fd = data.fd().as_fd().as_raw_fd();
        // SAFETY: mapping a BPF array fd created with BPF_F_MMAPABLE, for its own size.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        ensure!(
            base != libc::MAP_FAILED,
            "mapping map {name} into memory: {} (created without BPF_F_MMAPABLE?)",
            std::io::Error::last_os_error()
        );
        Ok(Self {
            _map: data,
            base: base.cast(),
            entries,
            stride,
            value_size,
            bytes,
        })
    }

    /// Elements in the array.
    pub fn entries(&self) -> u32 {
        self.entries as u32
    }

    /// Writes (index, value) pairs of an array of u32; if any index is beyond the
    /// array, none is written.
    pub fn set_all(&mut self, entries: &[(u32, u32)]) -> Result<(), OutOfRange> {
        assert_eq!(self.value_size, 4, "not an array of u32");
        if let Some((index, _)) = entries.iter().find(|(i, _)| *i as usize >= self.entries) {
            return Err(OutOfRange {
                index: *index,
                entries: self.entries as u32,
            });
        }
        for (index, value) in entries {
            // SAFETY: in bounds (checked above) of a live shared mapping; the element
            // offset is 8-aligned.
            unsafe {
                (self.base.add(*index as usize * self.stride) as *mut u32).write_volatile(*value)
            };
        }
        Ok(())
    }

    /// Reads element `index` of an array of u32.
    pub fn get_u32(&self, index: u32) -> anyhow::Result<u32> {
        ensure!(self.value_size == 4, "not an array of u32");
        ensure!(
            (index as usize) < self.entries,
            "index {index} beyond {} entries",
            self.entries
        );
        // SAFETY: in bounds (checked above) of a live shared mapping; the element offset
        // is 8-aligned.
        Ok(unsafe { (self.base.add(index as usize * self.stride) as *const u32).read_volatile() })
    }

    /// The first byte of element `index`, which must exist; elements are 8-aligned.
    pub fn element(&self, index: u32) -> *mut u8 {
        assert!(
            (index as usize) < self.entries,
            "element {index} is outside the array"
        );
        // SAFETY: in bounds (asserted) of a live shared mapping.
        unsafe { self.base.add(index as usize * self.stride) }
    }

    /// Bytes in each element.
    pub fn value_size(&self) -> usize {
        self.value_size
    }

    /// The 64-bit word `word` of element `index`, which must exist.
    pub fn word(&self, index: u32, word: usize) -> &AtomicU64 {
        assert!(
            (index as usize) < self.entries && (word + 1) * 8 <= self.value_size,
            "word {word} of element {index} is outside the array"
        );
        // SAFETY: in bounds (asserted) of a live shared mapping; elements start 8-aligned
        // and the word lies inside its element.
        unsafe {
            AtomicU64::from_ptr(
                self.base
                    .add(index as usize * self.stride + word * 8)
                    .cast(),
            )
        }
    }

    /// Reads word `word` of element `index`.
    pub fn load_u64(&self, index: u32, word: usize) -> u64 {
        self.word(index, word).load(Ordering::Acquire)
    }

    /// Stores word `word` of element `index` in one store, after every store before it.
    pub fn store_u64(&mut self, index: u32, word: usize, value: u64) {
        self.word(index, word).store(value, Ordering::Release);
    }
}

impl Drop for MmapArray {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` mapped.
        unsafe { libc::munmap(self.base.cast(), self.bytes) };
    }
}
