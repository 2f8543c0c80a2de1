//! [`VipAddresses`] over rtnetlink: a VIP is announced by adding its /32 (IPv6: /128)
//! to `lo` with global scope (so BIRD's `protocol direct` or FRR's `redistribute
//! connected` exports it) and withdrawn by removing it.
//!
//! lbd tells its own addresses from the operator's by their label, [`LABEL`]: it lists
//! only addresses carrying it, and removes with the label in the request, which the
//! kernel matches (`inet_rtm_deladdr` skips an address whose label differs), so an
//! operator's own /32 on `lo` (labelled `lo`) is never removed, even for the same VIP.
//! IPv6 addresses have no label: lbd marks its own with the address protocol
//! [`PROTO`] (`IFA_PROTO`, Linux 6.1), lists only those, and removes one only after
//! finding it so marked (`inet6_rtm_deladdr` matches the address alone). They are added
//! without duplicate address detection (`IFA_F_NODAD`; the kernel skips it on a loopback
//! device anyway): every node of a tier holds the same VIP by design, and a tentative
//! address is neither usable nor exported.
//!
//! Each /32 carries a lifetime (`announce.lifetime`, the kernel's `valid_lft`) that
//! lbd renews every second: the kernel removes the address itself when it lapses (the
//! `check_lifetime` worker in net/ipv4/devinet.c), so a node whose lbd died or hung
//! stops attracting flows within the lifetime, with no process of its own needed.
//!
//! Blocking calls, like [`super::link_watch::xdp_program_ids`]: the kernel handles an
//! address request, and queues each part of a dump, while the request is sent or the
//! previous part read, so a reply is always there to read; the socket is non-blocking
//! anyway, so a missing reply is an error rather than a hang.
use std::{net::IpAddr, time::Duration};

use anyhow::{bail, Context as _};
use rtnetlink::{
    packet_core::{
        NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
        NLM_F_REPLACE, NLM_F_REQUEST,
    },
    packet_route::{
        address::{
            AddressAttribute, AddressFlags, AddressMessage, AddressProtocol, AddressScope,
            CacheInfo,
        },
        AddressFamily, RouteNetlinkMessage,
    },
    sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr},
};

use super::links::ifindex_of;
use crate::dataplane::VipAddresses;

/// The label of the addresses lbd adds (at most 15 bytes, and starting with the device's
/// name, as `ip address` expects of a label).
pub const LABEL: &str = "lo:lbd";

/// The address protocol (`IFA_PROTO`) that marks lbd's IPv6 addresses: a value of no
/// kernel meaning (the kernel's own are 1 to 3), "l" for lbd.
pub const PROTO: u8 = b'l';

/// The device VIPs are held on.
const DEVICE: &str = "lo";

/// The kernel's "forever" lifetime (`INFINITY_LIFE_TIME`).
const FOREVER: u32 = u32::MAX;

/// The VIPs lbd holds on `lo` in this network namespace.
pub struct LoopbackVips {
    ifindex: u32,
    lifetime: Duration,
}

impl LoopbackVips {
    pub fn open() -> anyhow::Result<Self> {
        Ok(Self {
            ifindex: ifindex_of(DEVICE)?,
            lifetime: Duration::ZERO,
        })
    }

    /// The message with the lifetime attribute (`IFA_CACHEINFO`).
    fn with_lifetime(&self, vip: IpAddr) -> AddressMessage {
        let seconds = match self.lifetime.as_secs() {
            0 => FOREVER,
            s => u32::try_from(s).unwrap_or(FOREVER - 1),
        };
        let mut info = CacheInfo::default();
        info.ifa_valid = seconds;
        info.ifa_preferred = seconds;
        let mut message = self.message(vip);
        message.attributes.push(AddressAttribute::CacheInfo(info));
        message
    }

    fn message(&self, vip: IpAddr) -> AddressMessage {
        let mut message = AddressMessage::default();
        message.header.scope = AddressScope::Universe;
        message.header.index = self.ifindex;
        match vip {
            IpAddr::V4(_) => {
                message.header.family = AddressFamily::Inet;
                message.header.prefix_len = 32;
                message.attributes = vec![
                    AddressAttribute::Local(vip),
                    AddressAttribute::Address(vip),
                    AddressAttribute::Label(LABEL.into()),
                ];
            }
            IpAddr::V6(_) => {
                message.header.family = AddressFamily::Inet6;
                message.header.prefix_len = 128;
                message.attributes = vec![
                    AddressAttribute::Address(vip),
                    AddressAttribute::Flags(AddressFlags::Nodad),
                    AddressAttribute::Protocol(AddressProtocol::Other(PROTO)),
                ];
            }
        }
        message
    }

    /// lbd's addresses of one family on `lo`.
    fn listed(&self, family: AddressFamily) -> anyhow::Result<Vec<IpAddr>> {
        let mut request = AddressMessage::default();
        request.header.family = family;
        let replies = exchange(
            RouteNetlinkMessage::GetAddress(request),
            NLM_F_REQUEST | NLM_F_DUMP,
        )
        .context("listing the addresses on lo (RTM_GETADDR)")?;
        let mut vips = Vec::new();
        for reply in replies {
            let RouteNetlinkMessage::NewAddress(a) = reply else {
                continue;
            };
            let mark = |attr: &AddressAttribute| match attr {
                AddressAttribute::Label(l) => l == LABEL && a.header.family == AddressFamily::Inet,
                AddressAttribute::Protocol(AddressProtocol::Other(p)) => {
                    *p == PROTO && a.header.family == AddressFamily::Inet6
                }
                _ => false,
            };
            let host = match a.header.family {
                AddressFamily::Inet => 32,
                _ => 128,
            };
            let ours = a.header.index == self.ifindex
                && a.header.prefix_len == host
                && a.attributes.iter().any(mark);
            // IPv4 names the address in IFA_LOCAL, IPv6 in IFA_ADDRESS.
            let address = a.attributes.iter().find_map(|attr| match attr {
                AddressAttribute::Local(ip @ IpAddr::V4(_)) => Some(*ip),
                AddressAttribute::Address(ip @ IpAddr::V6(_)) => Some(*ip),
                _ => None,
            });
            if let (true, Some(ip)) = (ours, address) {
                vips.push(ip);
            }
        }
        Ok(vips)
    }
}

