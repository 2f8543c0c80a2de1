//! Where a tunnelled probe leaves by: the probe tunnel program (see `probe_tunnel`) runs
//! on tc egress, so a probe to a VIP must first be routed out of some device that runs
//! it. A node that holds the VIP on `lo` (announced in a tier) routes it to `lo`; one that
//! does not may have no route to the VIP at all (the probe fails as unreachable before
//! any program sees it). So probes' marks get a routing table of their own that sends
//! everything to `lo` (where the program runs too): a rule `fwmark PROBE_MARK_BASE/
//! PROBE_MARK_MASK lookup` [`PROBE_TABLE`] at priority [`PROBE_RULE_PRIORITY`] and a
//! `default dev lo` route in that table. `lo` never resolves a neighbour, so a probe
//! reaches the program whatever the backend's state; the program sends it on to the
//! backend's NIC.
//!
//! IPv6 takes the same rule, but its route cannot name `lo`: the kernel turns an IPv6
//! route through a loopback device into a reject route (the probe is answered with an
//! ICMPv6 unreachable before any program sees it). So the IPv6 route is `default dev`
//! [`PROBE_DEVICE`], one end of a veth pair lbd makes for it (veth rather than dummy:
//! the one every kernel that runs network namespaces has): not loopback, `NOARP` (no
//! neighbour asked for the VIP), and the program on its egress sends the probe on before
//! it would reach the idle peer. Where IPv6 is off, the IPv6 pair is left out (logged): IPv6
//! probes through a tunnel then fail, IPv4 ones are unaffected.
//!
//! Added when the tunnel is first needed (an existing one is kept: a restarted lbd
//! finds its predecessor's), removed when [`ProbeRoute`] drops.
use anyhow::Context as _;
use lb_common::probe_tunnel::{PROBE_MARK_BASE, PROBE_MARK_MASK};
use rtnetlink::{
    packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST},
    packet_route::{
        link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage},
        route::{RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType},
        rule::{RuleAction, RuleAttribute, RuleMessage},
        AddressFamily, RouteNetlinkMessage,
    },
};

use super::{
    links::ifindex_of,
    vip_addresses::{errno, exchange},
};

/// The routing table of probes' marks ("LB" in ASCII, like the marks).
pub const PROBE_TABLE: u32 = 0x4c42;
/// The rule's priority: before `main` (32766), after `local` (0), so a VIP held on this
/// node's `lo` is still delivered by `local`, to `lo` as well.
pub const PROBE_RULE_PRIORITY: u32 = 0x4c42;
/// The device IPv6 probes are routed to (see the module docs), and its veth peer.
pub const PROBE_DEVICE: &str = "lbprobe6";
const PROBE_DEVICE_PEER: &str = "lbprobe6p";

const CREATE: u16 = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;

/// The rules, routes and device of the module docs, removed on drop.
pub struct ProbeRoute {
    lo: u32,
    /// [`PROBE_DEVICE`]'s index, once its IPv6 route is in.
    device: Option<u32>,
    /// The IPv6 part could not be added (logged once): not tried again.
    ipv6_failed: bool,
}

impl ProbeRoute {
    /// The IPv4 rule and route; the IPv6 ones and their device come with the first IPv6
    /// DSR backend ([`Self::ensure_ipv6`]), so an IPv4-only node gets no veth pair.
    pub fn install() -> anyhow::Result<Self> {
        let lo = ifindex_of("lo")?;
        let route = ProbeRoute {
            lo,
            device: None,
            ipv6_failed: false,
        };
        route.add(AddressFamily::Inet).with_context(|| {
            format!(
                "adding the probes' route (fwmark {PROBE_MARK_BASE:#x}/{PROBE_MARK_MASK:#x} lookup {PROBE_TABLE}, default dev lo)"
            )
        })?;
        Ok(route)
    }

