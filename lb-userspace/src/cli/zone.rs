//! `lbctl zone list|drain|undrain`.
use clap::Subcommand;
use hyper::Method;

use super::{segment, table::Table, Ctx};
use crate::ops::views::{ChangeResult, ZoneView};

#[derive(Subcommand)]
pub enum ZoneCmd {
    /// Zones with backends, and where they are drained.
    List,
    /// No new flows to the zone's backends (in one service, or in all).
    Drain {
        zone: String,
        #[arg(long)]
        service: Option<String>,
    },
    /// Take new flows in the zone again.
    Undrain {
        zone: String,
        #[arg(long)]
        service: Option<String>,
    },
}

pub fn run(ctx: &Ctx, cmd: ZoneCmd) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let (zone, service, verb) = match cmd {
        ZoneCmd::List => {
            let list: Vec<ZoneView> = client.get("/v1/zones")?;
            ctx.print(&list, || {
                let mut t = Table::new(&["ZONE", "LOCAL", "BACKENDS>", "SERVICES", "DRAINED IN"]);
                for z in &list {
                    t.row(vec![
                        z.zone.clone(),
                        if z.local { "yes" } else { "" }.into(),
                        z.backends.to_string(),
                        z.services.join(","),
                        z.drained_in.join(","),
                    ]);
                }
                t.render()
            });
            return Ok(());
        }
        ZoneCmd::Drain { zone, service } => (zone, service, "drain"),
        ZoneCmd::Undrain { zone, service } => (zone, service, "undrain"),
    };
    let query = service
        .map(|s| format!("?service={}", segment(&s)))
        .unwrap_or_default();
    let path = format!("/v1/zones/{}/{verb}{query}", segment(&zone));
    let r: ChangeResult = client.send(Method::POST, &path, None)?;
    ctx.print_change(&r, &format!("zone {zone} is already {verb}ed"));
    Ok(())
}
