//! The packet trace's maps (see `lb_common::trace`): the per-service sampling that the
//! controller writes, the ring buffer of records, and the count of records lost to a
//! full ring.
use anyhow::Context as _;
use aya::{
    maps::{Array, MapData, PerCpuArray, RingBuf},
    Ebpf,
};
use lb_common::limits::{MAP_TRACE_LOST, MAP_TRACE_RING, MAP_TRACE_SAMPLE};

use crate::kernel::take;

pub struct TraceMaps {
    sample: Array<MapData, u32>,
    /// Until a reader takes it.
    ring: Option<RingBuf<MapData>>,
    lost: PerCpuArray<MapData, u64>,
}

impl TraceMaps {
    pub(in crate::kernel) fn take(ebpf: &mut Ebpf) -> anyhow::Result<Self> {
        Ok(Self {
            sample: take(ebpf, MAP_TRACE_SAMPLE)?,
            ring: Some(take(ebpf, MAP_TRACE_RING)?),
            lost: take(ebpf, MAP_TRACE_LOST)?,
        })
    }

    /// Traces 1 in `every` packets of service id `service` (0 = off).
    pub fn set_sample(&mut self, service: u32, every: u32) -> anyhow::Result<()> {
        self.sample
            .set(service, every, 0)
            .with_context(|| format!("writing {MAP_TRACE_SAMPLE}[{service}]"))
    }

    /// The ring of records, for the one reader; `None` once taken.
    pub fn take_ring(&mut self) -> Option<RingBuf<MapData>> {
        self.ring.take()
    }

    /// Records lost to a full ring since load, summed over CPUs.
    pub fn lost(&self) -> anyhow::Result<u64> {
        let per_cpu = self
            .lost
            .get(&0, 0)
            .with_context(|| format!("reading {MAP_TRACE_LOST}"))?;
        Ok(per_cpu.iter().sum())
    }
}
