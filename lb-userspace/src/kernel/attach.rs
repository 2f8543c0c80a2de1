//! Attaching the data path to NICs (XDP, native or generic; or tc ingress through a
//! TCX link), through pinned links that outlive lbd, and detaching it.
use std::path::Path;

use anyhow::{bail, Context as _};
use aya::programs::{
    links::{FdLink, PinnedLink},
    tc::{SchedClassifierLink, SchedClassifierLinkId, TcAttachType},
    xdp::{XdpLink, XdpLinkId},
    SchedClassifier, Xdp, XdpMode,
};
use lb_common::limits::*;
use log::{info, warn};

use super::{hook::Hook, links, links::ifindex_of, KernelDataplane};
use crate::{kernel::pins::PinDir, model::config::XdpAttachMode};

/// An attachment lbd holds itself (not pinned): detached when lbd lets go of it.
#[derive(Debug)]
pub(super) enum LinkId {
    Xdp(XdpLinkId),
    Tc(SchedClassifierLinkId),
}

impl KernelDataplane {
    pub(super) fn program_mut(&mut self) -> &mut Xdp {
        self.ebpf
            .program_mut(PROGRAM_XDP)
            .and_then(|p| <&mut Xdp>::try_from(p).ok())
            .expect("checked at load")
    }

    pub(super) fn tc_program_mut(&mut self) -> &mut SchedClassifier {
        self.ebpf
            .program_mut(PROGRAM_TC)
            .and_then(|p| <&mut SchedClassifier>::try_from(p).ok())
            .expect("checked at load")
    }

    /// Makes `ifindex` a target of XDP_REDIRECT.
    pub fn add_egress(&mut self, ifindex: u32) -> anyhow::Result<()> {
        self.egress
            .insert(ifindex, ifindex, None, 0)
            .with_context(|| format!("adding ifindex {ifindex} to the egress devmap"))
    }

    /// Attaches the data path to each interface (`lb_tc` to those in `tc_interfaces`,
    /// `lb_xdp` to the others) and registers it for redirects. With `pins`, each
    /// attachment is a pinned link that outlives lbd, and an interface that already has
    /// one gets this program swapped in atomically on that link (or, when the interface
    /// moved to the other hook, the new hook's link attached before the old one goes);
    /// pinned links of interfaces no longer configured are removed (detached). On error,
    /// whatever was attached stays attached.
    pub fn attach(
        &mut self,
        interfaces: &[String],
        tc_interfaces: &[String],
        mode: XdpAttachMode,
        pins: Option<&PinDir>,
    ) -> anyhow::Result<()> {
        self.links = links::Links::new(interfaces, tc_interfaces, mode, pins);
        if let Some(pins) = pins {
            for stale in pins.linked_interfaces() {
                if !interfaces.contains(&stale) {
                    let path = pins.link_path(&stale);
                    PinnedLink::from_pin(&path)
                        .with_context(|| format!("opening {}", path.display()))?
                        .unpin()
                        .with_context(|| format!("unpinning {}", path.display()))?;
                    info!("detached the data path from {stale}, which is no longer configured");
                }
            }
        }
        // Every XDP NIC is a redirect target before any program of this lbd runs: before
        // a link runs this lb_xdp, and before the running lb_xdp's tail calls reach the
        // programs it tail-calls through the shared program array. A NIC at tc is none:
        // XDP_REDIRECT into a veth needs NAPI on its peer (an XDP program there), which
        // a veth at tc does not have, so lb_xdp hands a packet for it to the kernel
        // (`pass_egress_not_attached`), which forwards it.
        let ifindexes = interfaces
            .iter()
            .map(|name| ifindex_of(name))
            .collect::<anyhow::Result<Vec<u32>>>()?;
        for (name, ifindex) in interfaces.iter().zip(&ifindexes) {
            if self.links.hook(name) == Hook::Xdp {
                self.add_egress(*ifindex)?;
            }
        }
        if !tc_interfaces.is_empty() {
            anyhow::ensure!(
                self.tc_program().fd().is_ok(),
                "lb_tc was not loaded (the config this data path was loaded with has no \
                 tc_interfaces)"
            );
        }
        self.install_tail_called()?;
        for (name, ifindex) in interfaces.iter().zip(ifindexes) {
            let hook = self.links.hook(name);
            let pinned = pins.map(|p| p.link_path(name)).filter(|p| p.exists());
            let replaced = match &pinned {
                Some(path) => self.replace_on_pinned_link(name, path, hook)?,
                None => false,
            };
            if !replaced {
                self.attach_fresh(name, hook, pins)?;
                info!("attached {} to {name} (ifindex {ifindex})", hook.program());
            }
            self.links.set(name, Some(ifindex));
        }
        Ok(())
    }

    /// Attaches a new link of `hook` to `name`, held by lbd.
    pub(super) fn attach_new(&mut self, name: &str, hook: Hook) -> anyhow::Result<LinkId> {
        match hook {
            Hook::Xdp => Ok(LinkId::Xdp(self.attach_new_xdp(name, self.links.mode())?)),
            // A TCX link (Linux 6.6 and later): it can be pinned and updated like an XDP
            // link, and it runs before any classic tc filter.
            Hook::Tc => Ok(LinkId::Tc(
                self.tc_program_mut()
                    .attach(name, TcAttachType::Ingress)
                    .with_context(|| format!("attaching lb_tc to {name}'s tc ingress"))?,
            )),
        }
    }

