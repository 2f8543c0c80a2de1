//! bpf-linker, built against the nightly toolchain's own LLVM.
//!
//! bpf-linker 0.13.0 defaults to LLVM 23, which no toolchain here ships. With the
//! `llvm-22` feature it links against a shared LLVM 22 found under `LLVM_PREFIX/lib`.
//! The nightly ships exactly that as `lib/libLLVM.so.22.1-rust-<ver>-nightly`, so a
//! stable folder gets two symlinks to it: `libLLVM.so` (for linking) and one named
//! after the library itself (its soname, loaded at run time). The binary finds it
//! through an rpath into that folder, so the folder must stay where it is: it lives
//! under `~/.local/share`, not in a temporary directory.
//!
//! When the nightly is updated its LLVM file changes name, the symlinks dangle,
//! `bpf-linker --version` fails, and the check sends us here again to rebuild.

use std::env;
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::rust_src::nightly_sysroot;
use super::{Need, Step};
use crate::{cmd, paths};

pub const VERSION: &str = "0.13.0";

pub struct BpfLinker {
    /// `cargo install --root`: the binary goes to `<root>/bin/bpf-linker`.
    root: PathBuf,
}

impl BpfLinker {
    /// Installs into `$CARGO_HOME` (so `$CARGO_HOME/bin`), where cargo puts it by default.
    pub fn in_cargo_home() -> Result<Self> {
        Ok(Self {
            root: paths::cargo_home()?,
        })
    }

    fn binary(&self) -> PathBuf {
        self.root.join("bin").join("bpf-linker")
    }

    /// The version the installed binary reports, or why it could not be asked.
    fn installed_version(&self) -> Result<String> {
        let out = cmd::capture(Command::new(self.binary()).arg("--version"))?;
        // It prints `bpf-linker 0.13.0`.
        match out.split_whitespace().nth(1) {
            Some(version) => Ok(version.to_string()),
            None => bail!("unexpected `bpf-linker --version` output: {}", out.trim()),
        }
    }
}

/// `~/.local/share/lb-xdp/llvm-22`, given to the build as `LLVM_PREFIX`.
fn llvm_prefix() -> Result<PathBuf> {
    Ok(paths::home()?.join(".local/share/lb-xdp/llvm-22"))
}

