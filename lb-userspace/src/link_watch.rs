//! Link events from the kernel: an rtnetlink socket subscribed to RTMGRP_LINK tells lbd
//! at once when a configured NIC is created, deleted or changed, so that a NIC deleted
//! and created again gets the data path back within milliseconds. Netlink may drop
//! multicast messages when its socket buffer overflows (ENOBUFS), so lbd also checks
//! every NIC once a second (see `daemon`); an event only makes that check happen now.
use anyhow::Context as _;
use futures_util::StreamExt as _;
use log::warn;
use rtnetlink::{
    constants::RTMGRP_LINK,
    packet_core::NetlinkPayload,
    packet_route::{link::LinkAttribute, RouteNetlinkMessage},
    sys::{AsyncSocket as _, SocketAddr},
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
