//! Which NICs the program is attached to, and re-attaching it to one that was deleted
//! and created again. An XDP link belongs to one network device: when the device goes,
//! the kernel severs the link (it stays pinned, attached to nothing, and
//! BPF_LINK_UPDATE on it fails with ENOLINK), and a device created later under the
//! same name, with a new ifindex, has no XDP at all until lbd attaches a new link.
use std::path::Path;

use anyhow::Context as _;
use aya::programs::{links::PinnedLink, ProgramError};
use log::info;

use super::{ifindex_of, KernelDataplane};
use crate::{config::XdpAttachMode, pins::PinDir};

/// The configured NICs and the ifindex each is attached at (None: not attached, the NIC
/// is missing).
#[derive(Debug, Default)]
pub(super) struct Links {
    interfaces: Vec<(String, Option<u32>)>,
    mode: XdpAttachMode,
    pins: Option<PinDir>,
    /// (NIC, ifindex) whose attach failed: retried every check, reported once.
    failing: Vec<(String, u32)>,
}

impl Links {
    pub(super) fn new(interfaces: &[String], mode: XdpAttachMode, pins: Option<&PinDir>) -> Self {
        Self {
            interfaces: interfaces.iter().map(|n| (n.clone(), None)).collect(),
            mode,
            pins: pins.cloned(),
            failing: Vec::new(),
        }
    }

    pub(super) fn set(&mut self, name: &str, ifindex: Option<u32>) {
        if let Some(entry) = self.interfaces.iter_mut().find(|(n, _)| n == name) {
            entry.1 = ifindex;
        }
    }
}

/// A change [`KernelDataplane::ensure_attached`] found or made.
#[derive(Debug)]
pub enum LinkChange {
    /// The NIC is gone (its link severed); nothing to attach to until it is back.
    Lost { interface: String, ifindex: u32 },
    /// The NIC (re)appeared and the program is attached to it again.
    Attached { interface: String, ifindex: u32 },
    /// The NIC is there, but attaching failed; retried at every check, reported once
    /// per NIC incarnation (ifindex).
    Failed {
        interface: String,
        error: anyhow::Error,
    },
}

/// BPF_LINK_UPDATE on a link whose device is gone ("Link has been severed").
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
    /// Attaches a new link to `name` and pins it (or keeps it, unpinned).
    pub(super) fn attach_fresh(
        &mut self,
        name: &str,
        mode: XdpAttachMode,
        pins: Option<&PinDir>,
    ) -> anyhow::Result<()> {
        let link = self.attach_new(name, mode)?;
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
    /// missing at the last check). Cheap when nothing changed: one `if_nametoindex` per
    /// NIC. Returns what changed.
    pub fn ensure_attached(&mut self) -> Vec<LinkChange> {
        let mut changes = Vec::new();
        let current: Vec<(String, Option<u32>, Option<u32>)> = self
            .links
            .interfaces
            .iter()
            .map(|(name, was)| (name.clone(), *was, ifindex_of(name).ok()))
            .collect();
        for (name, was, now) in current {
            match (was, now) {
                (was, now) if was == now => {}
                (Some(ifindex), None) => {
                    self.forget_unpinned(&name);
                    self.links.set(&name, None);
                    changes.push(LinkChange::Lost {
                        interface: name,
                        ifindex,
                    });
                }
                (_, Some(ifindex)) => match self.reattach(&name, ifindex) {
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
                },
                (None, None) => {}
            }
        }
        changes
    }

    fn reattach(&mut self, name: &str, ifindex: u32) -> anyhow::Result<()> {
        self.add_egress(ifindex)?;
        let pins = self.links.pins.clone();
        if let Some(pins) = &pins {
            let path = pins.link_path(name);
            if path.exists() {
                // The link of the NIC's previous incarnation, severed with it.
                unpin(&path)?;
            }
        }
        self.forget_unpinned(name);
        self.attach_fresh(name, self.links.mode, pins.as_ref())?;
        // Cached next hops may name the old ifindex: look every route up again.
        self.bump_nexthop_generation()?;
        info!("attached lb_xdp to {name} (ifindex {ifindex})");
        Ok(())
    }

    /// Drops our handle on an unpinned link of `name`, whose device is gone.
    fn forget_unpinned(&mut self, name: &str) {
        while let Some(at) = self.attached.iter().position(|(n, _)| n == name) {
            let (_, id) = self.attached.remove(at);
            if let Ok(link) = self.program_mut().take_link(id) {
                drop(link);
            }
        }
    }

    /// Each configured NIC and whether the program is attached to it now.
    pub fn interface_states(&self) -> Vec<(String, bool)> {
        self.links
            .interfaces
            .iter()
            .map(|(name, ifindex)| (name.clone(), ifindex.is_some()))
            .collect()
    }
}
