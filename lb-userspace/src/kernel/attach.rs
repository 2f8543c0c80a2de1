//! Attaching the program to NICs (native or generic XDP, through pinned links that
//! outlive lbd) and detaching it.
use std::path::Path;

use anyhow::{bail, Context as _};
use aya::programs::{
    links::{FdLink, PinnedLink},
    xdp::{XdpLink, XdpLinkId},
    Xdp, XdpMode,
};
use lb_common::limits::*;
use log::{info, warn};

use super::{links, links::ifindex_of, KernelDataplane};
use crate::{kernel::pins::PinDir, model::config::XdpAttachMode};

impl KernelDataplane {
    pub(super) fn program_mut(&mut self) -> &mut Xdp {
        self.ebpf
            .program_mut(PROGRAM_XDP)
            .and_then(|p| <&mut Xdp>::try_from(p).ok())
            .expect("checked at load")
    }

    /// Makes `ifindex` a target of XDP_REDIRECT.
    pub fn add_egress(&mut self, ifindex: u32) -> anyhow::Result<()> {
        self.egress
            .insert(ifindex, ifindex, None, 0)
            .with_context(|| format!("adding ifindex {ifindex} to the egress devmap"))
    }

    /// Attaches the program to each interface and registers it for redirects. With
    /// `pins`, each attachment is a pinned link that outlives lbd, and an interface that
    /// already has one gets this program swapped in atomically on that link; pinned links
    /// of interfaces no longer configured are removed (detached). On error, whatever was
    /// attached stays attached.
    pub fn attach(
        &mut self,
        interfaces: &[String],
        mode: XdpAttachMode,
        pins: Option<&PinDir>,
    ) -> anyhow::Result<()> {
        self.links = links::Links::new(interfaces, mode, pins);
        if let Some(pins) = pins {
            for stale in pins.linked_interfaces() {
                if !interfaces.contains(&stale) {
                    let path = pins.link_path(&stale);
                    PinnedLink::from_pin(&path)
                        .with_context(|| format!("opening {}", path.display()))?
                        .unpin()
                        .with_context(|| format!("unpinning {}", path.display()))?;
                    info!("detached lb_xdp from {stale}, which is no longer configured");
                }
            }
        }
        // Every NIC is a redirect target before any program of this lbd runs: before a
        // link runs this lb_xdp, and before the running lb_xdp's tail calls reach the
        // programs it tail-calls through the shared program array.
        let ifindexes = interfaces
            .iter()
            .map(|name| ifindex_of(name))
            .collect::<anyhow::Result<Vec<u32>>>()?;
        for ifindex in &ifindexes {
            self.add_egress(*ifindex)?;
        }
        self.install_tail_called()?;
        for (name, ifindex) in interfaces.iter().zip(ifindexes) {
            let pinned = pins.map(|p| p.link_path(name)).filter(|p| p.exists());
            let replaced = match &pinned {
                Some(path) => self.replace_on_pinned_link(name, path)?,
                None => false,
            };
            if !replaced {
                self.attach_fresh(name, mode, pins)?;
                info!("attached lb_xdp to {name} (ifindex {ifindex})");
            }
            self.links.set(name, Some(ifindex));
        }
        Ok(())
    }

    pub(super) fn attach_new(
        &mut self,
        name: &str,
        mode: XdpAttachMode,
    ) -> anyhow::Result<XdpLinkId> {
        Ok(match mode {
            XdpAttachMode::Native => self.attach_one(name, XdpMode::Driver)?,
            XdpAttachMode::Generic => self.attach_one(name, XdpMode::Skb)?,
            XdpAttachMode::Auto => match self.attach_one(name, XdpMode::Driver) {
                Ok(link) => link,
                Err(native) => match self.attach_one(name, XdpMode::Skb) {
                    Ok(link) => {
                        warn!("{name}: native XDP failed ({native:#}); using generic XDP");
                        link
                    }
                    // Both failing is rarely about driver support (e.g. another
                    // program is attached): report both causes.
                    Err(generic) => bail!("{native:#}; and then {generic:#}"),
                },
            },
        })
    }

    /// Hands the link to bpffs: it stays attached after lbd exits.
    pub(super) fn pin_link(&mut self, link: XdpLinkId, path: &Path) -> anyhow::Result<()> {
        let link = self.program_mut().take_link(link)?;
        let fd_link = FdLink::try_from(link)
            .context("the kernel gave a netlink XDP attachment, which cannot be pinned")?;
        fd_link
            .pin(path)
            .with_context(|| format!("pinning the XDP link at {}", path.display()))?;
        Ok(())
    }

    /// Swaps this program onto a pinned link (BPF_LINK_UPDATE): the NIC goes from the
    /// old program to this one with no moment in between. False when the link was
    /// severed (its NIC was deleted, perhaps re-created since): the pin is removed, and
    /// the caller attaches afresh.
    pub(super) fn replace_on_pinned_link(
        &mut self,
        name: &str,
        path: &Path,
    ) -> anyhow::Result<bool> {
        let pinned = PinnedLink::from_pin(path)
            .with_context(|| format!("opening the pinned link {}", path.display()))?;
        let link = XdpLink::try_from(FdLink::from(pinned))
            .with_context(|| format!("{} is not an XDP link", path.display()))?;
        let id = match self.program_mut().attach_to_link(link) {
            Ok(id) => id,
            Err(e) if links::is_severed(&e) => {
                warn!(
                    "{name}'s pinned XDP link was severed (the NIC was deleted since it was \
                     attached); replacing it with a new link"
                );
                links::unpin(path)?;
                return Ok(false);
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("replacing the program on {name}'s XDP link"))
            }
        };
        // The pin keeps the link; dropping our handle must not detach it.
        drop(self.program_mut().take_link(id)?);
        info!("replaced the program on {name}'s pinned XDP link");
        Ok(true)
    }

    pub(super) fn attach_one(&mut self, name: &str, mode: XdpMode) -> anyhow::Result<XdpLinkId> {
        self.program_mut()
            .attach(name, mode)
            .with_context(|| format!("attaching XDP ({mode:?}) to {name}"))
    }

    /// Detaches from every NIC.
    pub fn detach_all(&mut self) {
        while let Some((name, link)) = self.attached.pop() {
            match self.program_mut().detach(link) {
                Ok(()) => info!("detached lb_xdp from {name}"),
                Err(e) => warn!("detaching from {name}: {e}"),
            }
        }
    }
}

impl Drop for KernelDataplane {
    fn drop(&mut self) {
        self.detach_all();
    }
}
