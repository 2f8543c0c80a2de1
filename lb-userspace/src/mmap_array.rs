//! A BPF array of u32 written through a memory mapping (`BPF_F_MMAPABLE`): the selection
//! tables have tens of thousands of entries per service, and one syscall per entry made
//! a 10-service rebuild take seconds. Writes through the mapping are plain stores the
//! data path sees at once; the controller only ever writes a slot no packet reads (the
//! idle one) and then flips, so no ordering beyond that is needed.
use std::os::fd::{AsFd, AsRawFd};

use anyhow::{ensure, Context as _};
use aya::maps::{Map, MapData};

pub struct MmapArray {
    // Owns the fd the mapping belongs to.
    _map: MapData,
    base: *mut u8,
    entries: usize,
    bytes: usize,
}

/// The kernel lays array elements out at a multiple of 8 bytes (`elem_size =
/// round_up(value_size, 8)` in kernel/bpf/arraymap.c), so u32 values sit 8 bytes apart.
const STRIDE: usize = 8;

// SAFETY: the mapping is plain shared memory owned by this value; nothing about it is
// tied to the thread that created it.
unsafe impl Send for MmapArray {}

impl MmapArray {
    pub fn new(map: Map, name: &str) -> anyhow::Result<Self> {
        let Map::Array(data) = map else {
            anyhow::bail!("map {name} is not an array");
        };
        let info = data.info().with_context(|| format!("map {name}"))?;
        ensure!(
            info.value_size() == 4,
            "map {name} does not hold u32 values"
        );
        let entries = info.max_entries() as usize;
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let bytes = (entries * STRIDE).div_ceil(page) * page;
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
            bytes,
        })
    }

    /// Writes (index, value) pairs.
    pub fn set_all(&mut self, entries: &[(u32, u32)]) -> anyhow::Result<()> {
        for (index, value) in entries {
            ensure!(
                (*index as usize) < self.entries,
                "index {index} beyond {} entries",
                self.entries
            );
            // SAFETY: in bounds (checked above) of a live shared mapping; the element
            // offset is 8-aligned.
            unsafe { (self.base.add(*index as usize * STRIDE) as *mut u32).write_volatile(*value) };
        }
        Ok(())
    }
}

impl Drop for MmapArray {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` mapped.
        unsafe { libc::munmap(self.base.cast(), self.bytes) };
    }
}
