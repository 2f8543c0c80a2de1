//! The decap object: loaded, its config written, attached to each NIC through a pinned
//! link (tc ingress as a TCX link, or XDP) that outlives `lb-decap`, its counters read
//! from the pinned map, and its links removed.
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context as _};
use aya::{
    maps::{Array, MapData, PerCpuArray},
    programs::{links::FdLink, tc::TcAttachType, SchedClassifier, Xdp, XdpMode},
    Ebpf,
};
use lb_common::decap::{
    DecapConfig, DecapCounter, MAP_DECAP_CONFIG, MAP_DECAP_COUNTERS, PROGRAM_DECAP_TC,
    PROGRAM_DECAP_XDP,
};

use super::settings::Hook;

/// The object built from `lb-ebpf/src/decap.rs` by the build script; empty when built
/// with `LB_EBPF_STUB=1`.
static DECAP_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-decap"));

/// The decap object, loaded (not attached).
pub struct DecapProgram {
    ebpf: Ebpf,
}

impl DecapProgram {
    pub fn load() -> anyhow::Result<Self> {
        ensure!(
            !DECAP_OBJECT.is_empty(),
            "this binary was built with LB_EBPF_STUB=1 and carries no decap program; rebuild with `cargo xtask build`"
        );
        let mut ebpf = Ebpf::load(DECAP_OBJECT).context("loading the decap object")?;
        let tc: &mut SchedClassifier = ebpf
            .program_mut(PROGRAM_DECAP_TC)
            .context("the object has no lb_decap_tc")?
            .try_into()?;
        tc.load().context("loading lb_decap_tc into the kernel")?;
        let xdp: &mut Xdp = ebpf
            .program_mut(PROGRAM_DECAP_XDP)
            .context("the object has no lb_decap_xdp")?
            .try_into()?;
        xdp.load().context("loading lb_decap_xdp into the kernel")?;
        Ok(Self { ebpf })
    }

    pub fn configure(&mut self, config: &DecapConfig) -> anyhow::Result<()> {
        let mut map: Array<&mut MapData, DecapConfig> = Array::try_from(
            self.ebpf
                .map_mut(MAP_DECAP_CONFIG)
                .context("the object has no DECAP_CONFIG")?,
        )?;
        map.set(0, config, 0).context("writing DECAP_CONFIG")
    }

    pub fn tc(&self) -> &SchedClassifier {
        self.ebpf
            .program(PROGRAM_DECAP_TC)
            .and_then(|p| p.try_into().ok())
            .expect("checked at load")
    }

    pub fn xdp(&self) -> &Xdp {
        self.ebpf
            .program(PROGRAM_DECAP_XDP)
            .and_then(|p| p.try_into().ok())
            .expect("checked at load")
    }

    /// Each counter of this loaded object, summed over CPUs.
    pub fn counters(&self) -> anyhow::Result<Vec<(DecapCounter, u64)>> {
        let map: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(
            self.ebpf
                .map(MAP_DECAP_COUNTERS)
                .context("the object has no DECAP_COUNTERS")?,
        )?;
        sum_counters(&map)
    }

    /// Pins the counters at `path`, where `lb-decap stats` reads them.
    pub fn pin_counters(&self, path: &Path) -> anyhow::Result<()> {
        self.ebpf
            .map(MAP_DECAP_COUNTERS)
            .context("the object has no DECAP_COUNTERS")?
            .pin(path)
            .with_context(|| format!("pinning the counters at {}", path.display()))
    }

    /// Attaches to `interface` and pins the link at `path`.
    pub fn attach(&mut self, hook: Hook, interface: &str, path: &Path) -> anyhow::Result<()> {
        let link: FdLink = match hook {
            Hook::Tc => {
                let tc: &mut SchedClassifier = self
                    .ebpf
                    .program_mut(PROGRAM_DECAP_TC)
                    .expect("checked at load")
                    .try_into()?;
                let id = tc
                    .attach(interface, TcAttachType::Ingress)
                    .with_context(|| {
                        format!("attaching lb_decap_tc to {interface} (tc ingress)")
                    })?;
                tc.take_link(id)?
                    .try_into()
                    .context("the kernel gave a netlink tc filter, which cannot be pinned (TCX needs Linux 6.6)")?
            }
            Hook::Xdp => {
                let xdp: &mut Xdp = self
                    .ebpf
                    .program_mut(PROGRAM_DECAP_XDP)
                    .expect("checked at load")
                    .try_into()?;
                let id = match xdp.attach(interface, XdpMode::Driver) {
                    Ok(id) => id,
                    Err(_) => xdp
                        .attach(interface, XdpMode::Skb)
                        .with_context(|| format!("attaching lb_decap_xdp to {interface}"))?,
                };
                xdp.take_link(id)?
                    .try_into()
                    .context("the kernel gave a netlink XDP attachment, which cannot be pinned")?
            }
        };
        link.pin(path)
            .with_context(|| format!("pinning the link at {}", path.display()))?;
        Ok(())
    }
}

/// The pinned link of `interface` under `pin_dir`.
pub fn link_path(pin_dir: &Path, interface: &str) -> PathBuf {
    pin_dir.join(format!("link_{interface}"))
}

pub fn counters_path(pin_dir: &Path) -> PathBuf {
    pin_dir.join(MAP_DECAP_COUNTERS)
}

/// Removes a pinned link, which detaches it; a missing pin is no error.
pub fn unpin_link(path: &Path) -> anyhow::Result<()> {
    if !path.exists() {
        return Ok(());
    }
    aya::programs::links::PinnedLink::from_pin(path)
        .with_context(|| format!("opening {}", path.display()))?
        .unpin()
        .with_context(|| format!("unpinning {}", path.display()))?;
    Ok(())
}

/// Each counter of the attached program (pinned under `pin_dir`), summed over CPUs, in
/// [`DecapCounter::ALL`]'s order.
pub fn read_counters(pin_dir: &Path) -> anyhow::Result<Vec<(DecapCounter, u64)>> {
    let path = counters_path(pin_dir);
    let data = MapData::from_pin(&path).with_context(|| {
        format!(
            "opening {} (is lb-decap attached with this pin_dir?)",
            path.display()
        )
    })?;
    let map: PerCpuArray<MapData, u64> = PerCpuArray::try_from(aya::maps::Map::PerCpuArray(data))?;
    sum_counters(&map)
}

fn sum_counters<T: std::borrow::Borrow<MapData>>(
    map: &PerCpuArray<T, u64>,
) -> anyhow::Result<Vec<(DecapCounter, u64)>> {
    DecapCounter::ALL
        .iter()
        .map(|c| {
            let per_cpu = map
                .get(&(*c as u32), 0)
                .with_context(|| format!("reading counter {}", c.name()))?;
            Ok((*c, per_cpu.iter().sum()))
        })
        .collect()
}
