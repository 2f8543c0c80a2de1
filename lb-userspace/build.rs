//! Builds the XDP program (`lb-ebpf`, nightly, bpfel-unknown-none, bpf-linker) and leaves
//! it in OUT_DIR for `include_bytes_aligned!`. `LB_EBPF_STUB=1` writes an empty object
//! instead, so `cargo check`/`clippy` work without the eBPF toolchain; a binary built that
//! way refuses to start.
use std::{env, fs, path::PathBuf};

use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=LB_EBPF_STUB");
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let ebpf_dir = manifest.join("../lb-ebpf");
    // The eBPF crate also compiles lb-common's sources.
    println!(
        "cargo:rerun-if-changed={}",
        manifest.join("../lb-common/src").display()
    );
    if env::var("LB_EBPF_STUB").is_ok_and(|v| v == "1") {
        let out = PathBuf::from(env::var("OUT_DIR")?).join("lb-xdp");
        fs::write(&out, []).with_context(|| format!("writing stub {}", out.display()))?;
        return Ok(());
    }
    let root_dir = ebpf_dir
        .to_str()
        .context("the lb-ebpf path is not valid UTF-8")?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "lb-ebpf",
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
    .context("building the XDP program (run `cargo xtask setup` if the eBPF toolchain is missing)")
}
