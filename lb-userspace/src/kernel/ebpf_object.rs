//! The XDP object, built from `lb-ebpf` by this crate's build script and embedded, so the
//! `lbd` binary carries the exact data path it was built with: twice, one build for each
//! way the verifier treats a loader (see the build script's `Build`), of the same source
//! and with the same maps.

use super::privileges::{self, Verification};

/// The object bytes for a loader with CAP_PERFMON; empty when the build ran with
/// `LB_EBPF_STUB=1` (for quick `cargo check`/`clippy` runs without the eBPF toolchain).
pub static XDP_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-xdp"));

/// The object bytes for a loader without CAP_PERFMON (BPF v2: no spill overwrites part
/// of a stack slot); empty as above.
pub static XDP_OBJECT_HARDENED: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-xdp-hardened"));

/// The object the verifier accepts from this thread now (see
/// [`privileges::verification`]). Fails clearly when this binary was built without the
/// real objects.
pub fn object() -> anyhow::Result<&'static [u8]> {
    anyhow::ensure!(
        !XDP_OBJECT.is_empty(),
        "this binary was built with LB_EBPF_STUB=1 and carries no XDP program; rebuild with `cargo xtask build`"
    );
    Ok(match privileges::verification()? {
        Verification::Unhardened => XDP_OBJECT,
        Verification::Hardened => XDP_OBJECT_HARDENED,
    })
}
