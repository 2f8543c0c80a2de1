//! The calling thread's effective capabilities, narrowed for a while: to load the data
//! path as the systemd unit would without CAP_PERFMON. The verifier decides at load
//! time, from the loader's capabilities, whether to harden a program against Spectre
//! (see `lb_userspace::kernel::privileges`), so a program loaded by root is not the program an
//! `lbd` with fewer capabilities runs.
use caps::{CapSet, Capability, CapsHashSet};

/// Runs `f` with the thread's effective capabilities narrowed to `keep`, then restores
/// them, even if `f` panics. The permitted set is untouched; other threads are not
/// affected (capabilities are per thread).
pub fn with_effective<T>(keep: &[Capability], f: impl FnOnce() -> T) -> T {
    let saved = caps::read(None, CapSet::Effective).expect("reading capabilities");
    let narrowed: CapsHashSet = saved.iter().copied().filter(|c| keep.contains(c)).collect();
    caps::set(None, CapSet::Effective, &narrowed).expect("narrowing capabilities");
    struct Restore(CapsHashSet);
    impl Drop for Restore {
        fn drop(&mut self) {
            caps::set(None, CapSet::Effective, &self.0).expect("restoring capabilities");
        }
    }
    let _restore = Restore(saved);
    f()
}

/// What `lbd` keeps once its program is loaded, and all it needs without CAP_PERFMON.
pub const SERVING: [Capability; 2] = [Capability::CAP_BPF, Capability::CAP_NET_ADMIN];
