//! `lbctl backend list|add|remove|drain|undrain|set-weight`.
use clap::Subcommand;
use hyper::Method;
use serde_json::json;

use super::{segment, table::Table, Ctx};
use crate::{
    model::config::{BackendConfig, BackendState},
    model::desired::edit::BackendAddr,
    ops::views::{BackendView, ChangeResult},
};

#[derive(Subcommand)]
pub enum BackendCmd {
    /// Backends of one service, or of all.
    List { service: Option<String> },
    /// Add a backend to a service.
    Add {
        service: String,
        /// ADDRESS:PORT
        backend: BackendAddr,
        #[arg(long)]
        zone: String,
        /// 1..=1000
        #[arg(long, default_value_t = 1)]
        weight: u32,
    },
    /// Remove a backend from a service.
    Remove {
        service: String,
        backend: BackendAddr,
    },
    /// No new flows to the backend; existing ones continue.
    Drain {
        service: String,
        backend: BackendAddr,
    },
    /// Take new flows again.
    Undrain {
        service: String,
        backend: BackendAddr,
    },
    /// Change a backend's weight (1..=1000).
    SetWeight {
        service: String,
        backend: BackendAddr,
        weight: u32,
    },
}

fn path(service: &str, backend: &BackendAddr, verb: &str) -> String {
    format!(
        "/v1/services/{}/backends/{}{verb}",
        segment(service),
        segment(&backend.to_string())
    )
}

pub fn run(ctx: &Ctx, cmd: BackendCmd) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let (result, already): (ChangeResult, &str) = match cmd {
        BackendCmd::List { service } => {
            let query = service
                .map(|s| format!("?service={}", segment(&s)))
                .unwrap_or_default();
            let list: Vec<BackendView> = client.get(&format!("/v1/backends{query}"))?;
            ctx.print(&list, || table(&list));
            return Ok(());
        }
        BackendCmd::Add {
            service,
            backend,
            zone,
            weight,
        } => {
            let body = serde_json::to_value(BackendConfig {
                address: backend.address,
                port: backend.port,
                zone,
                weight,
                state: BackendState::Active,
            })?;
            let path = format!("/v1/services/{}/backends", segment(&service));
            (client.send(Method::POST, &path, Some(&body))?, "")
        }
        BackendCmd::Remove { service, backend } => (
            client.send(Method::DELETE, &path(&service, &backend, ""), None)?,
            "",
        ),
        BackendCmd::Drain { service, backend } => (
            client.send(Method::POST, &path(&service, &backend, "/drain"), None)?,
            "the backend is already draining",
        ),
        BackendCmd::Undrain { service, backend } => (
            client.send(Method::POST, &path(&service, &backend, "/undrain"), None)?,
            "the backend is already active",
        ),
        BackendCmd::SetWeight {
            service,
            backend,
            weight,
        } => (
            client.send(
                Method::PUT,
                &path(&service, &backend, "/weight"),
                Some(&json!({ "weight": weight })),
            )?,
            "the backend already has that weight",
        ),
    };
    ctx.print_change(&result, already);
    Ok(())
}

fn table(list: &[BackendView]) -> String {
    let mut t = Table::new(&[
        "SERVICE",
        "BACKEND",
        "ZONE",
        "WEIGHT>",
        "EFFECTIVE>",
        "STATE",
        "ZONE DRAINED",
    ]);
    for b in list {
        t.row(vec![
            b.service.clone(),
            std::net::SocketAddr::new(b.address, b.port).to_string(),
            b.zone.clone(),
            b.weight.to_string(),
            weight(b.effective_weight),
            state_name(b.state).into(),
            if b.zone_drained { "yes" } else { "no" }.into(),
        ]);
    }
    t.render()
}

/// `2`, `0.35`: whole weights without decimals, slow-start fractions with them.
fn weight(w: f64) -> String {
    let s = format!("{w:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

pub fn state_name(s: BackendState) -> &'static str {
    match s {
        BackendState::Active => "active",
        BackendState::Draining => "draining",
    }
}