    fn attach_new_xdp(&mut self, name: &str, mode: XdpAttachMode) -> anyhow::Result<XdpLinkId> {
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
    pub(super) fn pin_link(&mut self, link: LinkId, path: &Path) -> anyhow::Result<()> {
        let fd_link = match link {
            LinkId::Xdp(id) => FdLink::try_from(self.program_mut().take_link(id)?)
                .context("the kernel gave a netlink XDP attachment, which cannot be pinned")?,
            LinkId::Tc(id) => FdLink::try_from(self.tc_program_mut().take_link(id)?).context(
                "the kernel gave a netlink tc attachment (no TCX before Linux 6.6), which \
                 cannot be pinned",
            )?,
        };
        fd_link
            .pin(path)
            .with_context(|| format!("pinning the link at {}", path.display()))?;
        Ok(())
    }

    /// Swaps this program onto a pinned link (BPF_LINK_UPDATE): the NIC goes from the
    /// old program to this one with no moment in between. False when the link was
    /// severed (its NIC was deleted, perhaps re-created since): the pin is removed, and
    /// the caller attaches afresh. A link of the other hook (the NIC moved into or out of
    /// `tc_interfaces`) is replaced by a new link of `hook`, attached first: XDP runs
    /// before tc, so every packet meets one of the two programs.
    pub(super) fn replace_on_pinned_link(
        &mut self,
        name: &str,
        path: &Path,
        hook: Hook,
    ) -> anyhow::Result<bool> {
        let pinned = PinnedLink::from_pin(path)
            .with_context(|| format!("opening the pinned link {}", path.display()))?;
        let link = FdLink::from(pinned);
        let kind = link
            .info()
            .and_then(|info| info.link_type())
            .with_context(|| format!("reading the type of {}", path.display()))?;
        if kind != hook.link_type() {
            drop(link);
            return self.move_hook(name, path, hook).map(|()| true);
        }
        let updated = match hook {
            Hook::Xdp => {
                let link = XdpLink::try_from(link)
                    .with_context(|| format!("{} is not an XDP link", path.display()))?;
                self.program_mut().attach_to_link(link).map(LinkId::Xdp)
            }
            Hook::Tc => {
                let link = SchedClassifierLink::try_from(link)
                    .with_context(|| format!("{} is not a TCX link", path.display()))?;
                self.tc_program_mut().attach_to_link(link).map(LinkId::Tc)
            }
        };
        let id = match updated {
            Ok(id) => id,
            Err(e) if links::is_severed(&e) => {
                let kind = hook.link_kind();
                warn!(
                    "{name}'s pinned {kind} link was severed (the NIC was deleted since it \
                     was attached); replacing it with a new link"
                );
                links::unpin(path)?;
                return Ok(false);
            }
            Err(e) => {
                return Err(e).with_context(|| format!("replacing the program on {name}'s link"))
            }
        };
        // The pin keeps the link; dropping our handle must not detach it.
        self.drop_handle(id)?;
        info!(
            "replaced the program on {name}'s pinned {} link",
            hook.link_kind()
        );
        Ok(true)
    }

    /// Moves `name` to `hook`: a new link attached, the old pinned one at `path` removed
    /// (detaching its program), the new one pinned there.
    fn move_hook(&mut self, name: &str, path: &Path, hook: Hook) -> anyhow::Result<()> {
        let link = self.attach_new(name, hook)?;
        links::unpin(path)?;
        self.pin_link(link, path)?;
        info!(
            "moved {name} to {}: its pinned link ran the other hook",
            hook.program()
        );
        Ok(())
    }

    /// Lets go of lbd's handle on a link that a pin keeps (dropping it detaches nothing).
    fn drop_handle(&mut self, id: LinkId) -> anyhow::Result<()> {
        match id {
            LinkId::Xdp(id) => drop(self.program_mut().take_link(id)?),
            LinkId::Tc(id) => drop(self.tc_program_mut().take_link(id)?),
        }
        Ok(())
    }

    /// Detaches an attachment lbd holds itself.
    pub(super) fn detach_held(&mut self, id: LinkId) -> anyhow::Result<()> {
        match id {
            LinkId::Xdp(id) => self.program_mut().detach(id)?,
            LinkId::Tc(id) => self.tc_program_mut().detach(id)?,
        }
        Ok(())
    }

    pub(super) fn attach_one(&mut self, name: &str, mode: XdpMode) -> anyhow::Result<XdpLinkId> {
        self.program_mut()
            .attach(name, mode)
            .with_context(|| format!("attaching XDP ({mode:?}) to {name}"))
    }

    /// Detaches from every NIC.
    pub fn detach_all(&mut self) {
        while let Some((name, link)) = self.attached.pop() {
            match self.detach_held(link) {
                Ok(()) => info!("detached the data path from {name}"),
                Err(e) => warn!("detaching from {name}: {e:#}"),
            }
        }
    }
}

impl Drop for KernelDataplane {
    fn drop(&mut self) {
        self.detach_all();
    }
}
