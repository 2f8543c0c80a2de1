//! The XDP object, built from `lb-ebpf` by this crate's build script and embedded, so the
//! `lbd` binary carries the exact data path it was built with.

/// The object bytes; empty when the build ran with `LB_EBPF_STUB=1` (for quick
/// `cargo check`/`clippy` runs without the eBPF toolchain).
pub static XDP_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-xdp"));

/// Fails clearly when this binary was built without the real object.
pub fn object() -> anyhow::Result<&'static [u8]> {
    anyhow::ensure!(
        !XDP_OBJECT.is_empty(),
        "this binary was built with LB_EBPF_STUB=1 and carries no XDP program; rebuild with `cargo xtask build`"
    );
    Ok(XDP_OBJECT)
}
