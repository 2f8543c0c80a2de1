//! `lbctl health`.
use super::{table::Table, Ctx};
use crate::api::views::HealthView;

pub fn run(ctx: &Ctx) -> anyhow::Result<()> {
    let list: Vec<HealthView> = ctx.client()?.get("/v1/health")?;
    ctx.print(&list, || {
        let mut t = Table::new(&[
            "SERVICE",
            "BACKEND",
            "ZONE",
            "STATE",
            "LAST PROBE",
            "LATENCY>",
            "REASON",
        ]);
        for h in &list {
            t.row(vec![
                h.service.clone(),
                format!("{}:{}", h.address, h.port),
                h.zone.clone(),
                h.state.clone(),
                h.last_probe.clone().unwrap_or_else(|| "-".into()),
                h.latency_ms
                    .map(|ms| format!("{ms:.1}ms"))
                    .unwrap_or_else(|| "-".into()),
                h.reason.clone(),
            ]);
        }
        t.render()
    });
    Ok(())
}
