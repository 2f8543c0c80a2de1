//! Which NICs the data path is attached to, and re-attaching it to one that was deleted
//! and created again. An XDP or TCX link belongs to one network device: when it goes,
//! the kernel severs the link (it stays pinned, attached to nothing, and
//! BPF_LINK_UPDATE on it fails with ENOLINK), and a device created later under the
//! same name, with a new ifindex, has no program at all until lbd attaches a new link.
//! A NIC that stays can lose the program too (its pinned link removed, or detached or
//! replaced by another tool): each check asks the kernel which programs the NIC runs at
//! its hook and
//! attaches a new link when it is not lbd's. Removing the pin directory itself is how
//! `lbd --detach --force` takes this node out: lbd then stays detached, not ready,
//! until it is restarted.
use std::{ffi::CString, path::Path};

use anyhow::{bail, Context as _};
use aya::programs::{links::PinnedLink, tc::TcAttachType, ProgramError, SchedClassifier};
use log::{info, warn};

use super::{hook::Hook, KernelDataplane};
use crate::{
    dataplane::LinkChange, kernel::link_watch, kernel::pins::PinDir, model::config::XdpAttachMode,
};

/// The configured NICs and the ifindex each is attached at (None: not attached, the NIC
/// is missing).
#[derive(Debug, Default)]
pub(super) struct Links {
    interfaces: Vec<(String, Option<u32>)>,
    /// The NICs at tc ingress; the others run XDP.
    tc: Vec<String>,
    mode: XdpAttachMode,
    pins: Option<PinDir>,
    /// (NIC, ifindex) whose attach failed: retried every check, reported once.
    failing: Vec<(String, u32)>,
    /// The pin directory was removed under lbd: nothing is attached until a restart.
    abandoned: bool,
    /// NICs whose XDP programs the kernel would not tell: reported once until it does.
    unverified: Vec<String>,
}

impl Links {
    pub(super) fn new(
        interfaces: &[String],
        tc: &[String],
        mode: XdpAttachMode,
        pins: Option<&PinDir>,
    ) -> Self {
        Self {
            interfaces: interfaces.iter().map(|n| (n.clone(), None)).collect(),
            tc: tc.to_vec(),
            mode,
            pins: pins.cloned(),
            failing: Vec::new(),
            abandoned: false,
            unverified: Vec::new(),
        }
    }

    /// The hook NIC `name` runs the data path at.
    pub(super) fn hook(&self, name: &str) -> Hook {
        if self.tc.iter().any(|n| n == name) {
            Hook::Tc
        } else {
            Hook::Xdp
        }
    }

    pub(super) fn mode(&self) -> XdpAttachMode {
        self.mode
    }

    pub(super) fn set(&mut self, name: &str, ifindex: Option<u32>) {
        if let Some(entry) = self.interfaces.iter_mut().find(|(n, _)| n == name) {
            entry.1 = ifindex;
        }
    }
}

/// BPF_LINK_UPDATE on a link whose device is gone ("Link has been severed"), XDP or TCX.
pub(super) fn is_severed(e: &ProgramError) -> bool {
    matches!(e, ProgramError::SyscallError(s) if s.io_error.raw_os_error() == Some(libc::ENOLINK))
}

/// Removes a pinned link (a severed one detaches nothing).
pub(super) fn unpin(path: &Path) -> anyhow::Result<()> {
    match PinnedLink::from_pin(path) {
        Ok(link) => drop(
            link.unpin()
                .with_context(|| format!("unpinning {}", path.display()))?,
        ),
        Err(_) => {
            std::fs::remove_file(path).with_context(|| format!("removing {}", path.display()))?
        }
    }
    Ok(())
}

impl KernelDataplane {
    /// Attaches a new link of `hook` to `name` and pins it (or keeps it, unpinned).
    pub(super) fn attach_fresh(
        &mut self,
        name: &str,
        hook: Hook,
        pins: Option<&PinDir>,
    ) -> anyhow::Result<()> {
        let link = self.attach_new(name, hook)?;
        match pins {
            Some(pins) => self.pin_link(link, &pins.link_path(name)),
            None => {
                self.attached.push((name.to_string(), link));
                Ok(())
            }
        }
    }

