//! The controller's side of the service index (see `lb_common::service_index`): the
//! kernel array, read and written through its memory mapping, one atomic store per word.
use std::net::Ipv4Addr;

use anyhow::{ensure, Context as _};
use lb_common::{
    limits::MAP_SERVICE_INDEX,
    service::{ServiceKey, ServiceMeta},
    service_index::{
        find, key_of_word, key_word, pack_meta, place, unpack_meta, Placement, SLOT_EMPTY,
        SLOT_REMOVED,
    },
};

use crate::{
    dataplane::{DataplaneError, WriteResult},
    kernel::mmap_array::MmapArray,
};

/// Word offsets in a slot.
const KEY: usize = 0;
const META: usize = 1;

pub struct ServiceIndex {
    map: MmapArray,
    mask: u32,
}

fn describe(key: &ServiceKey) -> String {
    format!(
        "{}:{}",
        Ipv4Addr::from(key.addr.to_ne_bytes()),
        u16::from_be(key.port)
    )
}

impl ServiceIndex {
    pub fn new(map: MmapArray) -> anyhow::Result<Self> {
        let slots = map.entries();
        ensure!(
            slots.is_power_of_two(),
            "the service index has {slots} slots, not a power of two"
        );
        Ok(Self {
            map,
            mask: slots - 1,
        })
    }

    /// Publishes `key`'s service or replaces its meta (one store: a flip is atomic).
    pub fn set(&mut self, key: &ServiceKey, meta: &ServiceMeta) -> WriteResult {
        let packed = pack_meta(meta).with_context(|| {
            format!(
                "service {}: {meta:?} does not fit the index's meta word",
                describe(key)
            )
        })?;
        let word = key_word(key);
        match place(word, self.mask, |at| self.map.load_u64(at, KEY)) {
            Some(Placement::Existing(at)) => self.map.store_u64(at, META, packed),
            Some(Placement::Free(at)) => {
                // A packet that finds the key must find its meta already there.
                self.map.store_u64(at, META, packed);
                self.map.store_u64(at, KEY, word);
            }
            // No free slot within `SERVICE_INDEX_PROBES` of the key's home: the index is
            // sized from max_services, so more room means a larger limit.
            None => {
                return Err(DataplaneError::TableFull {
                    map: MAP_SERVICE_INDEX,
                    capacity: self.mask + 1,
                    limit: "max_services",
                });
            }
        }
        Ok(())
    }

    pub fn remove(&mut self, key: &ServiceKey) -> anyhow::Result<()> {
        let at = find(key_word(key), self.mask, |at| self.map.load_u64(at, KEY))
            .with_context(|| format!("service {} is not in the service index", describe(key)))?;
        self.map.store_u64(at, KEY, SLOT_REMOVED);
        Ok(())
    }

    /// The published meta of `key`'s service, found as the data path finds it.
    pub fn get(&self, key: &ServiceKey) -> Option<ServiceMeta> {
        let at = find(key_word(key), self.mask, |at| self.map.load_u64(at, KEY))?;
        Some(unpack_meta(self.map.load_u64(at, META)))
    }

    /// Every published service, in slot order.
    pub fn entries(&self) -> Vec<(ServiceKey, ServiceMeta)> {
        (0..=self.mask)
            .filter_map(|at| {
                let key = self.map.load_u64(at, KEY);
                (key != SLOT_EMPTY && key != SLOT_REMOVED)
                    .then(|| (key_of_word(key), unpack_meta(self.map.load_u64(at, META))))
            })
            .collect()
    }
}
