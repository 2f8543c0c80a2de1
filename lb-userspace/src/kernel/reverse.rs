//! The reverse maps' writes (see `lb_common::reverse` and `lb_common::reverse6`), one
//! function for both families' maps.
use std::{collections::BTreeMap, fmt::Debug};

use anyhow::Context as _;
use aya::{
    maps::{HashMap, MapData, MapError},
    Pod,
};

use crate::dataplane::{DataplaneError, WriteResult};

/// Makes the reverse map `map` (named `name`) hold exactly `entries`. The kernel's keys
/// are read each time (one walk of a map of at most `max_backends` entries, empty unless
/// a service has `stateless_return`), so adopted pinned state needs no copy of its own. A
/// full map (sized by `limits.max_backends`, `capacity`, like the backend slots) is
/// [`DataplaneError::TableFull`], checked before anything is written.
pub(super) fn write_reverse_map<K, V>(
    map: &mut HashMap<MapData, K, V>,
    name: &'static str,
    capacity: u32,
    entries: &BTreeMap<K, V>,
) -> WriteResult
where
    K: Pod + Ord + Debug,
    V: Pod + PartialEq,
{
    let full = || DataplaneError::TableFull {
        map: name,
        capacity,
        limit: "max_backends",
    };
    if entries.len() > capacity as usize {
        return Err(full());
    }
    let present: Vec<(K, V)> = map
        .iter()
        .collect::<Result<_, _>>()
        .with_context(|| format!("reading {name}"))?;
    for (key, _) in present.iter().filter(|(k, _)| !entries.contains_key(k)) {
        map.remove(key)
            .with_context(|| format!("deleting {name} entry {key:?}"))?;
    }
    for (key, target) in entries {
        if !present.iter().any(|(k, t)| k == key && t == target) {
            map.insert(key, target, 0).map_err(|e| match &e {
                MapError::SyscallError(s)
                    if matches!(s.io_error.raw_os_error(), Some(libc::E2BIG | libc::ENOSPC)) =>
                {
                    full()
                }
                _ => DataplaneError::Kernel(
                    anyhow::Error::new(e).context(format!("writing {name} entry {key:?}")),
                ),
            })?;
        }
    }
    Ok(())
}
