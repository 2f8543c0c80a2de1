//! The probes' tunnel (`lb_common::probe_tunnel`): the `lb-probe-tunnel` object loaded,
//! attached on tc egress of the NICs a probe to a VIP may leave by (TCX links held by
//! this value: they go with it), and its mark -> backend maps (one per family) written.
use std::net::{IpAddr, Ipv4Addr};

use anyhow::{ensure, Context as _};
use aya::{
    maps::{HashMap, MapData},
    programs::{tc::TcAttachType, SchedClassifier},
    Ebpf,
};
use lb_common::probe_tunnel::{
    ProbeTunnel, ProbeTunnel6, MAP_PROBE_TUNNELS, MAP_PROBE_TUNNELS6, PROGRAM_PROBE_TUNNEL,
};
use rtnetlink::{
    packet_core::{NLM_F_ACK, NLM_F_REQUEST},
    packet_route::{
        route::{RouteAddress, RouteAttribute, RouteMessage},
        AddressFamily, RouteNetlinkMessage,
    },
};

use super::vip_addresses::exchange;

/// The object built from `lb-ebpf/src/probe_tunnel.rs`; empty with `LB_EBPF_STUB=1`.
static PROBE_TUNNEL_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-probe-tunnel"));

pub struct ProbeTunnels {
    ebpf: Ebpf,
}

impl ProbeTunnels {
    pub fn load() -> anyhow::Result<Self> {
        ensure!(
            !PROBE_TUNNEL_OBJECT.is_empty(),
            "this binary was built with LB_EBPF_STUB=1 and carries no probe tunnel program"
        );
        let mut ebpf =
            Ebpf::load(PROBE_TUNNEL_OBJECT).context("loading the probe tunnel object")?;
        let program: &mut SchedClassifier = ebpf
            .program_mut(PROGRAM_PROBE_TUNNEL)
            .context("the object has no lb_probe_tunnel")?
            .try_into()?;
        program
            .load()
            .context("loading lb_probe_tunnel into the kernel")?;
        Ok(Self { ebpf })
    }

    /// Attaches on `interface`'s tc egress, for as long as this value lives.
    pub fn attach_egress(&mut self, interface: &str) -> anyhow::Result<()> {
        let program: &mut SchedClassifier = self
            .ebpf
            .program_mut(PROGRAM_PROBE_TUNNEL)
            .expect("checked at load")
            .try_into()?;
        program
            .attach(interface, TcAttachType::Egress)
            .with_context(|| format!("attaching lb_probe_tunnel to {interface} (tc egress)"))?;
        Ok(())
    }

    fn map<V: aya::Pod>(&mut self, name: &str) -> anyhow::Result<HashMap<&mut MapData, u32, V>> {
        Ok(HashMap::try_from(
            self.ebpf
                .map_mut(name)
                .with_context(|| format!("the object has no {name}"))?,
        )?)
    }

    /// Packets marked `mark` go to `tunnel`'s backend.
    pub fn set(&mut self, mark: u32, tunnel: &ProbeTunnel) -> anyhow::Result<()> {
        self.map::<ProbeTunnel>(MAP_PROBE_TUNNELS)?
            .insert(mark, tunnel, 0)
            .with_context(|| format!("writing the probe tunnel of mark {mark:#x}"))
    }

    /// Packets marked `mark` go to `tunnel`'s IPv6 backend.
    pub fn set6(&mut self, mark: u32, tunnel: &ProbeTunnel6) -> anyhow::Result<()> {
        self.map::<ProbeTunnel6>(MAP_PROBE_TUNNELS6)?
            .insert(mark, tunnel, 0)
            .with_context(|| format!("writing the IPv6 probe tunnel of mark {mark:#x}"))
    }

    /// Forgets `mark` in both families' maps.
    pub fn remove(&mut self, mark: u32) -> anyhow::Result<()> {
        Self::remove_from(self.map::<ProbeTunnel>(MAP_PROBE_TUNNELS)?, mark)?;
        Self::remove_from(self.map::<ProbeTunnel6>(MAP_PROBE_TUNNELS6)?, mark)
    }

    fn remove_from<V: aya::Pod>(
        mut map: HashMap<&mut MapData, u32, V>,
        mark: u32,
    ) -> anyhow::Result<()> {
        match map.remove(&mark) {
            Ok(()) => Ok(()),
            Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(aya::maps::MapError::SyscallError(e))
                if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
            {
                Ok(())
            }
            Err(e) => Err(e).with_context(|| format!("removing the probe tunnel {mark:#x}")),
        }
    }
}

/// The node's source address and NIC toward `backend`, as the kernel routes it
/// (RTM_GETROUTE for the /32).
pub fn route_to(backend: Ipv4Addr) -> anyhow::Result<(Ipv4Addr, u32)> {
    match route_to_ip(backend.into())? {
        (IpAddr::V4(source), ifindex) => Ok((source, ifindex)),
        (IpAddr::V6(source), _) => anyhow::bail!("the route to {backend} names {source}"),
    }
}

/// [`route_to`] for either family (RTM_GETROUTE for the /32 or /128).
pub fn route_to_ip(backend: IpAddr) -> anyhow::Result<(IpAddr, u32)> {
    let mut request = RouteMessage::default();
    let (family, length, destination) = match backend {
        IpAddr::V4(v4) => (AddressFamily::Inet, 32, RouteAddress::Inet(v4)),
        IpAddr::V6(v6) => (AddressFamily::Inet6, 128, RouteAddress::Inet6(v6)),
    };
    request.header.address_family = family;
    request.header.destination_prefix_length = length;
    request
        .attributes
        .push(RouteAttribute::Destination(destination));
    let replies = exchange(
        RouteNetlinkMessage::GetRoute(request),
        NLM_F_REQUEST | NLM_F_ACK,
    )
    .with_context(|| format!("asking the route to {backend} (RTM_GETROUTE)"))?;
    for reply in replies {
        let RouteNetlinkMessage::NewRoute(route) = reply else {
            continue;
        };
        let mut source = None;
        let mut ifindex = None;
        for attribute in &route.attributes {
            match attribute {
                RouteAttribute::PrefSource(RouteAddress::Inet(ip)) => source = Some((*ip).into()),
                RouteAttribute::PrefSource(RouteAddress::Inet6(ip)) => source = Some((*ip).into()),
                RouteAttribute::Oif(i) => ifindex = Some(*i),
                _ => {}
            }
        }
        if let (Some(source), Some(ifindex)) = (source, ifindex) {
            return Ok((source, ifindex));
        }
    }
    anyhow::bail!("the route to {backend} names no source address and interface")
}
