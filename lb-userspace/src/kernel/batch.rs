//! Reading a whole hash map a batch at a time (`BPF_MAP_LOOKUP_BATCH`, Linux 5.6 and
//! later): one syscall per few thousand entries, where aya's iterator makes two per entry
//! (the next key, then its value). lbd walks the LRU flow maps every 2 s (expiry, the
//! active-flow reconciliation) and the IPv6 flow table is all LRU maps, so at a million
//! entries a key-by-key walk kept a core busy.
//!
//! Only for aya's `HashMap` (hash and LRU hash maps, whose key and value sizes aya checks
//! when it opens them): the kernel writes a hash map's cursor as a 4-byte bucket index,
//! but other map types' as a whole key, and the buffers here are sized for this type's
//! keys and values. An entry added or deleted during the walk may be seen or not, as with
//! a key-by-key walk; an entry is never seen twice (the kernel copies bucket by bucket,
//! each under its lock, and never splits one). Kernels before 6.1 skipped a bucket whose
//! lock was busy without saying so; later ones return the error, which ends the walk.
use std::{
    borrow::Borrow,
    os::fd::{AsFd as _, AsRawFd as _},
};

use aya::{
    maps::{HashMap, IterableMap as _, MapData, MapError},
    sys::SyscallError,
    Pod,
};

/// Entries a call asks for at first. The kernel hands out whole buckets: one holding more
/// entries than there is room for answers ENOSPC, and the room doubles.
const BATCH: usize = 4096;
/// The room never grows past this: no bucket of a sane hash map holds that many.
const MAX_BATCH: usize = 1 << 20;

/// `enum bpf_cmd`'s `BPF_MAP_LOOKUP_BATCH`.
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// The member of `union bpf_attr` that the `BPF_MAP_*_BATCH` commands read.
#[repr(C)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Every entry of `map`, read in batches; see the module doc. An error ends the walk after
/// it is yielded.
pub fn entries<T: Borrow<MapData>, K: Pod, V: Pod>(map: &HashMap<T, K, V>) -> Batches<'_, K, V> {
    Batches {
        map: map.map(),
        keys: Vec::new(),
        values: Vec::new(),
        have: 0,
        next: 0,
        cursor: None,
        done: false,
    }
}

/// The iterator of [`entries`].
pub struct Batches<'a, K, V> {
    map: &'a MapData,
    keys: Vec<K>,
    values: Vec<V>,
    /// Entries of the last batch, and the next one to yield.
    have: usize,
    next: usize,
    /// Where the next batch starts (the kernel's token); `None` before the first.
    cursor: Option<u64>,
    done: bool,
}

impl<K: Pod, V: Pod> Batches<'_, K, V> {
    /// Reads the next batch into the buffers; `Ok(false)` once the map has no more.
    fn fill(&mut self) -> Result<bool, MapError> {
        if self.keys.is_empty() {
            self.grow(BATCH);
        }
        loop {
            let mut token = 0u64;
            let mut attr = BatchAttr {
                in_batch: self.cursor.as_ref().map_or(0, |c| c as *const u64 as u64),
                out_batch: &mut token as *mut u64 as u64,
                keys: self.keys.as_mut_ptr() as u64,
                values: self.values.as_mut_ptr() as u64,
                count: self.keys.len() as u32,
                map_fd: self.map.fd().as_fd().as_raw_fd() as u32,
                elem_flags: 0,
                flags: 0,
            };
            // SAFETY: `attr` is the command's attribute, as large as it says; the kernel
            // writes at most `count` keys and values into buffers of that many, and a
            // hash map's token (a bucket index) into `token`.
            let ret = unsafe {
                libc::syscall(
                    libc::SYS_bpf,
                    BPF_MAP_LOOKUP_BATCH,
                    &mut attr as *mut BatchAttr,
                    std::mem::size_of::<BatchAttr>(),
                )
            };
            let got = (attr.count as usize).min(self.keys.len());
            if ret == 0 {
                self.cursor = Some(token);
                if got == 0 {
                    continue;
                }
                (self.have, self.next) = (got, 0);
                return Ok(true);
            }
            let error = std::io::Error::last_os_error();
            match error.raw_os_error() {
                // The end of the map, with what the last call read.
                Some(libc::ENOENT) => {
                    self.done = true;
                    (self.have, self.next) = (got, 0);
                    return Ok(got > 0);
                }
                Some(libc::ENOSPC) if got == 0 && self.keys.len() < MAX_BATCH => {
                    self.grow(self.keys.len() * 2);
                }
                _ => {
                    return Err(MapError::SyscallError(SyscallError {
                        call: "bpf_map_lookup_batch",
                        io_error: error,
                    }))
                }
            }
        }
    }

    fn grow(&mut self, room: usize) {
        // SAFETY: `Pod` types are plain bytes, for which all zeroes is a value.
        let zero_key: K = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let zero_value: V = unsafe { std::mem::zeroed() };
        self.keys = vec![zero_key; room];
        self.values = vec![zero_value; room];
    }
}

impl<K: Pod, V: Pod> Iterator for Batches<'_, K, V> {
    type Item = Result<(K, V), MapError>;

    fn next(&mut self) -> Option<Self::Item> {
        while self.next == self.have {
            if self.done {
                return None;
            }
            match self.fill() {
                Ok(true) => {}
                Ok(false) => return None,
                Err(e) => {
                    self.done = true;
                    (self.have, self.next) = (0, 0);
                    return Some(Err(e));
                }
            }
        }
        let i = self.next;
        self.next += 1;
        Some(Ok((self.keys[i], self.values[i])))
    }
}
