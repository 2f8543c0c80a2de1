//! Builds the XDP program (`lb-ebpf`: nightly, bpfel-unknown-none, `-Z build-std=core`,
//! bpf-linker) and leaves it in OUT_DIR for `include_bytes_aligned!`.
//!
//! This is aya-build's recipe with one difference: aya-build fixes the eBPF crate's
//! RUSTFLAGS, and the data path needs `-C target-cpu=v3` for atomic fetch-and-or
//! (exactly-once flow close, see lb-ebpf/src/flow.rs; kernel 5.12+).
//!
//! `LB_EBPF_STUB=1` writes an empty object instead, so `cargo check`/`clippy` work
//! without the eBPF toolchain; a binary built that way refuses to start.
use std::{env, fs, path::PathBuf, process::Command};

use anyhow::{bail, Context as _};

const TARGET: &str = "bpfel-unknown-none";

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=LB_EBPF_STUB");
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let object = out_dir.join("lb-xdp");
    // The eBPF crate compiles lb-common's sources too.
    for dir in ["../lb-ebpf", "../lb-common/src"] {
        println!("cargo:rerun-if-changed={}", manifest.join(dir).display());
    }
    if env::var("LB_EBPF_STUB").is_ok_and(|v| v == "1") {
        fs::write(&object, []).with_context(|| format!("writing stub {}", object.display()))?;
        return Ok(());
    }
    let arch = env::var("CARGO_CFG_TARGET_ARCH")?;
    // A target directory of its own: the outer cargo holds a lock on the workspace's.
    let target_dir = out_dir.join("ebpf-target");
    let flags = [
        format!("--cfg=bpf_target_arch=\"{arch}\""),
        "-Ctarget-cpu=v3".into(),
        // LLVM reuses a dead spilled pointer's stack slot for a 32-bit value; the verifier
        // refuses such a partial overwrite of a slot it still sees as a pointer unless
        // the loader has CAP_PERFMON. Separate slots per spill keep lbd down to CAP_BPF
        // and CAP_NET_ADMIN.
        "-Clink-arg=--llvm-args=-no-stack-slot-sharing".into(),
        "-Cdebuginfo=2".into(),
        "-Clink-arg=--btf".into(),
    ];
    let mut cargo = Command::new("rustup");
    cargo
        .args([
            "run",
            "nightly",
            "cargo",
            "build",
            "--package",
            "lb-ebpf",
            "--bins",
        ])
        .args(["--release", "--target", TARGET, "-Z", "build-std=core"])
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(manifest.join("../lb-ebpf"))
        .env("CARGO_ENCODED_RUSTFLAGS", flags.join("\x1f"))
        // The outer build's compiler settings must not leak into the nightly build.
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTUP_TOOLCHAIN");
    let output = cargo
        .output()
        .context("running `rustup run nightly cargo build` for lb-ebpf")?;
    if !output.status.success() {
        for line in String::from_utf8_lossy(&output.stderr).lines() {
            println!("cargo:warning={line}");
        }
        bail!(
            "building the XDP program failed ({}); run `cargo xtask setup` if the eBPF toolchain is missing",
            output.status
        );
    }
    let built = target_dir.join(TARGET).join("release").join("lb-xdp");
    fs::copy(&built, &object)
        .with_context(|| format!("copying {} to {}", built.display(), object.display()))?;
    Ok(())
}