    /// Compares each configured NIC's current ifindex with the one the program is
    /// attached at, and attaches to a NIC that is new (deleted and created again, or
    /// missing at the last check) or no longer runs this program. Cheap when nothing
    /// changed: one `if_nametoindex` and one RTM_GETLINK per NIC. Returns what changed.
    pub(super) fn ensure_attached(&mut self) -> Vec<LinkChange> {
        let mut changes = Vec::new();
        if self.links.abandoned {
            return changes;
        }
        if let Some(pins) = self.links.pins.clone() {
            if !pins.root().exists() {
                // Removing the directory unpinned every link, which detached it; an
                // operator did that to take traffic off this node, so lbd leaves it so.
                self.links.abandoned = true;
                let interfaces: Vec<String> = self
                    .links
                    .interfaces
                    .iter()
                    .map(|(n, _)| n.clone())
                    .collect();
                for name in &interfaces {
                    self.forget_unpinned(name);
                    self.links.set(name, None);
                }
                changes.push(LinkChange::Abandoned {
                    interfaces,
                    pin_dir: pins.root().to_path_buf(),
                });
                return changes;
            }
        }
        let current: Vec<(String, Option<u32>, Option<u32>)> = self
            .links
            .interfaces
            .iter()
            .map(|(name, was)| (name.clone(), *was, ifindex_of(name).ok()))
            .collect();
        for (name, was, now) in current {
            match (was, now) {
                (Some(ifindex), Some(now)) if ifindex == now => {
                    if let Some(found) = self.displaced(&name, ifindex) {
                        changes.push(LinkChange::Displaced {
                            interface: name.clone(),
                            ifindex,
                            program: self.links.hook(&name).program(),
                            found,
                        });
                        self.attach_again(name, ifindex, &mut changes);
                    }
                }
                (was, now) if was == now => {}
                (Some(ifindex), None) => {
                    self.forget_unpinned(&name);
                    self.links.set(&name, None);
                    changes.push(LinkChange::Lost {
                        interface: name,
                        ifindex,
                    });
                }
                (_, Some(ifindex)) => self.attach_again(name, ifindex, &mut changes),
                (None, None) => {}
            }
        }
        changes
    }

    /// The programs at `name`'s hook when this lbd's is not among them. None when it is,
    /// or when the kernel could not say (logged once per NIC until it can again; a NIC
    /// going away is seen by the next check).
    fn displaced(&mut self, name: &str, ifindex: u32) -> Option<Vec<u32>> {
        let hook = self.links.hook(name);
        let found = match hook {
            Hook::Xdp => self
                .program()
                .info()
                .context("reading lb_xdp's program id")
                .and_then(|info| Ok((info.id(), link_watch::xdp_program_ids(ifindex)?))),
            Hook::Tc => self
                .tc_program()
                .info()
                .context("reading lb_tc's program id")
                .and_then(|info| Ok((info.id(), tcx_program_ids(name)?))),
        };
        match found {
            Ok((ours, found)) => {
                self.links.unverified.retain(|n| n != name);
                (!found.contains(&ours)).then_some(found)
            }
            Err(e) => {
                if !self.links.unverified.iter().any(|n| n == name) {
                    self.links.unverified.push(name.to_string());
                    let program = hook.program();
                    warn!("cannot check that {program} is still attached to {name}: {e:#}");
                }
                None
            }
        }
    }

    fn attach_again(&mut self, name: String, ifindex: u32, changes: &mut Vec<LinkChange>) {
        match self.reattach(&name, ifindex) {
            Ok(()) => {
                self.links.failing.retain(|(n, _)| *n != name);
                self.links.set(&name, Some(ifindex));
                changes.push(LinkChange::Attached {
                    interface: name,
                    ifindex,
                });
            }
            Err(error) => {
                self.links.set(&name, None);
                let failing = (name.clone(), ifindex);
                if !self.links.failing.contains(&failing) {
                    self.links.failing.push(failing);
                    changes.push(LinkChange::Failed {
                        interface: name,
                        error,
                    });
                }
            }
        }
    }

    fn reattach(&mut self, name: &str, ifindex: u32) -> anyhow::Result<()> {
        if self.links.hook(name) == Hook::Xdp {
            self.add_egress(ifindex)?;
        }
        self.install_tail_called()?;
        let pins = self.links.pins.clone();
        if let Some(pins) = &pins {
            let path = pins.link_path(name);
            if path.exists() {
                // The link of the NIC's previous incarnation, severed with it.
                unpin(&path)?;
            }
        }
        self.forget_unpinned(name);
        let hook = self.links.hook(name);
        self.attach_fresh(name, hook, pins.as_ref())?;
        // Cached next hops may name the old ifindex: look every route up again.
        self.bump_nexthop_generation()?;
        info!("attached {} to {name} (ifindex {ifindex})", hook.program());
        Ok(())
    }

    /// Drops our handle on an unpinned link of `name`, whose device is gone.
    fn forget_unpinned(&mut self, name: &str) {
        while let Some(at) = self.attached.iter().position(|(n, _)| n == name) {
            let (_, id) = self.attached.remove(at);
            // The device is gone: detaching finds nothing to detach.
            let _ = self.detach_held(id);
        }
    }

    /// Each configured NIC and whether the program is attached to it now.
    pub(super) fn interface_states(&self) -> Vec<(String, bool)> {
        self.links
            .interfaces
            .iter()
            .map(|(name, ifindex)| (name.clone(), ifindex.is_some()))
            .collect()
    }
}

/// The ids of the programs at NIC `name`'s tc ingress (TCX).
fn tcx_program_ids(name: &str) -> anyhow::Result<Vec<u32>> {
    let (_, programs) = SchedClassifier::query_tcx(name, TcAttachType::Ingress)
        .with_context(|| format!("asking for {name}'s tc ingress programs"))?;
    Ok(programs.iter().map(|p| p.id()).collect())
}

pub fn ifindex_of(name: &str) -> anyhow::Result<u32> {
    let c = CString::new(name).with_context(|| format!("interface name {name:?}"))?;
    // SAFETY: a valid NUL-terminated string; the call only reads it.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        bail!("interface {name} does not exist in this network namespace");
    }
    Ok(index)
}
