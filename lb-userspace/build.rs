//! Builds the XDP program (`lb-ebpf`: nightly, bpfel-unknown-none, `-Z build-std=core`,
//! bpf-linker) and leaves it in OUT_DIR for `include_bytes_aligned!`.
//!
//! This is aya-build's recipe with one difference: aya-build fixes the eBPF crate's
//! RUSTFLAGS, and the data path is built twice with flags of its own (see `Build`).
//!
//! It also names the build for `lbd --version` and `lbctl --version` (`LB_BUILD`: the
//! crate's version and the git commit it was built from; `LB_BUILD_COMMIT` overrides
//! the commit where there is no git checkout, e.g. a source package).
//!
//! `LB_EBPF_STUB=1` writes an empty object instead, so `cargo check`/`clippy` work
//! without the eBPF toolchain; a binary built that way refuses to start.
use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _};

const TARGET: &str = "bpfel-unknown-none";

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=LB_EBPF_STUB");
    name_the_build();
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    // The data path twice (see `Build`), one for each way the verifier treats its loader.
    let object = out_dir.join("lb-xdp");
    let hardened_object = out_dir.join("lb-xdp-hardened");
    // The backends' decapsulation program, embedded in `lb-decap`, and the probes'
    // tunnel, embedded in `lbd`.
    let decap_object = out_dir.join("lb-decap");
    let probe_object = out_dir.join("lb-probe-tunnel");
    // The eBPF crate compiles lb-common's sources too.
    for dir in ["../lb-ebpf", "../lb-common/src"] {
        println!("cargo:rerun-if-changed={}", manifest.join(dir).display());
    }
    if env::var("LB_EBPF_STUB").is_ok_and(|v| v == "1") {
        for stub in [&object, &hardened_object, &decap_object, &probe_object] {
            fs::write(stub, []).with_context(|| format!("writing stub {}", stub.display()))?;
        }
        return Ok(());
    }
    let arch = env::var("CARGO_CFG_TARGET_ARCH")?;
    Build::Unhardened.run(&manifest, &out_dir, &arch, &[("lb-xdp", &object)])?;
    Build::Hardened.run(
        &manifest,
        &out_dir,
        &arch,
        &[
            ("lb-xdp", &hardened_object),
            ("lb-decap", &decap_object),
            ("lb-probe-tunnel", &probe_object),
        ],
    )
}

/// The two builds of the eBPF crate. Both let LLVM share a stack slot between spills
/// whose values are not live at once, which keeps each program's frame to what its
/// deepest path needs rather than the sum of all its paths' spills: the 512-byte stack
/// has room for the data path only that way (docs/architecture.md, The stack). They
/// differ in the instruction set, because of what such sharing does with 32-bit spills:
enum Build {
    /// For a loader with CAP_PERFMON (`lbd` as its systemd unit runs it): BPF v3, whose
    /// 32-bit subregisters (alu32) and 32-bit jumps make the cheapest code. A 32-bit
    /// value spilled into half of a slot that last held a (dead) pointer is a partial
    /// overwrite of a spilled pointer, which the verifier allows only such a loader.
    Unhardened,
    /// For a loader without CAP_PERFMON (which the verifier also hardens against
    /// Spectre, at about three times the per-packet cost), and for the backends' and the
    /// probes' programs, which may be loaded either way: BPF v2, without 32-bit
    /// subregisters, so every spill fills a whole 8-byte slot and none overwrites part of
    /// one. Both versions have the atomic fetch-and-or of an exactly-once flow close
    /// (lb-ebpf/src/flow.rs; kernel 5.12+).
    Hardened,
}

impl Build {
    /// Builds the eBPF crate for this kind of loader and copies each `(bin, object)`.
    fn run(
        self,
        manifest: &Path,
        out_dir: &Path,
        arch: &str,
        objects: &[(&str, &PathBuf)],
    ) -> anyhow::Result<()> {
        let (cpu, dir) = match self {
            Build::Unhardened => ("v3", "ebpf-target"),
            Build::Hardened => ("v2", "ebpf-target-hardened"),
        };
        // A target directory of its own: the outer cargo holds a lock on the workspace's,
        // and the two builds' flags differ.
        let target_dir = out_dir.join(dir);
        let flags = [
            format!("--cfg=bpf_target_arch=\"{arch}\""),
            format!("-Ctarget-cpu={cpu}"),
            "-Cdebuginfo=2".into(),
            "-Clink-arg=--btf".into(),
        ];
        let mut cargo = Command::new("rustup");
        cargo
            .args(["run", "nightly", "cargo", "build", "--package", "lb-ebpf"])
            .args(objects.iter().flat_map(|(bin, _)| ["--bin", bin]))
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
        for (name, object) in objects {
            let built = target_dir.join(TARGET).join("release").join(name);
            fs::copy(&built, object)
                .with_context(|| format!("copying {} to {}", built.display(), object.display()))?;
        }
        Ok(())
    }
}

/// `LB_BUILD` = `0.1.0 (commit 62b7ca01830a)`, and reruns when HEAD moves.
fn name_the_build() {
    println!("cargo:rerun-if-env-changed=LB_BUILD_COMMIT");
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    // HEAD, and the branch file it points at, change on every commit and checkout. Only
    // files that exist: cargo takes a missing one as changed, and would rerun every build.
    let branch = git(&["symbolic-ref", "-q", "HEAD"]);
    for path in ["HEAD", "packed-refs"].into_iter().chain(branch.as_deref()) {
        if let Some(file) = git(&["rev-parse", "--git-path", path]) {
            if std::path::Path::new(&file).exists() {
                println!("cargo:rerun-if-changed={file}");
            }
        }
    }
    let commit = env::var("LB_BUILD_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    let version = env::var("CARGO_PKG_VERSION").unwrap_or_default();
    println!("cargo:rustc-env=LB_BUILD={version} (commit {commit})");
}
