//! The reverse map's writes (see `lb_common::reverse`).
use std::collections::BTreeMap;

use anyhow::Context as _;
use lb_common::reverse::{ReverseKey, ReverseTarget};

use super::KernelDataplane;

impl KernelDataplane {
    /// Makes the REVERSE map hold exactly `entries`. The kernel's keys are read each time
    /// (one walk of a map of at most `max_backends` entries, empty unless a service has
    /// `stateless_return`), so adopted pinned state needs no copy of its own.
    pub(super) fn write_reverse_map(
        &mut self,
        entries: &BTreeMap<ReverseKey, ReverseTarget>,
    ) -> anyhow::Result<()> {
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
                self.reverse
                    .insert(key, target, 0)
                    .with_context(|| format!("writing reverse-map entry {key:?}"))?;
            }
        }
        Ok(())
    }
}
