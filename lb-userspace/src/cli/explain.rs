//! `lbctl explain <client addr:port> <vip:port> [--protocol udp]`.
use std::net::SocketAddrV4;

use clap::Args;

use super::Ctx;
use crate::ops::explain::view::{render, ExplainView};

#[derive(Args)]
pub struct ExplainArgs {
    /// The client's address and port, e.g. 10.10.0.2:40000.
    pub client: SocketAddrV4,
    /// The service's VIP and port, e.g. 10.0.0.100:80.
    pub vip: SocketAddrV4,
    /// tcp or udp (a UDP service's datagrams).
    #[arg(long, default_value = "tcp", value_parser = ["tcp", "udp"])]
    pub protocol: String,
}

pub fn run(ctx: &Ctx, args: ExplainArgs) -> anyhow::Result<()> {
    let view: ExplainView = ctx.client()?.get(&format!(
        "/v1/explain?client={}&vip={}&protocol={}",
        args.client, args.vip, args.protocol
    ))?;
    ctx.print(&view, || render(&view));
    Ok(())
}
