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
//! Added when the tunnel is first needed (an existing one is kept: a restarted lbd
//! finds its predecessor's), removed when [`ProbeRoute`] drops.
use anyhow::Context as _;
use lb_common::probe_tunnel::{PROBE_MARK_BASE, PROBE_MARK_MASK};
use rtnetlink::{
    packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST},
    packet_route::{
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

/// The rule and route of the module docs, removed on drop.
pub struct ProbeRoute {
    lo: u32,
}

impl ProbeRoute {
    pub fn install() -> anyhow::Result<Self> {
        let lo = ifindex_of("lo")?;
        let route = ProbeRoute { lo };
        let create = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
        for message in [
            RouteNetlinkMessage::NewRoute(route.route()),
            RouteNetlinkMessage::NewRule(rule()),
        ] {
            match exchange(message, create) {
                Ok(_) => {}
                Err(e) if errno(&e) == Some(libc::EEXIST) => {}
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!(
                            "adding the probes' route (fwmark {PROBE_MARK_BASE:#x}/{PROBE_MARK_MASK:#x} lookup {PROBE_TABLE}, default dev lo)"
                        )
                    })
                }
            }
        }
        Ok(route)
    }

    fn route(&self) -> RouteMessage {
        let mut m = RouteMessage::default();
        m.header = RouteHeader {
            address_family: AddressFamily::Inet,
            table: RouteHeader::RT_TABLE_UNSPEC,
            protocol: RouteProtocol::Static,
            scope: RouteScope::Link,
            kind: RouteType::Unicast,
            ..RouteHeader::default()
        };
        m.attributes = vec![
            RouteAttribute::Table(PROBE_TABLE),
            RouteAttribute::Oif(self.lo),
        ];
        m
    }
}

fn rule() -> RuleMessage {
    let mut m = RuleMessage::default();
    m.header.family = AddressFamily::Inet;
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
        for message in [
            RouteNetlinkMessage::DelRule(rule()),
            RouteNetlinkMessage::DelRoute(self.route()),
        ] {
            if let Err(e) = exchange(message, remove) {
                log::warn!("removing the probes' route: {e:#}");
            }
        }
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
