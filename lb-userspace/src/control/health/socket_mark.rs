//! The routing mark on a probe's socket, for the TCP and the UDP probe alike.
use std::os::fd::AsRawFd;

/// Puts `mark` on a probe's socket (`SO_MARK`), which routes it (see `ProbeVia`).
pub fn set_mark(socket: &impl AsRawFd, mark: u32) -> std::io::Result<()> {
    // SAFETY: setsockopt reads `mark` (a c_uint of the size given) on an open socket the
    // caller holds.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MARK,
            (&mark as *const u32).cast(),
            std::mem::size_of::<u32>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
