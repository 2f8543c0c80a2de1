//! What the two test binaries need from the machine, checked once per binary. Without
//! root every test would otherwise fail its own way (`ip netns add` refused, a map
//! create answered EPERM, a missing `lbd`), dozens of different panics for one cause;
//! with these checks at the top of the shared fixtures ([`crate::packet_rig::Rig::build`],
//! [`crate::Lab::build`]) every test fails with the same message naming what is missing
//! and how to run them. Failing, not skipping: a run that tested nothing must not pass.
use std::sync::LazyLock;

use caps::{CapSet, Capability};

use crate::process;

/// What creating namespaces (CAP_SYS_ADMIN), wiring and attaching (CAP_NET_ADMIN) and
/// loading the XDP object (CAP_BPF) take.
const ROOT_CAPS: [Capability; 3] = [
    Capability::CAP_SYS_ADMIN,
    Capability::CAP_NET_ADMIN,
    Capability::CAP_BPF,
];

/// `cargo xtask test` builds the binaries, mounts bpffs and runs every test.
const HOW_TO_RUN: &str = "run `cargo xtask test` as root";

/// Panics with one message unless the packet tests can run: root capabilities and `ip`.
pub fn packet() {
    static PACKET: LazyLock<Result<(), String>> = LazyLock::new(|| {
        let missing = [missing_caps(), missing_tools(&["ip"])].concat();
        verdict(
            "packet",
            "root (CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_BPF) and `ip`",
            &missing,
        )
    });
    if let Err(message) = &*PACKET {
        panic!("{message}");
    }
}

/// Panics with one message unless the lab tests can run: root capabilities, bpffs at
/// /sys/fs/bpf (mounted here if it is not yet), the tools the lab runs, and `lbd` and
/// `lbctl` built.
pub fn lab() {
    static LAB: LazyLock<Result<(), String>> = LazyLock::new(|| {
        let mut missing = [missing_caps(), missing_tools(&["ip", "nsenter", "ethtool"])].concat();
        // Mounting needs the capabilities; without them that is already said.
        if missing.is_empty() {
            if let Err(e) = process::ensure_bpffs() {
                missing.push(format!("bpffs at /sys/fs/bpf ({e})"));
            }
        }
        let built = [("lbd", "LBD_BIN"), ("lbctl", "LBCTL_BIN")];
        for (name, env_var) in built {
            if process::find_workspace_bin(name, env_var).is_err() {
                missing.push(format!("{name} built (or {env_var} set)"));
            }
        }
        verdict(
            "lab",
            "root (CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_BPF), bpffs at /sys/fs/bpf, `ip`, \
             `nsenter`, `ethtool`, and lbd and lbctl built",
            &missing,
        )
    });
    if let Err(message) = &*LAB {
        panic!("{message}");
    }
}

fn verdict(binary: &str, needs: &str, missing: &[String]) -> Result<(), String> {
    if missing.is_empty() {
        return Ok(());
    }
    Err(format!(
        "lb-tests {binary}: needs {needs}; missing: {}; {HOW_TO_RUN}",
        missing.join(", ")
    ))
}

/// The root capabilities the calling thread lacks in its effective set.
fn missing_caps() -> Vec<String> {
    let effective = caps::read(None, CapSet::Effective).unwrap_or_default();
    ROOT_CAPS
        .iter()
        .filter(|cap| !effective.contains(cap))
        .map(|cap| cap.to_string())
        .collect()
}

/// The programs in `tools` that no directory on PATH holds.
fn missing_tools(tools: &[&str]) -> Vec<String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    tools
        .iter()
        .filter(|tool| !std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
        .map(|tool| format!("`{tool}` on PATH"))
        .collect()
}
