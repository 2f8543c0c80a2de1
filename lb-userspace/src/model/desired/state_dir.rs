//! The state file's directory, opened once and used through its descriptor: files are
//! created with `openat(O_CREAT | O_EXCL | O_NOFOLLOW)` under random names and moved
//! into place with `renameat`, so a symlink planted at any name we use is never
//! followed, and a renamed or swapped directory path cannot redirect a write. A
//! directory that anyone but its owner (root or lbd's own user) may write is refused
//! outright: such a user could replace the state itself.
use std::{
    ffi::CString,
    fs::{self, File},
    io,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::{
            ffi::OsStrExt,
            fs::{DirBuilderExt, MetadataExt},
        },
    },
    path::{Path, PathBuf},
};

/// Why a state directory is not safe to use.
#[derive(Debug, thiserror::Error)]
#[error(
    "state directory {path} (mode {mode:04o}, owner uid {uid}) {why}: another user could make lbd overwrite or replace its state; make it owned by root (or lbd's user) with mode 0700"
)]
pub struct UnsafeDir {
    pub path: PathBuf,
    pub mode: u32,
    pub uid: u32,
    pub why: &'static str,
}

/// Refuses a directory (its metadata) that another user may write.
pub fn check(path: &Path, meta: &fs::Metadata) -> Result<(), UnsafeDir> {
    let mode = meta.mode() & 0o7777;
    let uid = meta.uid();
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    let why = if uid != 0 && uid != me {
        "is owned by another user"
    } else if mode & 0o022 != 0 {
        "is writable by group or others"
    } else {
        return Ok(());
    };
    Err(UnsafeDir {
        path: path.into(),
        mode,
        uid,
        why,
    })
}

/// Checks the directory at `path` if it exists (at start-up and `--check`; a missing
/// one is created 0700 on the first write).
pub fn check_existing(path: &Path) -> Result<(), String> {
    match fs::metadata(path) {
        Ok(meta) => check(path, &meta).map_err(|e| e.to_string()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("state directory {}: {e}", path.display())),
    }
}

pub struct StateDir {
    path: PathBuf,
    fd: OwnedFd,
}

fn c_name(name: &str) -> io::Result<CString> {
    CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

impl StateDir {
    /// Opens (creating it 0700 if missing) the directory at `path`, and checks it
    /// through the descriptor, so the directory checked is the one written.
    pub fn open(path: &Path) -> io::Result<Self> {
        // The state names every backend of the LB: owner-only, like the admin socket.
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)?;
        let c_path = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: a valid NUL-terminated path; the descriptor is owned below.
        let fd = cvt(unsafe {
            libc::open(
                c_path.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        })?;
        // SAFETY: `fd` was just opened and is owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let dir = Self {
            path: path.into(),
            fd,
        };
        dir.recheck()?;
        Ok(dir)
    }

    /// Checks the open directory again (one fstat): its mode or owner may have changed
    /// since it was opened.
    pub fn recheck(&self) -> io::Result<()> {
        let meta = self.as_file()?.metadata()?;
        check(&self.path, &meta).map_err(io::Error::other)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn as_file(&self) -> io::Result<File> {
        Ok(File::from(self.fd.try_clone()?))
    }

    fn open_at(&self, name: &str, flags: libc::c_int) -> io::Result<File> {
        let c = c_name(name)?;
        // SAFETY: a valid directory descriptor and NUL-terminated name; the result is
        // owned by the returned File.
        let fd = cvt(unsafe {
            libc::openat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                flags | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                0o600 as libc::c_uint,
            )
        })?;
        // SAFETY: `fd` was just opened and is owned by nothing else.
        Ok(unsafe { File::from_raw_fd(fd) })
    }

    /// Replaces `name` with `bytes` atomically: a new file under an unpredictable name
    /// (O_EXCL: never an existing file or symlink) is written and fsynced, renamed over
    /// `name` (rename(2) replaces a symlink there rather than following it), and the
    /// directory fsynced so that the rename survives a crash (fsync(2)).
    pub fn replace(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        use std::io::Write as _;
        let (temp, mut file) = self.create_temp(name)?;
        let result = (|| {
            file.write_all(bytes)?;
            file.sync_all()?;
            self.rename(&temp, name)?;
            self.sync()
        })();
        if result.is_err() {
            let _ = self.remove(&temp);
        }
        result
    }

    fn create_temp(&self, name: &str) -> io::Result<(String, File)> {
        let mut last = io::Error::from(io::ErrorKind::AlreadyExists);
        for _ in 0..8 {
            let temp = format!(".{name}.tmp-{:016x}", fastrand::u64(..));
            match self.open_at(&temp, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL) {
                Ok(file) => return Ok((temp, file)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let (from, to) = (c_name(from)?, c_name(to)?);
        let fd = self.fd.as_raw_fd();
        // SAFETY: valid descriptor and NUL-terminated names.
        cvt(unsafe { libc::renameat(fd, from.as_ptr(), fd, to.as_ptr()) }).map(drop)
    }

    /// Opens `name` for appending; a symlink there is refused (ELOOP), not followed.
    pub fn open_append(&self, name: &str) -> io::Result<File> {
        let file = self.open_at(name, libc::O_WRONLY | libc::O_APPEND)?;
        if !file.metadata()?.is_file() {
            return Err(io::Error::other(format!("{name} is not a regular file")));
        }
        Ok(file)
    }

    pub fn remove(&self, name: &str) -> io::Result<()> {
        let c = c_name(name)?;
        // SAFETY: valid descriptor and NUL-terminated name.
        cvt(unsafe { libc::unlinkat(self.fd.as_raw_fd(), c.as_ptr(), 0) }).map(drop)
    }

    pub fn sync(&self) -> io::Result<()> {
        self.as_file()?.sync_all()
    }
}
