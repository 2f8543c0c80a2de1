//! What can go wrong at start that can be found before `lbd` touches the kernel: the
//! config against this host. `lbd --check` and the start both run it, so a file that
//! passes `--check` does not fail at start for any of these reasons, and a start that
//! fails here has swapped no program and written no table (exit 78, like an invalid
//! file: retrying cannot help).
//!
//! Checked: the admin API's token files (owner-only, long enough, each its own token); every interface exists
//! in this network namespace and runs no XDP program but this lbd's; with `tc_interfaces`,
//! a kernel with TCX links (6.6); `pin_dir` is on bpffs; pinned maps, if any, fit this build
//! and config (the same check the loader makes before adopting them); the maps fit in
//! the memory available; and at start only (a running lbd holds them while `--check`
//! runs), that the listeners' addresses are free.
use std::{net::SocketAddr, os::unix::fs::FileTypeExt, path::Path};

use anyhow::Context as _;
use aya::programs::links::{FdLink, PinnedLink};

use crate::{
    kernel,
    kernel::ebpf_object,
    kernel::link_watch,
    kernel::pins::{self, MapShape, PinDir},
    model::config::{Config, ConfigError, FieldError},
    ops::api::tokens,
};

/// When the checks run: `lbd --check`, or the start of `lbd`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Check,
    Start,
}

/// Every problem found, each with the field it is about.
pub fn check(config: &Config, stage: Stage) -> Result<(), ConfigError> {
    let mut errors = Vec::new();
    let mut err = |field: &str, message: String| {
        errors.push(FieldError {
            field: field.into(),
            message,
        })
    };
    if config.api.listen.is_some() {
        let mut files_read = true;
        if let Some(path) = &config.api.token_file {
            if let Err(e) = tokens::read_token("api.token_file", path) {
                err("api.token_file", format!("{e:#}"));
                files_read = false;
            }
        }
        for (i, token) in config.api.registration_tokens.iter().enumerate() {
            let key = format!("api.registration_tokens[{i}].file");
            if let Err(e) = tokens::read_token(&key, &token.file) {
                err(&key, format!("{e:#}"));
                files_read = false;
            }
        }
        // Files that each read, but hold the same token.
        if files_read {
            if let Err(e) = tokens::Tokens::read(&config.api) {
                err("api.registration_tokens", format!("{e:#}"));
            }
        }
    }
    if !config.tc_interfaces.is_empty() {
        if let Err(e) = tcx_supported() {
            err("tc_interfaces", e);
        }
    }
    let pins = PinDir::new(&config.pin_dir);
    for (i, name) in config.interfaces.iter().enumerate() {
        let checked =
            kernel::ifindex_of(name).and_then(|ifindex| no_foreign_xdp(name, ifindex, &pins));
        if let Err(e) = checked {
            err(&format!("interfaces[{i}]"), format!("{e:#}"));
        }
    }
    match pinned_shapes(config) {
        Err(e) => err("limits", e),
        Ok(shapes) => {
            if let Err(e) = pins.check_bpffs().and_then(|()| pins.check(&shapes)) {
                err("pin_dir", e.to_string());
            }
            let wanted = map_bytes(&shapes, possible_cpus());
            if let Some(available) = mem_available() {
                if wanted > available {
                    err(
                        "limits.flow_table_size",
                        format!(
                            "the maps these limits size need about {} MiB of kernel memory, \
                             and {} MiB are available",
                            wanted >> 20,
                            available >> 20
                        ),
                    );
                }
            }
        }
    }
    if stage == Stage::Start {
        if let Err(e) = socket_free(&config.api.socket) {
            err("api.socket", e);
        }
        if let Some(addr) = config.api.listen {
            if let Err(e) = port_free(addr) {
                err("api.listen", e);
            }
        }
        if let Err(e) = port_free(config.metrics.listen) {
            err("metrics.listen", e);
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ConfigError { errors })
    }
}

/// The NICs of `tc_interfaces` are attached through TCX links, which Linux has since
/// 6.6: before that a tc program attaches through netlink, and such an attachment cannot
/// be pinned, so the data path would not outlive lbd.
fn tcx_supported() -> Result<(), String> {
    let current = aya::util::KernelVersion::current()
        .map_err(|e| format!("reading the kernel's version: {e}"))?;
    if current < aya::util::KernelVersion::new(6, 6, 0) {
        return Err(format!(
            "needs Linux 6.6 or later (TCX links); this kernel is {current}"
        ));
    }
    Ok(())
}