impl VipAddresses for LoopbackVips {
    fn announced(&self) -> anyhow::Result<Vec<IpAddr>> {
        let mut vips = self.listed(AddressFamily::Inet)?;
        // A kernel without IPv6 has no IPv6 addresses to list.
        match self.listed(AddressFamily::Inet6) {
            Ok(v6) => vips.extend(v6),
            Err(e) if errno(&e) == Some(libc::EAFNOSUPPORT) => {}
            Err(e) => return Err(e),
        }
        Ok(vips)
    }

    fn announce(&mut self, vip: IpAddr) -> anyhow::Result<()> {
        let add = RouteNetlinkMessage::NewAddress(self.with_lifetime(vip));
        match exchange(add, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL) {
            Ok(_) => Ok(()),
            Err(e) if errno(&e) == Some(libc::EEXIST) => {
                if self.announced()?.contains(&vip) {
                    Ok(())
                } else {
                    bail!(
                        "{vip} is already on lo without lbd's mark (label {LABEL}, IPv6: \
                         protocol {PROTO}): the operator's own address, which lbd leaves alone \
                         (the routing daemon exports it whatever lbd decides)"
                    )
                }
            }
            Err(e) => Err(e).with_context(|| format!("adding {vip} to lo (RTM_NEWADDR)")),
        }
    }

    fn withdraw(&mut self, vip: IpAddr) -> anyhow::Result<()> {
        // The kernel deletes an IPv6 address whatever its protocol: only one lbd added.
        if vip.is_ipv6() && !self.listed(AddressFamily::Inet6)?.contains(&vip) {
            return Ok(());
        }
        let delete = RouteNetlinkMessage::DelAddress(self.message(vip));
        match exchange(delete, NLM_F_REQUEST | NLM_F_ACK) {
            Ok(_) => Ok(()),
            // Not there with lbd's label: gone already, or the operator's.
            Err(e) if errno(&e) == Some(libc::EADDRNOTAVAIL) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing {vip} from lo (RTM_DELADDR)")),
        }
    }

    fn set_lifetime(&mut self, lifetime: Duration) {
        self.lifetime = lifetime;
    }

    fn renew(&mut self, vip: IpAddr) -> anyhow::Result<()> {
        // NLM_F_REPLACE on an existing address sets only its lifetimes (and flags).
        let renew = RouteNetlinkMessage::NewAddress(self.with_lifetime(vip));
        exchange(renew, NLM_F_REQUEST | NLM_F_ACK | NLM_F_REPLACE)
            .map(drop)
            .with_context(|| format!("renewing the lifetime of {vip} on lo (RTM_NEWADDR)"))
    }
}

/// Withdraws every VIP lbd holds on `lo` (for `lbd --detach`); returns them.
pub fn withdraw_all() -> anyhow::Result<Vec<IpAddr>> {
    let mut vips = LoopbackVips::open()?;
    let held = vips.announced()?;
    for vip in &held {
        vips.withdraw(*vip)?;
    }
    Ok(held)
}

pub(crate) fn errno(e: &anyhow::Error) -> Option<i32> {
    e.downcast_ref::<std::io::Error>()
        .and_then(|e| e.raw_os_error())
}

/// Sends one request and reads its replies up to the ACK (or the end of a dump); a
/// NACK is returned as the `io::Error` of its errno.
pub(crate) fn exchange(
    message: RouteNetlinkMessage,
    flags: u16,
) -> anyhow::Result<Vec<RouteNetlinkMessage>> {
    let socket = Socket::new(NETLINK_ROUTE).context("opening an rtnetlink socket")?;
    let mut request = NetlinkMessage::from(message);
    request.header.flags = flags;
    request.header.sequence_number = 1;
    request.finalize();
    let mut buf = vec![0; request.buffer_len()];
    request.serialize(&mut buf);
    socket
        .send_to(&buf, &SocketAddr::new(0, 0), 0)
        .context("sending the request")?;
    socket
        .set_non_blocking(true)
        .context("making the rtnetlink socket non-blocking")?;
    let mut replies = Vec::new();
    loop {
        let (datagram, _) = socket.recv_from_full().context("reading the reply")?;
        let mut at = 0;
        while at < datagram.len() {
            let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&datagram[at..])
                .context("parsing the reply")?;
            let length = reply.header.length as usize;
            if length == 0 {
                bail!("a reply of length 0");
            }
            at += length.next_multiple_of(4);
            match reply.payload {
                NetlinkPayload::InnerMessage(m) => replies.push(m),
                NetlinkPayload::Done(_) => return Ok(replies),
                NetlinkPayload::Error(e) if e.code.is_none() => return Ok(replies),
                NetlinkPayload::Error(e) => return Err(e.to_io().into()),
                _ => {}
            }
        }
    }
}
