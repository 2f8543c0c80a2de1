//! `lbctl explain <client addr:port> <vip:port> [--protocol udp]`.
use std::net::SocketAddr;

use clap::Args;

use super::Ctx;
use crate::ops::explain::view::{render, ExplainView};

#[derive(Args)]
pub struct ExplainArgs {
    /// The client's address and port, e.g. 10.10.0.2:40000 or [2001:db8::2]:40000.
    pub client: SocketAddr,
    /// The service's VIP and port, e.g. 10.0.0.100:80 or [2001:db8::100]:80.
    pub vip: SocketAddr,
    /// tcp or udp (a UDP service's datagrams).
    #[arg(long, default_value = "tcp", value_parser = ["tcp", "udp"])]
    pub protocol: String,
}

pub fn run(ctx: &Ctx, args: ExplainArgs) -> anyhow::Result<()> {
    let view: ExplainView = ctx.client()?.get(&format!(
        "/v1/explain?client={}&vip={}&protocol={}",
        super::segment(&args.client.to_string()),
        super::segment(&args.vip.to_string()),
        args.protocol
    ))?;
    ctx.print(&view, || render(&view));
    Ok(())
}
