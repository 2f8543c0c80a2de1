//! The machine code the kernel's JIT made of a loaded BPF program, read through the
//! `bpf(2)` syscall (BPF_PROG_GET_FD_BY_ID, BPF_OBJ_GET_INFO_BY_FD), and the speculation
//! barriers in it: the verifier's Spectre hardening is one `lfence` after each stack spill
//! (x86-64, the architecture this project's hosts and CI run on).
use std::{io, os::fd::FromRawFd, os::fd::OwnedFd};

const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
/// `struct bpf_prog_info` is longer, but the fields read here are its first ones; the
/// kernel fills no more than the length it is given.
const INFO_LEN: usize = 40;
const JITED_LEN_AT: usize = 16;
const JITED_INSNS_AT: usize = 24;
const LFENCE: [u8; 3] = [0x0f, 0xae, 0xe8];

fn bpf(cmd: libc::c_long, attr: &mut [u8]) -> io::Result<i64> {
    // SAFETY: bpf(2) reads and writes at most `attr.len()` bytes of `attr`, which
    // outlives the call.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r)
}

fn info(fd: &OwnedFd, info: &mut [u8; INFO_LEN]) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut attr = [0u8; 16];
    attr[0..4].copy_from_slice(&(fd.as_raw_fd() as u32).to_ne_bytes());
    attr[4..8].copy_from_slice(&(INFO_LEN as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(info.as_mut_ptr() as u64).to_ne_bytes());
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr).map(|_| ())
}

/// The JIT image of the loaded program with id `id`.
pub fn image(id: u32) -> io::Result<Vec<u8>> {
    let mut attr = [0u8; 16];
    attr[0..4].copy_from_slice(&id.to_ne_bytes());
    let fd = bpf(BPF_PROG_GET_FD_BY_ID, &mut attr)?;
    // SAFETY: BPF_PROG_GET_FD_BY_ID returned a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let mut first = [0u8; INFO_LEN];
    info(&fd, &mut first)?;
    let len = u32::from_ne_bytes(first[JITED_LEN_AT..JITED_LEN_AT + 4].try_into().unwrap());
    if len == 0 {
        return Err(io::Error::other(format!("program {id} has no JIT image")));
    }
    let mut image = vec![0u8; len as usize];
    let mut second = [0u8; INFO_LEN];
    second[JITED_LEN_AT..JITED_LEN_AT + 4].copy_from_slice(&len.to_ne_bytes());
    second[JITED_INSNS_AT..JITED_INSNS_AT + 8]
        .copy_from_slice(&(image.as_mut_ptr() as u64).to_ne_bytes());
    info(&fd, &mut second)?;
    // A kernel that will not show JIT images (kptr_restrict) reports their length but
    // copies nothing: an empty image would count no barriers.
    if second[JITED_INSNS_AT..JITED_INSNS_AT + 8] == [0; 8] || image.iter().all(|b| *b == 0) {
        return Err(io::Error::other(format!(
            "the kernel did not copy program {id}'s JIT image"
        )));
    }
    Ok(image)
}

/// The speculation barriers in a JIT image.
pub fn barriers(image: &[u8]) -> usize {
    image.windows(LFENCE.len()).filter(|w| *w == LFENCE).count()
}
