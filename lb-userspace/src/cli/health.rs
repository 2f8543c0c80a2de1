//! `lbctl health`.
use super::{table::Table, Ctx};
use crate::ops::views::HealthView;

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
            "AGE>",
            "FAILED>",
            "REASON",
        ]);
        for h in &list {
            t.row(vec![
                h.service.clone(),
                std::net::SocketAddr::new(h.address, h.port).to_string(),
                h.zone.clone(),
                h.state.clone(),
                h.last_probe.clone().unwrap_or_else(|| "-".into()),
                h.latency_ms
                    .map(|ms| format!("{ms:.1}ms"))
                    .unwrap_or_else(|| "-".into()),
                h.last_probe_age_ms
                    .map(|ms| format!("{:.1}s", ms / 1e3))
                    .unwrap_or_else(|| "-".into()),
                h.probe_failures.to_string(),
                h.reason.clone(),
            ]);
        }
        t.render()
    });
    Ok(())
}
