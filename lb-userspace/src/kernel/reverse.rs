//! The reverse map's writes (see `lb_common::reverse`).
use std::collections::BTreeMap;

use anyhow::Context as _;
use aya::maps::MapError;
use lb_common::{
    limits::MAP_REVERSE,
    reverse::{ReverseKey, ReverseTarget},
};

use super::KernelDataplane;
use crate::dataplane::{DataplaneError, WriteResult};

impl KernelDataplane {
    /// Makes the REVERSE map hold exactly `entries`. The kernel's keys are read each time
    /// (one walk of a map of at most `max_backends` entries, empty unless a service has
    /// `stateless_return`), so adopted pinned state needs no copy of its own. A full map
    /// (sized by `limits.max_backends`, like the backend slots) is
    /// [`DataplaneError::TableFull`], checked before anything is written.
    pub(super) fn write_reverse_map(
        &mut self,
        entries: &BTreeMap<ReverseKey, ReverseTarget>,
    ) -> WriteResult {
        // The backend array and this map are both sized from max_backends.
        let capacity = self.backends.len();
        let full = || DataplaneError::TableFull {
            map: MAP_REVERSE,
            capacity,
            limit: "max_backends",
        };
        if entries.len() > capacity as usize {
            return Err(full());
        }
        let present: Vec<(ReverseKey, ReverseTarget)> = self
            .reverse
            .iter()
            .collect::<Result<_, _>>()
            .context("reading the reverse map")?;
        for (key, _) in present.iter().filter(|(k, _)| !entries.contains_key(k)) {
            self.reverse
                .remove(key)
                .with_context(|| format!("deleting reverse-map entry {key:?}"))?;
        }
        for (key, target) in entries {
            if !present.iter().any(|(k, t)| k == key && t == target) {
                self.reverse.insert(key, target, 0).map_err(|e| match &e {
                    MapError::SyscallError(s)
                        if matches!(
                            s.io_error.raw_os_error(),
                            Some(libc::E2BIG | libc::ENOSPC)
                        ) =>
                    {
                        full()
                    }
                    _ => DataplaneError::Kernel(
                        anyhow::Error::new(e).context(format!("writing reverse-map entry {key:?}")),
                    ),
                })?;
            }
        }
        Ok(())
    }
}
