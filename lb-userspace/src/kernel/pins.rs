//! The data path's state pinned under bpffs, so that it outlives `lbd`: a crash, a
//! SIGKILL, a restart or an upgrade leaves the XDP program forwarding with the last
//! tables and every flow, and the next `lbd` adopts it all.
//!
//! Layout of the pin directory (owner-only, 0700):
//! - `maps/NAME`: every map but the egress devmap (rebuilt from config at each start);
//! - `links/IFNAME`: the link of each attached NIC (XDP, or TCX for `tc_interfaces`). A
//!   pinned link keeps the program attached with no process holding it; a new program
//!   replaces the old one on the same link atomically (`BPF_LINK_UPDATE`), so no packet
//!   meets a NIC without the program.
//!
//! aya reuses a pinned map by name without looking at it, so before loading, every
//! pinned map is checked against the map the object defines (type, key and value size,
//! capacity from config) and the pinned layout version against this build's.
use std::{
    collections::HashMap,
    fs,
    os::unix::fs::{DirBuilderExt, PermissionsExt},
    path::{Path, PathBuf},
};

use aya::{
    maps::{Array, MapData, MapInfo},
    programs::links::PinnedLink,
};
use lb_common::limits::{adopts_layout, LAYOUT_VERSION, MAP_EGRESS, MAP_LAYOUT, MAP_TRACE_PREFIX};

/// Why pinned state cannot be adopted.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("{dir} is not on a bpffs mount (mount one: `mount -t bpf bpf /sys/fs/bpf`)")]
    NotBpffs { dir: PathBuf },
    #[error("pinned map {name} is {found}, this lbd needs {wanted}; the layout changed, so the pinned flows cannot be kept: run `lbd --detach` (drops established flows) and start again")]
    Incompatible {
        name: String,
        found: String,
        wanted: String,
    },
    #[error("pinned maps have layout version {found}, this lbd uses {wanted}; run `lbd --detach` (drops established flows) and start again")]
    LayoutVersion { found: u32, wanted: u32 },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("reading pinned map {path}: {source}")]
    Map {
        path: PathBuf,
        source: aya::maps::MapError,
    },
    #[error("parsing the XDP object: {0}")]
    Object(String),
    #[error("{dir} exists and is not a directory")]
    NotADirectory { dir: PathBuf },
    #[error("{dir} is inside {outer}, the pin directory of another lbd (it holds `maps` and `links`); choose a directory outside it")]
    Nested { dir: PathBuf, outer: PathBuf },
}

/// The shape of one map: what the kernel reports for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapShape {
    pub map_type: u32,
    pub flags: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
}

impl std::fmt::Display for MapShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "type {} flags {:#x} key {} B value {} B x {} entries",
            self.map_type, self.flags, self.key_size, self.value_size, self.max_entries
        )
    }
}

/// The maps of `object` that are pinned (all but the egress devmap), with the shapes
/// they get once `sizes` (the loader's capacity overrides) are applied.
pub fn pinned_shapes(
    object: &[u8],
    sizes: &[(&str, u32)],
) -> Result<Vec<(String, MapShape)>, PinError> {
    let parsed = aya_obj::Object::parse(object).map_err(|e| PinError::Object(e.to_string()))?;
    let sizes: HashMap<&str, u32> = sizes.iter().copied().collect();
    let mut shapes: Vec<(String, MapShape)> = parsed
        .maps
        .iter()
        // The trace's maps belong to one lbd: a restart starts with every trace off.
        .filter(|(name, _)| {
            name.as_str() != MAP_EGRESS
                && !name.starts_with('.')
                && !name.starts_with(MAP_TRACE_PREFIX)
        })
        .map(|(name, map)| {
            let shape = MapShape {
                map_type: map.map_type(),
                flags: map.map_flags(),
                key_size: map.key_size(),
                value_size: map.value_size(),
                max_entries: sizes
                    .get(name.as_str())
                    .copied()
                    .unwrap_or(map.max_entries()),
            };
            (name.clone(), shape)
        })
        .collect();
    shapes.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(shapes)
}

/// statfs magic of bpffs.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

fn on_bpffs(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: a valid NUL-terminated path and a zeroed out-parameter.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC
    }
}

/// The pin directory of one lbd.
#[derive(Debug, Clone)]
pub struct PinDir {
    root: PathBuf,
}

