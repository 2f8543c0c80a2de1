//! One `lbd` per pin directory. Two daemons on the same pinned maps and links would
//! each write their own tables and swap their own program onto the links, so the second
//! one takes an exclusive `flock(2)` on the pin directory itself before it touches
//! anything in the kernel, and refuses to start, naming the holder's pid, while another
//! process holds it. `lbd --detach` takes the same lock (and refuses unless forced).
//!
//! Why the directory and not a lock file beside it: bpffs holds only pinned objects and
//! directories (creating a regular file there fails with EPERM), and a lock elsewhere
//! (e.g. under /run) would not be seen by an `lbd` in another mount namespace that sees
//! the same bpffs. The kernel releases the lock when the holder exits, however it exits
//! (SIGKILL included), so a crashed lbd never blocks its successor.
use std::{
    fs::File,
    os::{
        fd::AsRawFd,
        unix::fs::{DirBuilderExt, MetadataExt},
    },
    path::{Path, PathBuf},
};

/// Why the pin directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{dir} is in use by another lbd ({holder})")]
    Held { dir: PathBuf, holder: Holder },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Who holds the lock, as /proc/locks says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holder(pub Option<u32>);

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(pid) => write!(f, "pid {pid}"),
            None => write!(f, "pid unknown"),
        }
    }
}

/// The held lock; released when dropped (or when the process exits).
#[derive(Debug)]
pub struct PinLock {
    _dir: File,
}

impl PinLock {
    /// Creates `dir` (owner-only) if it is missing, and locks it.
    pub fn acquire(dir: &Path) -> Result<Self, LockError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| LockError::Io {
                what: "creating",
                path: dir.into(),
                source,
            })?;
        Self::acquire_existing(dir)
    }

    /// Locks `dir`, which must exist.
    pub fn acquire_existing(dir: &Path) -> Result<Self, LockError> {
        let file = File::open(dir).map_err(|source| LockError::Io {
            what: "opening",
            path: dir.into(),
            source,
        })?;
        // SAFETY: flock on a descriptor we own; it reads no memory.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(Self { _dir: file });
        }
        let source = std::io::Error::last_os_error();
        if source.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(LockError::Io {
                what: "locking",
                path: dir.into(),
                source,
            });
        }
        let holder = file.metadata().ok().and_then(|meta| {
            let locks = std::fs::read_to_string("/proc/locks").ok()?;
            flock_holder(&locks, meta.dev(), meta.ino())
        });
        Err(LockError::Held {
            dir: dir.into(),
            holder: Holder(holder),
        })
    }
}

/// The pid holding a `flock` on the file `dev`/`ino`, from the text of /proc/locks
/// (`1: FLOCK  ADVISORY  WRITE 4242 00:1f:1234 0 EOF`; waiters are marked `->`).
pub fn flock_holder(locks: &str, dev: u64, ino: u64) -> Option<u32> {
    let id = format!(
        "{:02x}:{:02x}:{ino}",
        libc::major(dev as libc::dev_t),
        libc::minor(dev as libc::dev_t)
    );
    locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [_, "FLOCK", _, _, pid, file, ..] if *file == id => pid.parse().ok(),
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_holder_is_read_from_proc_locks_skipping_waiters_and_other_files() {
        let dev = libc::makedev(0, 0x1f);
        let locks = "1: POSIX  ADVISORY  WRITE 7 00:1f:1234 0 EOF\n\
                     2: FLOCK  ADVISORY  WRITE 11 00:20:1234 0 EOF\n\
                     3: FLOCK  ADVISORY  WRITE 4242 00:1f:1234 0 EOF\n\
                     3: -> FLOCK  ADVISORY  WRITE 99 00:1f:1234 0 EOF\n";
        assert_eq!(flock_holder(locks, dev, 1234), Some(4242));
        assert_eq!(flock_holder(locks, dev, 123), None);
    }

    #[test]
    fn a_second_lock_on_the_same_directory_is_refused_naming_this_process() {
        let dir = std::env::temp_dir().join(format!("lbd-pin-lock-{}", std::process::id()));
        let held = PinLock::acquire(&dir.join("pins")).unwrap();
        // A second open file description conflicts even within one process.
        match PinLock::acquire(&dir.join("pins")) {
            Err(LockError::Held { holder, .. }) => {
                assert_eq!(holder, Holder(Some(std::process::id())))
            }
            other => panic!("{other:?}"),
        }
        drop(held);
        drop(PinLock::acquire(&dir.join("pins")).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