/// Refuses a NIC that already runs an XDP program other than this lbd's: attaching
/// would fail, after the maps were pinned. This lbd's own program, left by an earlier
/// lbd on the same `pin_dir`, is the one its pinned link holds (a restart: the loader
/// swaps the new program onto that link, without a gap).
fn no_foreign_xdp(name: &str, ifindex: u32, pins: &PinDir) -> anyhow::Result<()> {
    let attached = link_watch::xdp_program_ids(ifindex)
        .with_context(|| format!("reading the XDP programs on {name}"))?;
    if attached.is_empty() {
        return Ok(());
    }
    let path = pins.link_path(name);
    let ours = if path.exists() {
        let link = PinnedLink::from_pin(&path)
            .with_context(|| format!("opening the pinned link {}", path.display()))?;
        let info = FdLink::from(link)
            .info()
            .with_context(|| format!("reading the pinned link {}", path.display()))?;
        Some(info.program_id())
    } else {
        None
    };
    let foreign = foreign_programs(&attached, ours);
    if foreign.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = foreign.iter().map(u32::to_string).collect();
    anyhow::bail!(
        "{name} already runs XDP program id {} that this lbd did not attach (no link \
         pinned at {} holds it); detach it first (`ip link set dev {name} xdp off`, or \
         remove its owner's pinned link)",
        ids.join(", "),
        path.display()
    )
}

/// The programs in `attached` other than `ours`, the program this lbd's pinned link
/// holds, if it has one; each once (the kernel names a program both as the NIC's and
/// as its mode's).
fn foreign_programs(attached: &[u32], ours: Option<u32>) -> Vec<u32> {
    let mut foreign: Vec<u32> = attached
        .iter()
        .copied()
        .filter(|id| Some(*id) != ours)
        .collect();
    foreign.sort_unstable();
    foreign.dedup();
    foreign
}

fn pinned_shapes(config: &Config) -> Result<Vec<(String, MapShape)>, String> {
    let sizes = kernel::map_sizes(config).map_err(|e| format!("{e:#}"))?;
    let object = ebpf_object::object().map_err(|e| format!("{e:#}"))?;
    pins::pinned_shapes(object, &sizes).map_err(|e| e.to_string())
}

/// Kernel map types whose entries are allocated one by one (hash maps).
const HASH_TYPES: [u32; 4] = [
    1,  // BPF_MAP_TYPE_HASH
    5,  // BPF_MAP_TYPE_PERCPU_HASH
    9,  // BPF_MAP_TYPE_LRU_HASH
    10, // BPF_MAP_TYPE_LRU_PERCPU_HASH
];
/// Per-CPU map types: one value per possible CPU.
const PER_CPU_TYPES: [u32; 3] = [5, 6, 10];
/// A hash map element's header and its bucket, about as the kernel allocates them
/// (`struct htab_elem`, `struct bucket`); an estimate, for a sanity bound.
const HASH_OVERHEAD: u64 = 64;

/// About how many bytes of kernel memory maps of these shapes take once created
/// (hash maps preallocate every element).
pub fn map_bytes(shapes: &[(String, MapShape)], cpus: u64) -> u64 {
    let round8 = |n: u32| (n as u64).div_ceil(8) * 8;
    shapes
        .iter()
        .map(|(_, s)| {
            let copies = if PER_CPU_TYPES.contains(&s.map_type) {
                cpus
            } else {
                1
            };
            let mut per_entry = round8(s.value_size) * copies;
            if HASH_TYPES.contains(&s.map_type) {
                per_entry += round8(s.key_size) + HASH_OVERHEAD;
            }
            per_entry.saturating_mul(s.max_entries as u64)
        })
        .fold(0, u64::saturating_add)
}

/// Possible CPUs, as per-CPU maps are sized.
fn possible_cpus() -> u64 {
    aya::util::nr_cpus().map(|n| n as u64).unwrap_or(1)
}

