//! The one capability `lbd` holds only while it loads the data path: CAP_PERFMON.
//!
//! The verifier decides, when a program is loaded and from the loader's capabilities,
//! whether to harden it against Spectre. Without CAP_PERFMON (or CAP_SYS_ADMIN) it puts
//! a speculation barrier after stack spills and masks pointer arithmetic; on the
//! machine of docs/performance.md that triples the per-packet cost (Per packet: the
//! "hardened" column). The hardening protects the kernel from programs written by whoever loads
//! them, and `lbd` loads only the program embedded in its own binary. But CAP_PERFMON
//! also lets a process read kernel memory through BPF tracing programs, so `lbd` holds it
//! for the load alone: [`drop_after_load`] runs before the first thread is started and
//! before any API request is read, and the threads started later inherit the narrowed
//! sets.
//!
//! Loading and attaching need CAP_BPF (maps and programs; CAP_SYS_ADMIN also grants it)
//! and CAP_NET_ADMIN (an XDP program, its devmap and its links); when either step fails
//! without one of them, [`lacking_for_data_path`] names it, so the error says what to
//! grant rather than only "permission denied".
use anyhow::Context;
use caps::{CapSet, Capability};

/// How the verifier will treat the program this thread loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verification {
    /// CAP_PERFMON or CAP_SYS_ADMIN is effective: no Spectre hardening.
    Unhardened,
    /// Neither is: the program is hardened, and slower.
    Hardened,
}

/// What the verifier will do with a program loaded by this thread now.
pub fn verification() -> anyhow::Result<Verification> {
    let effective = |cap| caps::has_cap(None, CapSet::Effective, cap);
    let unhardened = effective(Capability::CAP_PERFMON).context("reading capabilities")?
        || effective(Capability::CAP_SYS_ADMIN).context("reading capabilities")?;
    Ok(if unhardened {
        Verification::Unhardened
    } else {
        Verification::Hardened
    })
}

/// Drops CAP_PERFMON from this thread's effective, permitted and inheritable sets (and
/// so from its ambient set), and sets no_new_privs, so that no later `execve` could give
/// it back (the bounding set keeps it: narrowing that needs CAP_SETPCAP). Returns whether
/// the thread had it. Capabilities are per thread: call it while the process has one
/// thread.
pub fn drop_after_load() -> anyhow::Result<bool> {
    let had = caps::has_cap(None, CapSet::Permitted, Capability::CAP_PERFMON)
        .context("reading capabilities")?;
    if had {
        for set in [CapSet::Effective, CapSet::Permitted, CapSet::Inheritable] {
            caps::drop(None, set, Capability::CAP_PERFMON)
                .with_context(|| format!("dropping CAP_PERFMON from the {set:?} set"))?;
        }
    }
    // SAFETY: prctl with PR_SET_NO_NEW_PRIVS reads no memory.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error()).context("setting no_new_privs");
    }
    Ok(had)
}

/// What the data path needs that this thread's effective set lacks, as one sentence to
/// add to a failed load or attach (`None` when nothing is lacking).
pub fn lacking_for_data_path() -> Option<String> {
    let effective = caps::read(None, CapSet::Effective).ok()?;
    lacking(&effective)
}

/// [`lacking_for_data_path`] for a given effective set.
fn lacking(effective: &caps::CapsHashSet) -> Option<String> {
    let mut missing = Vec::new();
    if !effective.contains(&Capability::CAP_BPF) && !effective.contains(&Capability::CAP_SYS_ADMIN)
    {
        missing.push("CAP_BPF (to create maps and load programs)");
    }
    if !effective.contains(&Capability::CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN (to load an XDP program and attach it to NICs)");
    }
    if missing.is_empty() {
        return None;
    }
    Some(format!(
        "lbd lacks {} in its effective capabilities; grant them as \
         deploy/systemd/lbd.service does (AmbientCapabilities=CAP_BPF CAP_NET_ADMIN CAP_PERFMON)",
        missing.join(" and ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lacking_capability_is_named() {
        let set = |caps: &[Capability]| caps.iter().copied().collect::<caps::CapsHashSet>();
        use Capability::*;
        assert_eq!(lacking(&set(&[CAP_BPF, CAP_NET_ADMIN])), None);
        assert_eq!(lacking(&set(&[CAP_SYS_ADMIN, CAP_NET_ADMIN])), None);
        let e = lacking(&set(&[CAP_NET_ADMIN, CAP_PERFMON])).unwrap();
        assert!(e.starts_with("lbd lacks CAP_BPF (to create maps"), "{e}");
        assert!(!e.contains("CAP_NET_ADMIN ("), "{e}");
        let e = lacking(&set(&[CAP_BPF, CAP_PERFMON])).unwrap();
        assert!(
            e.starts_with("lbd lacks CAP_NET_ADMIN (to load an XDP"),
            "{e}"
        );
        let e = lacking(&set(&[])).unwrap();
        assert!(
            e.contains("CAP_BPF (") && e.contains(" and CAP_NET_ADMIN ("),
            "{e}"
        );
    }
}