impl PinDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn map_path(&self, name: &str) -> PathBuf {
        self.root.join("maps").join(name)
    }

    pub fn link_path(&self, interface: &str) -> PathBuf {
        self.root.join("links").join(interface)
    }

    /// Checks that the directory is (or, once created, will be) on bpffs.
    pub fn check_bpffs(&self) -> Result<(), PinError> {
        self.check_placement()?;
        let mut base = self.root.clone();
        while !base.exists() {
            if !base.pop() {
                break;
            }
        }
        if !on_bpffs(&base) {
            return Err(PinError::NotBpffs {
                dir: self.root.clone(),
            });
        }
        Ok(())
    }

    /// The directory is one (or does not exist yet) and is not inside another lbd's
    /// pin directory, whose maps and links it would be pinned among.
    fn check_placement(&self) -> Result<(), PinError> {
        if self.root.exists() && !self.root.is_dir() {
            return Err(PinError::NotADirectory {
                dir: self.root.clone(),
            });
        }
        let is_pin_dir = |d: &Path| d.join("maps").is_dir() && d.join("links").is_dir();
        if let Some(outer) = self.root.ancestors().skip(1).find(|d| is_pin_dir(d)) {
            return Err(PinError::Nested {
                dir: self.root.clone(),
                outer: outer.to_path_buf(),
            });
        }
        Ok(())
    }

    /// Creates the directory tree, owner-only, after checking that it is on bpffs.
    pub fn prepare(&self) -> Result<(), PinError> {
        self.check_bpffs()?;
        for dir in [
            self.root.clone(),
            self.root.join("maps"),
            self.root.join("links"),
        ] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(|source| PinError::Io {
                    what: "creating",
                    path: dir.clone(),
                    source,
                })?;
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).map_err(|source| {
                PinError::Io {
                    what: "restricting",
                    path: dir.clone(),
                    source,
                }
            })?;
        }
        Ok(())
    }

    /// Whether a previous lbd left maps here to adopt.
    pub fn has_maps(&self) -> bool {
        self.map_path(MAP_LAYOUT).exists()
    }

    /// Checks every pinned map against `shapes` and the layout version; Ok when there is
    /// nothing pinned yet.
    pub fn check(&self, shapes: &[(String, MapShape)]) -> Result<(), PinError> {
        for (name, wanted) in shapes {
            let path = self.map_path(name);
            if !path.exists() {
                continue;
            }
            let info = MapInfo::from_pin(&path).map_err(|source| PinError::Map {
                path: path.clone(),
                source,
            })?;
            let found = MapShape {
                map_type: info.map_type().map(|t| t as u32).unwrap_or(u32::MAX),
                flags: info.map_flags(),
                key_size: info.key_size(),
                value_size: info.value_size(),
                max_entries: info.max_entries(),
            };
            if found != *wanted {
                return Err(PinError::Incompatible {
                    name: name.clone(),
                    found: found.to_string(),
                    wanted: wanted.to_string(),
                });
            }
        }
        if let Some(found) = self.layout_version()? {
            if !adopts_layout(found) {
                return Err(PinError::LayoutVersion {
                    found,
                    wanted: LAYOUT_VERSION,
                });
            }
        }
        Ok(())
    }

    fn layout_version(&self) -> Result<Option<u32>, PinError> {
        let path = self.map_path(MAP_LAYOUT);
        if !path.exists() {
            return Ok(None);
        }
        let data = MapData::from_pin(&path).map_err(|source| PinError::Map {
            path: path.clone(),
            source,
        })?;
        let map: Array<MapData, u32> =
            Array::try_from(aya::maps::Map::Array(data)).map_err(|source| PinError::Map {
                path: path.clone(),
                source,
            })?;
        map.get(&0, 0)
            .map(Some)
            .map_err(|source| PinError::Map { path, source })
    }

    /// Interfaces with a pinned link.
    pub fn linked_interfaces(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.root.join("links"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Unpins every link (which detaches XDP from its NIC once nothing else holds it)
    /// and every map, and removes the directory. Returns the interfaces detached.
    pub fn remove_all(&self) -> Result<Vec<String>, PinError> {
        let interfaces = self.linked_interfaces();
        for name in &interfaces {
            let path = self.link_path(name);
            match PinnedLink::from_pin(&path) {
                Ok(link) => {
                    link.unpin().map_err(|source| PinError::Io {
                        what: "unpinning",
                        path: path.clone(),
                        source,
                    })?;
                }
                Err(_) => fs::remove_file(&path).map_err(|source| PinError::Io {
                    what: "removing",
                    path: path.clone(),
                    source,
                })?,
            }
        }
        if self.root.exists() {
            fs::remove_dir_all(&self.root).map_err(|source| PinError::Io {
                what: "removing",
                path: self.root.clone(),
                source,
            })?;
        }
        Ok(interfaces)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pin_dir_that_is_a_file_or_inside_another_lbds_is_refused() {
        let tmp = std::env::temp_dir().join(format!("lb-pins-test-{}", std::process::id()));
        let outer = tmp.join("lbd");
        fs::create_dir_all(outer.join("maps")).unwrap();
        fs::create_dir_all(outer.join("links")).unwrap();
        fs::write(tmp.join("a-file"), b"").unwrap();

        let nested = PinDir::new(outer.join("maps").join("lbd2")).check_bpffs();
        assert!(
            matches!(&nested, Err(PinError::Nested { outer: o, .. }) if *o == outer),
            "{nested:?}"
        );
        let file = PinDir::new(tmp.join("a-file")).check_bpffs();
        assert!(
            matches!(file, Err(PinError::NotADirectory { .. })),
            "{file:?}"
        );
        // Beside it is fine as far as placement goes (and then not on bpffs here).
        let beside = PinDir::new(tmp.join("lbd2")).check_bpffs();
        assert!(
            matches!(beside, Err(PinError::NotBpffs { .. })),
            "{beside:?}"
        );
        fs::remove_dir_all(&tmp).unwrap();
    }
}
