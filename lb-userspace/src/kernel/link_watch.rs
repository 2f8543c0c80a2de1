//! Link events from the kernel: an rtnetlink socket subscribed to RTMGRP_LINK tells lbd
//! at once when a configured NIC is created, deleted or changed, so that a NIC deleted
//! and created again gets the data path back within milliseconds. Netlink may drop
//! multicast messages when its socket buffer overflows (ENOBUFS), so lbd also checks
//! every NIC once a second (see `daemon`); an event only makes that check happen now.
//! That check also asks the kernel which XDP programs a NIC runs ([`xdp_program_ids`]),
//! as a link can be detached or replaced while its NIC stays.
use anyhow::{bail, Context as _};
use futures_util::StreamExt as _;
use log::warn;
use rtnetlink::{
    constants::RTMGRP_LINK,
    packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_REQUEST},
    packet_route::{
        link::{LinkAttribute, LinkMessage, LinkXdp},
        RouteNetlinkMessage,
    },
    sys::{protocols::NETLINK_ROUTE, AsyncSocket as _, Socket, SocketAddr},
};
use tokio::sync::mpsc;

/// Starts watching; the receiver gets the name of each configured NIC that an event was
/// about. Call it inside the tokio runtime.
pub fn watch(interfaces: &[String]) -> anyhow::Result<mpsc::Receiver<String>> {
    let (mut connection, _handle, mut messages) =
        rtnetlink::new_connection().context("opening an rtnetlink socket")?;
    connection
        .socket_mut()
        .socket_mut()
        .bind(&SocketAddr::new(0, RTMGRP_LINK))
        .context("subscribing to link events (RTMGRP_LINK)")?;
    tokio::spawn(connection);
    let (tx, rx) = mpsc::channel(64);
    let interfaces = interfaces.to_vec();
    tokio::spawn(async move {
        while let Some((message, _)) = messages.next().await {
            let link = match message.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link))
                | NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(link)) => link,
                _ => continue,
            };
            let name = link.attributes.iter().find_map(|a| match a {
                LinkAttribute::IfName(name) => Some(name.clone()),
                _ => None,
            });
            if let Some(name) = name.filter(|n| interfaces.contains(n)) {
                // A full channel already holds a check to come, which covers this one.
                let _ = tx.try_send(name);
            }
        }
        warn!("the link-event socket closed; NICs are still checked once a second");
    });
    Ok(rx)
}

/// The ids of the XDP programs attached to the NIC `ifindex` (one per attach mode), from
/// its IFLA_XDP attributes (RTM_GETLINK). Blocking, but the kernel answers RTM_GETLINK
/// while handling the request, so the reply is queued before `send_to` returns; the
/// socket is non-blocking anyway, so a missing reply is an error rather than a hang.
pub fn xdp_program_ids(ifindex: u32) -> anyhow::Result<Vec<u32>> {
    let socket = Socket::new(NETLINK_ROUTE).context("opening an rtnetlink socket")?;
    let mut link = LinkMessage::default();
    link.header.index = ifindex;
    let mut request = NetlinkMessage::from(RouteNetlinkMessage::GetLink(link));
    request.header.flags = NLM_F_REQUEST;
    request.header.sequence_number = 1;
    request.finalize();
    let mut buf = vec![0; request.buffer_len()];
    request.serialize(&mut buf);
    socket
        .send_to(&buf, &SocketAddr::new(0, 0), 0)
        .with_context(|| format!("asking for link {ifindex} (RTM_GETLINK)"))?;
    socket
        .set_non_blocking(true)
        .context("making the rtnetlink socket non-blocking")?;
    let (reply, _) = socket
        .recv_from_full()
        .with_context(|| format!("reading link {ifindex}"))?;
    let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&reply)
        .with_context(|| format!("parsing link {ifindex}"))?;
    let link = match reply.payload {
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => link,
        NetlinkPayload::Error(e) => {
            return Err(e.to_io()).with_context(|| format!("reading link {ifindex}"))
        }
        other => bail!("reading link {ifindex}: unexpected reply {other:?}"),
    };
    Ok(link
        .attributes
        .iter()
        .filter_map(|a| match a {
            LinkAttribute::Xdp(xdp) => Some(xdp),
            _ => None,
        })
        .flatten()
        .filter_map(|x| match x {
            LinkXdp::ProgId(id)
            | LinkXdp::DrvProgId(id)
            | LinkXdp::SkbProgId(id)
            | LinkXdp::HwProgId(id) => Some(*id),
            _ => None,
        })
        .collect())
}
