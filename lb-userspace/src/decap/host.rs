//! What `lb-decap` changes on the host besides the program, each undone by its inverse:
//! the VIPs on `lo` (RTM_NEWADDR with the label [`LABEL`], removed by that label, as lbd
//! does with its own), two ARP sysctls, and `advmss` on the routes to the clients
//! (RTM_NEWROUTE with NLM_F_REPLACE on the route as the kernel dumped it, metrics
//! changed).
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
};

use anyhow::{bail, Context as _};
use rtnetlink::{
    packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST},
    packet_route::{
        address::{AddressAttribute, AddressMessage, AddressScope},
        route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteMetric},
        AddressFamily, RouteNetlinkMessage,
    },
};

use super::settings::IpPrefix;
use crate::kernel::{
    ifindex_of,
    vip_addresses::{errno, exchange},
};

/// The label of the VIPs `lb-decap` adds to `lo` (lbd's are `lo:lbd`).
pub const LABEL: &str = "lo:decap";

fn vip_message(ifindex: u32, vip: IpAddr) -> AddressMessage {
    let mut message = AddressMessage::default();
    message.header.index = ifindex;
    match vip {
        IpAddr::V4(_) => {
            message.header.family = AddressFamily::Inet;
            message.header.prefix_len = 32;
            // Host scope: the VIP is this host's own address, never a source it picks
            // for other destinations.
            message.header.scope = AddressScope::Host;
            message.attributes = vec![
                AddressAttribute::Local(vip),
                AddressAttribute::Address(vip),
                AddressAttribute::Label(LABEL.into()),
            ];
        }
        IpAddr::V6(_) => {
            // IPv6 addresses carry no label: `lb-decap` removes only those its state
            // file says it added. On `lo` the kernel skips duplicate address detection.
            message.header.family = AddressFamily::Inet6;
            message.header.prefix_len = 128;
            message.header.scope = AddressScope::Host;
            message.attributes = vec![AddressAttribute::Address(vip)];
        }
    }
    message
}

/// The VIP as a host prefix, for messages.
fn host_prefix(vip: IpAddr) -> String {
    match vip {
        IpAddr::V4(_) => format!("{vip}/32"),
        IpAddr::V6(_) => format!("{vip}/128"),
    }
}

/// Adds `vip`/32 (an IPv6 one /128) to `lo`. False when it was there already (the
/// operator's): it is then left alone, and not removed on detach.
pub fn add_vip(vip: IpAddr) -> anyhow::Result<bool> {
    let lo = ifindex_of("lo")?;
    let add = RouteNetlinkMessage::NewAddress(vip_message(lo, vip));
    match exchange(add, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL) {
        Ok(_) => Ok(true),
        Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(false),
        Err(e) => {
            Err(e).with_context(|| format!("adding {} to lo (RTM_NEWADDR)", host_prefix(vip)))
        }
    }
}

/// Removes `vip`/32 from `lo` if it carries [`LABEL`]; an IPv6 `vip`/128 (no label:
/// the caller removes only what it added).
pub fn remove_vip(vip: IpAddr) -> anyhow::Result<()> {
    let lo = ifindex_of("lo")?;
    let delete = RouteNetlinkMessage::DelAddress(vip_message(lo, vip));
    match exchange(delete, NLM_F_REQUEST | NLM_F_ACK) {
        Ok(_) => Ok(()),
        Err(e) if errno(&e) == Some(libc::EADDRNOTAVAIL) => Ok(()),
        Err(e) => {
            Err(e).with_context(|| format!("removing {} from lo (RTM_DELADDR)", host_prefix(vip)))
        }
    }
}

fn sysctl_path(name: &str) -> PathBuf {
    PathBuf::from("/proc/sys").join(name.replace('.', "/"))
}

pub fn read_sysctl(name: &str) -> anyhow::Result<String> {
    let path = sysctl_path(name);
    Ok(std::fs::read_to_string(&path)
        .with_context(|| format!("reading {}", path.display()))?
        .trim()
        .to_string())
}

pub fn write_sysctl(name: &str, value: &str) -> anyhow::Result<()> {
    let path = sysctl_path(name);
    std::fs::write(&path, value).with_context(|| format!("writing {value} to {}", path.display()))
}

/// The main table's route to exactly `prefix` (the first, if several metrics), in the
/// prefix's family.
fn route_to(prefix: IpPrefix) -> anyhow::Result<RouteMessage> {
    let (family, addr, len) = match prefix {
        IpPrefix::V4(p) => (AddressFamily::Inet, IpAddr::V4(p.addr), p.len),
        IpPrefix::V6 { addr, len } => (AddressFamily::Inet6, IpAddr::V6(addr), len),
    };
    let mut request = RouteMessage::default();
    request.header.address_family = family;
    let replies = exchange(
        RouteNetlinkMessage::GetRoute(request),
        NLM_F_REQUEST | NLM_F_DUMP,
    )
    .context("listing the routes (RTM_GETROUTE)")?;
    for reply in replies {
        let RouteNetlinkMessage::NewRoute(route) = reply else {
            continue;
        };
        let table = route
            .attributes
            .iter()
            .find_map(|a| match a {
                RouteAttribute::Table(t) => Some(*t),
                _ => None,
            })
            .unwrap_or(u32::from(route.header.table));
        // A default route has no destination attribute.
        let dst = route
            .attributes
            .iter()
            .find_map(|a| match a {
                RouteAttribute::Destination(RouteAddress::Inet(ip)) => Some(IpAddr::V4(*ip)),
                RouteAttribute::Destination(RouteAddress::Inet6(ip)) => Some(IpAddr::V6(*ip)),
                _ => None,
            })
            .unwrap_or(match family {
                AddressFamily::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            });
        if table == u32::from(RouteHeader::RT_TABLE_MAIN)
            && route.header.destination_prefix_length == len
            && dst == addr
        {
            return Ok(route);
        }
    }
    bail!(
        "no route to {prefix} in the main table, so no MSS clamp can be set on it (client_routes)"
    )
}

/// The route's `advmss`, if it has one.
pub fn advmss(prefix: IpPrefix) -> anyhow::Result<Option<u32>> {
    let route = route_to(prefix)?;
    Ok(route.attributes.iter().find_map(|a| match a {
        RouteAttribute::Metrics(m) => m.iter().find_map(|m| match m {
            RouteMetric::Advmss(v) => Some(*v),
            _ => None,
        }),
        _ => None,
    }))
}

/// Sets (or with `None` removes) the `advmss` of the route to `prefix`, keeping the rest
/// of the route as the kernel reported it.
pub fn set_advmss(prefix: IpPrefix, mss: Option<u32>) -> anyhow::Result<()> {
    let mut route = route_to(prefix)?;
    let mut metrics: Vec<RouteMetric> = Vec::new();
    route.attributes.retain(|a| match a {
        RouteAttribute::Metrics(m) => {
            metrics = m.clone();
            false
        }
        // Read-only attributes of a dump.
        RouteAttribute::CacheInfo(_) => false,
        _ => true,
    });
    metrics.retain(|m| !matches!(m, RouteMetric::Advmss(_)));
    metrics.extend(mss.map(RouteMetric::Advmss));
    if !metrics.is_empty() {
        route.attributes.push(RouteAttribute::Metrics(metrics));
    }
    exchange(
        RouteNetlinkMessage::NewRoute(route),
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_REPLACE,
    )
    .map(drop)
    .with_context(|| {
        format!(
            "setting advmss {} on the route to {prefix} (RTM_NEWROUTE)",
            mss.map_or("(none)".into(), |m| m.to_string())
        )
    })
}