    /// Adds the IPv6 rule, route and [`PROBE_DEVICE`] if they are not in yet; the device
    /// when it was just made (the tunnel program must be attached on its egress). A
    /// failure (IPv6 off on the node) is logged once: IPv6 DSR backends' probes then fail.
    pub fn ensure_ipv6(&mut self) -> Option<&'static str> {
        if self.device.is_some() || self.ipv6_failed {
            return None;
        }
        match self.add_ipv6() {
            Ok(()) => Some(PROBE_DEVICE),
            Err(e) => {
                self.ipv6_failed = true;
                log::warn!(
                    "no IPv6 route for probes through DSR tunnels (IPv6 DSR backends' probes fail): {e:#}"
                );
                None
            }
        }
    }

    fn add(&self, family: AddressFamily) -> anyhow::Result<()> {
        for message in [
            RouteNetlinkMessage::NewRoute(self.route(family)),
            RouteNetlinkMessage::NewRule(rule(family)),
        ] {
            match exchange(message, CREATE) {
                Ok(_) => {}
                Err(e) if errno(&e) == Some(libc::EEXIST) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn add_ipv6(&mut self) -> anyhow::Result<()> {
        let end = |name: &str, flags: LinkFlags| {
            let mut link = LinkMessage::default();
            link.header.flags = flags;
            link.header.change_mask = flags;
            link.attributes = vec![LinkAttribute::IfName(name.into())];
            link
        };
        let up = LinkFlags::Up | LinkFlags::Noarp;
        // The peer is brought up once the pair exists: a veth end opened before its peer
        // is linked fails (ENOTCONN).
        let mut link = end(PROBE_DEVICE, up);
        link.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(end(
                PROBE_DEVICE_PEER,
                LinkFlags::Noarp,
            )))),
        ]));
        match exchange(RouteNetlinkMessage::NewLink(link), CREATE) {
            Ok(_) => {}
            // A predecessor's, kept as its routes are.
            Err(e) if errno(&e) == Some(libc::EEXIST) => {}
            Err(e) => return Err(e).context(format!("making the veth pair {PROBE_DEVICE}")),
        }
        self.device = Some(ifindex_of(PROBE_DEVICE)?);
        let mut peer = end(PROBE_DEVICE_PEER, up);
        peer.header.index = ifindex_of(PROBE_DEVICE_PEER)?;
        if let Err(e) = exchange(
            RouteNetlinkMessage::SetLink(peer),
            NLM_F_REQUEST | NLM_F_ACK,
        ) {
            self.remove_device();
            return Err(e).context(format!("bringing {PROBE_DEVICE_PEER} up"));
        }
        if let Err(e) = self.add(AddressFamily::Inet6) {
            self.remove_device();
            return Err(e).context(format!(
                "adding the IPv6 probes' route (fwmark {PROBE_MARK_BASE:#x}/{PROBE_MARK_MASK:#x} lookup {PROBE_TABLE}, default dev {PROBE_DEVICE})"
            ));
        }
        Ok(())
    }

    fn remove_device(&mut self) {
        let Some(index) = self.device.take() else {
            return;
        };
        let mut link = LinkMessage::default();
        link.header.index = index;
        if let Err(e) = exchange(
            RouteNetlinkMessage::DelLink(link),
            NLM_F_REQUEST | NLM_F_ACK,
        ) {
            log::warn!("removing {PROBE_DEVICE}: {e:#}");
        }
    }

    fn route(&self, family: AddressFamily) -> RouteMessage {
        let mut m = RouteMessage::default();
        m.header = RouteHeader {
            address_family: family,
            table: RouteHeader::RT_TABLE_UNSPEC,
            protocol: RouteProtocol::Static,
            scope: RouteScope::Link,
            kind: RouteType::Unicast,
            ..RouteHeader::default()
        };
        let device = match family {
            AddressFamily::Inet6 => self.device.unwrap_or(self.lo),
            _ => self.lo,
        };
        m.attributes = vec![
            RouteAttribute::Table(PROBE_TABLE),
            RouteAttribute::Oif(device),
        ];
        m
    }
}

fn rule(family: AddressFamily) -> RuleMessage {
    let mut m = RuleMessage::default();
    m.header.family = family;
    m.header.action = RuleAction::ToTable;
    m.attributes = vec![
        RuleAttribute::Priority(PROBE_RULE_PRIORITY),
        RuleAttribute::FwMark(PROBE_MARK_BASE),
        RuleAttribute::FwMask(PROBE_MARK_MASK),
        RuleAttribute::Table(PROBE_TABLE),
    ];
    m
}

impl Drop for ProbeRoute {
    fn drop(&mut self) {
        let remove = NLM_F_REQUEST | NLM_F_ACK;
        let families = match self.device {
            Some(_) => &[AddressFamily::Inet, AddressFamily::Inet6][..],
            None => &[AddressFamily::Inet][..],
        };
        for family in families {
            for message in [
                RouteNetlinkMessage::DelRule(rule(*family)),
                RouteNetlinkMessage::DelRoute(self.route(*family)),
            ] {
                if let Err(e) = exchange(message, remove) {
                    log::warn!("removing the probes' route: {e:#}");
                }
            }
        }
        // Its IPv6 route and its peer go with it.
        self.remove_device();
    }
}

/// Whether the kernel accepts a packet with a local source address arriving on NIC
/// `ifindex` (`accept_local` of that NIC or of `all`). A tunnelled probe is answered from
/// the VIP, which is local on a node that announces it: without this, the answer is
/// dropped as a martian.
pub fn accepts_local(ifindex: u32) -> anyhow::Result<bool> {
    let mut name = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `name` has the IF_NAMESIZE bytes if_indextoname may write.
    let found = unsafe { libc::if_indextoname(ifindex, name.as_mut_ptr()) };
    anyhow::ensure!(!found.is_null(), "no interface has index {ifindex}");
    // SAFETY: if_indextoname wrote a NUL-terminated name into `name`.
    let name = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) }
        .to_str()
        .context("an interface name that is not UTF-8")?
        .to_string();
    let read = |conf: &str| -> anyhow::Result<bool> {
        let path = format!("/proc/sys/net/ipv4/conf/{conf}/accept_local");
        let value = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        Ok(value.trim() == "1")
    };
    Ok(read("all")? || read(&name)?)
}
