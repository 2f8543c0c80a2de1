//! A tc ingress program for the tier lab's routers that forgets a packet's flow hash
//! (`bpf_set_hash_invalid`), so that the router's multipath selection hashes the
//! headers (with `fib_multipath_hash_policy=1`, the 5-tuple) as a real router does.
//!
//! A packet that crossed a veth still carries the sending socket's random hash
//! (`skb->hash`, flagged as an L4 hash), and `fib_multipath_hash()` returns that hash
//! instead of dissecting the packet: flows would be spread by socket, a retransmitted SYN
//! (whose socket picked a new hash) could reach another node, and `ip route get ... sport
//! N` would not predict the next hop. A physical NIC computes the hash from the headers.
//!
//! The program is three instructions, loaded with the `bpf` syscall (it needs no ELF
//! object and no map), pinned for a moment so that `tc` can attach it, then unpinned: the
//! filter keeps it alive until the router's namespace goes.
use std::{ffi::CString, path::Path};

use crate::netns;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
const BPF_FUNC_SET_HASH_INVALID: i32 = 41;

/// `call bpf_set_hash_invalid(skb)` (the context is already in r1); `r0 = TC_ACT_OK`;
/// `exit`. Each instruction: opcode, registers (dst low nibble, src high), offset, imm.
fn instructions() -> [u64; 3] {
    fn insn(code: u8, regs: u8, off: i16, imm: i32) -> u64 {
        u64::from(code)
            | u64::from(regs) << 8
            | u64::from(off as u16) << 16
            | u64::from(imm as u32) << 32
    }
    [
        insn(0x85, 0, 0, BPF_FUNC_SET_HASH_INVALID), // BPF_JMP | BPF_CALL
        insn(0xb7, 0, 0, 0),                         // BPF_ALU64 | BPF_MOV | BPF_K: r0 = 0
        insn(0x95, 0, 0, 0),                         // BPF_JMP | BPF_EXIT
    ]
}

fn bpf(cmd: libc::c_long, attr: &mut [u8; 128]) -> Result<i32, String> {
    // SAFETY: `attr` is a zero-padded `union bpf_attr` of the size passed; the kernel
    // reads only the fields of `cmd` and the pointers in it outlive the call.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    Ok(rc as i32)
}

/// Loads the program; returns its fd (the caller closes it).
fn load() -> Result<i32, String> {
    let insns = instructions();
    let license = CString::new("GPL").expect("no NUL");
    let mut log = vec![0u8; 4096];
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&BPF_PROG_TYPE_SCHED_CLS.to_ne_bytes());
    attr[4..8].copy_from_slice(&(insns.len() as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(insns.as_ptr() as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
    attr[24..28].copy_from_slice(&1u32.to_ne_bytes());
    attr[28..32].copy_from_slice(&(log.len() as u32).to_ne_bytes());
    attr[32..40].copy_from_slice(&(log.as_mut_ptr() as u64).to_ne_bytes());
    attr[48..48 + 11].copy_from_slice(b"lab_rehash\0");
    bpf(BPF_PROG_LOAD, &mut attr).map_err(|e| {
        let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
        format!(
            "loading the rehash program: {e}; verifier: {}",
            String::from_utf8_lossy(&log[..end])
        )
    })
}

fn pin(fd: i32, path: &Path) -> Result<(), String> {
    let c = CString::new(path.to_str().ok_or("pin path is not UTF-8")?).expect("no NUL");
    let mut attr = [0u8; 128];
    attr[0..8].copy_from_slice(&(c.as_ptr() as u64).to_ne_bytes());
    attr[8..12].copy_from_slice(&(fd as u32).to_ne_bytes());
    bpf(BPF_OBJ_PIN, &mut attr)
        .map(|_| ())
        .map_err(|e| format!("pinning the rehash program at {}: {e}", path.display()))
}

/// Attaches the program at the ingress of each of `devices` in namespace `ns`
/// (`tc qdisc add clsact` + a direct-action `bpf` filter). `pin_path` is a free path on
/// the host's bpffs, used for the moment of the attach. Panics on failure.
pub fn attach_rehash(ns: &str, devices: &[String], pin_path: &Path) {
    crate::process::ensure_bpffs().unwrap_or_else(|e| panic!("{e}"));
    if let Some(dir) = pin_path.parent() {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    }
    let fd = load().unwrap_or_else(|e| panic!("{e}"));
    let pinned = pin(fd, pin_path);
    // SAFETY: `fd` came from BPF_PROG_LOAD above and is closed once.
    unsafe { libc::close(fd) };
    pinned.unwrap_or_else(|e| panic!("{e}"));
    let path = pin_path.to_str().expect("UTF-8");
    let result = devices.iter().try_for_each(|dev| {
        netns::try_ns_exec(ns, "tc", &["qdisc", "add", "dev", dev, "clsact"])?;
        netns::try_ns_exec(
            ns,
            "tc",
            &[
                "filter", "add", "dev", dev, "ingress", "bpf", "da", "pinned", path,
            ],
        )
        .map(|_| ())
    });
    let _ = std::fs::remove_file(pin_path);
    result.unwrap_or_else(|e| panic!("attaching the rehash program in {ns}: {e}"));
}
