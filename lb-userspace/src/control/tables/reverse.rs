//! The controller's write of the reverse map, after each apply (see
//! `crate::model::reverse_map`).
use anyhow::Context as _;

use super::Controller;
use crate::{
    dataplane::Dataplane,
    model::{config::Config, reverse_map::reverse_entries},
};

impl<D: Dataplane> Controller<D> {
    /// Makes the reverse map match the applied plan. Written after the tables: a reply
    /// the map does not translate yet is passed, as before `stateless_return` was on.
    pub(super) fn write_reverse_map(&mut self, config: &Config) -> anyhow::Result<()> {
        let Some(plan) = self.plan.as_ref() else {
            return Ok(());
        };
        let entries = reverse_entries(config, plan);
        self.dataplane
            .set_reverse_map(&entries)
            .with_context(|| format!("writing the reverse map ({} entries)", entries.len()))
    }
}
