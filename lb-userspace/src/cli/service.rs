//! `lbctl service list|show|add|remove`.
use std::net::{IpAddr, SocketAddr};

use clap::Subcommand;
use hyper::Method;

use super::{
    segment,
    table::{digest, Table},
    Ctx,
};
use crate::{
    model::config::{Policy, Protocol, ServiceConfig},
    ops::views::{ChangeResult, ServiceSummary},
};

#[derive(Subcommand)]
pub enum ServiceCmd {
    /// Every service, with the digests of its tables and of its config: nodes of one
    /// tier that show equal table digests place every flow of it alike.
    List,
    /// One service, as in the config file.
    Show { name: String },
    /// Add a service (without backends; add them with `lbctl backend add`).
    Add {
        name: String,
        #[arg(long)]
        vip: IpAddr,
        #[arg(long)]
        port: u16,
        /// maglev, round_robin, least_conn or source_hash.
        #[arg(long, default_value = "maglev", value_parser = parse_policy)]
        policy: Policy,
        /// tcp or udp (a TCP and a UDP service may share a VIP and port).
        #[arg(long, default_value = "tcp", value_parser = parse_protocol)]
        protocol: Protocol,
    },
    /// Remove a service and its backends.
    Remove { name: String },
    /// Several nodes' services side by side by digest (exit 3 when a service's tables
    /// differ or a node lacks it). NODE: a socket path or http://HOST:PORT (--token-file).
    Compare {
        #[arg(required = true, num_args = 2.., value_name = "NODE")]
        nodes: Vec<String>,
    },
}

fn parse_protocol(s: &str) -> Result<Protocol, String> {
    serde_json::from_value(serde_json::Value::String(s.into()))
        .map_err(|_| format!("`{s}`: expected tcp or udp"))
}

fn parse_policy(s: &str) -> Result<Policy, String> {
    serde_json::from_value(serde_json::Value::String(s.into()))
        .map_err(|_| format!("`{s}`: expected maglev, round_robin, least_conn or source_hash"))
}

pub fn run(ctx: &Ctx, cmd: ServiceCmd) -> anyhow::Result<()> {
    let client = || ctx.client();
    match cmd {
        ServiceCmd::List => {
            let list: Vec<ServiceSummary> = client()?.get("/v1/services")?;
            ctx.print(&list, || {
                let mut t = Table::new(&[
                    "NAME",
                    "VIP",
                    "POLICY",
                    "BACKENDS>",
                    "DRAINING>",
                    "DRAINED ZONES",
                    "TABLE DIGEST",
                    "CONFIG DIGEST",
                ]);
                for s in &list {
                    t.row(vec![
                        s.name.clone(),
                        listener(s),
                        policy_name(s.policy),
                        s.backends.to_string(),
                        s.draining.to_string(),
                        s.drained_zones.join(","),
                        digest(s.table_digest),
                        digest(s.config_digest),
                    ]);
                }
                t.render()
            });
        }
        ServiceCmd::Show { name } => {
            let s: ServiceConfig = client()?.get(&format!("/v1/services/{}", segment(&name)))?;
            ctx.print(&s, || {
                serde_yaml_ng::to_string(&s).unwrap_or_else(|e| format!("{e}\n"))
            });
        }
        ServiceCmd::Add {
            name,
            vip,
            port,
            policy,
            protocol,
        } => {
            // Every other key of the service takes its default, as in the config file.
            let body = serde_json::json!({
                "name": name,
                "vip": vip,
                "port": port,
                "policy": policy,
                "protocol": protocol,
            });
            let r: ChangeResult = client()?.send(Method::POST, "/v1/services", Some(&body))?;
            ctx.print_change(&r, "the service exists as given");
        }
        ServiceCmd::Compare { nodes } => super::compare::run(ctx, &nodes)?,
        ServiceCmd::Remove { name } => {
            let r: ChangeResult = client()?.send(
                Method::DELETE,
                &format!("/v1/services/{}", segment(&name)),
                None,
            )?;
            ctx.print_change(&r, "already absent");
        }
    }
    Ok(())
}

/// VIP:port, with `/udp` after a UDP service's (a TCP one's is left as it always was).
fn listener(s: &ServiceSummary) -> String {
    match s.protocol {
        Protocol::Tcp => SocketAddr::new(s.vip, s.port).to_string(),
        Protocol::Udp => format!("{}/udp", SocketAddr::new(s.vip, s.port)),
    }
}

pub fn policy_name(p: Policy) -> String {
    serde_json::to_value(p)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}