/// MemAvailable from /proc/meminfo, in bytes.
fn mem_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The admin socket can be bound: nothing but a stale socket is in its place, and its
/// directory is one or can be made.
fn socket_free(path: &Path) -> Result<(), String> {
    let mut base = path.parent();
    while let Some(dir) = base.filter(|d| !d.exists()) {
        base = dir.parent();
    }
    if let Some(dir) = base.filter(|d| !d.is_dir()) {
        return Err(format!(
            "{} cannot be created: {} is not a directory",
            path.display(),
            dir.display()
        ));
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(format!(
                    "{} is in use: another process serves on it",
                    path.display()
                ));
            }
            Ok(())
        }
        Ok(_) => Err(format!("{} exists and is not a socket", path.display())),
        Err(_) => Ok(()),
    }
}

/// A TCP listener can be bound on `addr` (bound and closed again at once).
fn port_free(addr: SocketAddr) -> Result<(), String> {
    std::net::TcpListener::bind(addr)
        .map(drop)
        .map_err(|e| format!("cannot listen on {addr}: {e}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_program_is_foreign_unless_this_lbds_pinned_link_holds_it() {
        use super::foreign_programs;
        assert_eq!(foreign_programs(&[], None), Vec::<u32>::new());
        assert_eq!(foreign_programs(&[41], None), [41]);
        // IFLA_XDP_PROG_ID and IFLA_XDP_DRV_PROG_ID name the same program.
        assert_eq!(foreign_programs(&[41, 41], None), [41]);
        // The restart case: the program on the NIC is the one our pinned link holds.
        assert_eq!(foreign_programs(&[41], Some(41)), Vec::<u32>::new());
        // A severed pinned link (the NIC re-created) and another program on the new NIC.
        assert_eq!(foreign_programs(&[57], Some(41)), [57]);
        // Two modes at once: ours in one, another program in the other.
        assert_eq!(foreign_programs(&[57, 41, 57], Some(41)), [57]);
    }

    use super::*;

    fn shape(map_type: u32, key_size: u32, value_size: u32, max_entries: u32) -> MapShape {
        MapShape {
            map_type,
            flags: 0,
            key_size,
            value_size,
            max_entries,
        }
    }

    #[test]
    fn map_memory_counts_hash_elements_and_per_cpu_copies() {
        let shapes = vec![
            ("array".to_string(), shape(2, 4, 12, 10)),
            ("percpu".to_string(), shape(6, 4, 8, 10)),
            ("lru".to_string(), shape(9, 20, 20, 1000)),
        ];
        assert_eq!(
            map_bytes(&shapes, 4),
            16 * 10 + 8 * 4 * 10 + (24 + 24 + 64) * 1000
        );
        let huge = vec![("lru".to_string(), shape(9, 24, 32, u32::MAX))];
        assert!(map_bytes(&huge, 2) > 400 << 30);
    }

    #[test]
    fn a_short_token_a_missing_nic_a_pin_dir_off_bpffs_and_busy_listeners_are_named() {
        let dir = std::env::temp_dir().join(format!("lbd-preflight-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let token = dir.join("token");
        std::fs::write(&token, "short\n").unwrap();
        let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let text = format!(
            "node: {{ zone: az-a }}\ninterfaces: [lo, nosuchnic0]\npin_dir: {}\n\
             api: {{ socket: {}, listen: 127.0.0.1:0, token_file: {} }}\n\
             metrics: {{ listen: {} }}\n",
            dir.join("pins").display(),
            token.join("lbd.sock").display(),
            token.display(),
            busy.local_addr().unwrap()
        );
        let config = crate::model::config::parse(&text).unwrap();
        let at = |stage| {
            check(&config, stage)
                .unwrap_err()
                .errors
                .into_iter()
                .map(|e| e.field)
                .collect::<Vec<_>>()
        };
        let fields = at(Stage::Start);
        for field in [
            "api.token_file",
            "interfaces[1]",
            "pin_dir",
            "api.socket",
            "metrics.listen",
        ] {
            assert!(fields.contains(&field.to_string()), "{fields:?}");
        }
        assert!(!fields.contains(&"interfaces[0]".to_string()), "{fields:?}");
        // `--check` runs while lbd holds its listeners: they are not checked.
        assert!(!at(Stage::Check).contains(&"metrics.listen".to_string()));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