/// The nightly's shared LLVM 22: exactly one `lib/libLLVM.so.22.*-rust-*-nightly`.
fn nightly_llvm(sysroot: &Path) -> Result<PathBuf> {
    let lib = sysroot.join("lib");
    let mut found = Vec::new();
    for entry in fs::read_dir(&lib).with_context(|| format!("cannot list {}", lib.display()))? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("libLLVM.so.22.")
            && name.contains("-rust-")
            && name.ends_with("-nightly")
        {
            found.push(lib.join(name.as_ref()));
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => bail!(
            "no libLLVM.so.22.*-rust-*-nightly in {}: bpf-linker's llvm-22 feature needs the \
             nightly toolchain to ship LLVM 22 as a shared library",
            lib.display()
        ),
        _ => bail!(
            "more than one libLLVM.so.22.*-rust-*-nightly in {} ({}); cannot tell which one \
             the nightly uses",
            lib.display(),
            found
                .iter()
                .map(|path| path.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Makes `<prefix>/lib` hold exactly `libLLVM.so` and `<library's own name>`, both
/// pointing at `library`. Links that are already right are left alone, so a running
/// bpf-linker never sees them missing.
fn link_llvm(prefix: &Path, library: &Path) -> Result<()> {
    let lib = prefix.join("lib");
    fs::create_dir_all(&lib).with_context(|| format!("cannot create {}", lib.display()))?;
    let own_name = library
        .file_name()
        .context("the LLVM library path has no file name")?;
    let wanted = [OsStr::new("libLLVM.so"), own_name];
    // Links left from an older nightly would be picked up instead of the new one.
    for entry in fs::read_dir(&lib).with_context(|| format!("cannot list {}", lib.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        let right = wanted.contains(&name.as_os_str())
            && fs::read_link(entry.path()).is_ok_and(|target| target == library);
        if name.to_string_lossy().starts_with("libLLVM") && !right {
            remove_link(&entry.path())?;
        }
    }
    for name in wanted {
        let link = lib.join(name);
        if fs::read_link(&link).is_ok_and(|target| target == library) {
            continue;
        }
        println!("  link {} -> {}", link.display(), library.display());
        symlink(library, &link).with_context(|| format!("cannot create {}", link.display()))?;
    }
    Ok(())
}

fn remove_link(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err).with_context(|| format!("cannot remove {}", path.display())),
    }
}

impl Step for BpfLinker {
    fn name(&self) -> String {
        format!("bpf-linker {VERSION} (LLVM 22)")
    }

    fn needed_for(&self) -> Need {
        Need::Build
    }

    fn check(&self) -> bool {
        self.installed_version()
            .is_ok_and(|version| version == VERSION)
    }

    fn action(&self) -> String {
        let why = match self.installed_version() {
            Ok(version) => format!("{} is version {version}", self.binary().display()),
            Err(_) if !self.binary().exists() => format!("{} is missing", self.binary().display()),
            Err(_) => format!(
                "{} does not run (its LLVM library moved?)",
                self.binary().display()
            ),
        };
        format!("{why}; building it against the nightly's LLVM (about a minute)")
    }

    fn apply(&self) -> Result<()> {
        let library = nightly_llvm(&nightly_sysroot()?)?;
        let prefix = llvm_prefix()?;
        link_llvm(&prefix, &library)?;
        cmd::run(
            Command::new("cargo")
                .args(["+stable", "install", &format!("bpf-linker@{VERSION}")])
                .args(["--no-default-features", "--features", "llvm-22", "--locked"])
                // Replaces a binary of the same version that no longer runs.
                .arg("--force")
                .arg("--root")
                .arg(&self.root)
                .env("LLVM_PREFIX", &prefix)
                // Away from the workspace, so that its .cargo/config.toml plays no part.
                .current_dir(env::temp_dir()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_exactly_one_nightly_llvm() {
        let dir = env::temp_dir().join(format!("xtask-llvm-glob-{}", std::process::id()));
        let lib = dir.join("lib");
        fs::create_dir_all(&lib).unwrap();
        for name in [
            "libLLVM-22-rust-1.97.0-nightly.so",
            "librustc_driver-abc.so",
            "libLLVM.so.22.1-rust-1.97.0-nightly",
        ] {
            fs::write(lib.join(name), b"").unwrap();
        }
        assert_eq!(
            nightly_llvm(&dir).unwrap(),
            lib.join("libLLVM.so.22.1-rust-1.97.0-nightly")
        );

        fs::write(lib.join("libLLVM.so.22.1-rust-1.98.0-nightly"), b"").unwrap();
        assert!(
            nightly_llvm(&dir).is_err(),
            "two candidates must be refused"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn relinking_replaces_old_links() {
        let dir = env::temp_dir().join(format!("xtask-llvm-link-{}", std::process::id()));
        let prefix = dir.join("prefix");
        let old = dir.join("libLLVM.so.22.1-rust-1.96.0-nightly");
        let new = dir.join("libLLVM.so.22.1-rust-1.97.0-nightly");
        fs::create_dir_all(&dir).unwrap();
        fs::write(&new, b"").unwrap();
        link_llvm(&prefix, &old).unwrap();
        link_llvm(&prefix, &new).unwrap();
        let mut names: Vec<String> = fs::read_dir(prefix.join("lib"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["libLLVM.so", "libLLVM.so.22.1-rust-1.97.0-nightly"]);
        for name in names {
            assert_eq!(fs::read_link(prefix.join("lib").join(name)).unwrap(), new);
        }
        fs::remove_dir_all(&dir).unwrap();
    }
}
