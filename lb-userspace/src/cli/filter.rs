//! `lbctl filter list|allow|deny|remove|limited`: a service's edge rules and the most
//! rate-limited sources (see docs/edge-protection.md).
use clap::Subcommand;
use hyper::Method;

use super::{segment, table::Table, Ctx};
use crate::ops::views::{ChangeResult, FilterView, LimitedView};

#[derive(Subcommand)]
pub enum FilterCmd {
    /// A service's rules with their matches, and what it refused.
    List { service: String },
    /// Allow new connections from a prefix (a.b.c.d/len).
    Allow { service: String, cidr: String },
    /// Refuse new connections from a prefix (a.b.c.d/len).
    Deny {
        service: String,
        cidr: String,
        /// Allowed to move the service's last allow rule (which opens it to everyone).
        #[arg(long)]
        open: bool,
    },
    /// Take a prefix off the service's rules.
    Remove {
        service: String,
        cidr: String,
        /// Allowed to remove the service's last allow rule, opening it to every source
        /// (refused without, exit 6).
        #[arg(long)]
        open: bool,
    },
    /// The sources whose SYNs a rate limit dropped most, most first.
    Limited {
        /// How many to list (at most 1000).
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
}

pub fn run(ctx: &Ctx, cmd: FilterCmd) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let (service, cidr, action, open) = match cmd {
        FilterCmd::List { service } => {
            let view: FilterView =
                client.get(&format!("/v1/services/{}/filter", segment(&service)))?;
            ctx.print(&view, || list_table(&view));
            return Ok(());
        }
        FilterCmd::Limited { limit } => {
            let list: Vec<LimitedView> = client.get(&format!("/v1/limited?limit={limit}"))?;
            ctx.print(&list, || {
                let mut t = Table::new(&["SERVICE", "SOURCE", "DROPPED>", "TOKENS>", "BLOCKED>"]);
                for l in &list {
                    t.row(vec![
                        l.service.clone(),
                        l.source.to_string(),
                        l.dropped.to_string(),
                        l.tokens.to_string(),
                        format!("{}s", l.blocked_secs),
                    ]);
                }
                t.render()
            });
            return Ok(());
        }
        FilterCmd::Allow { service, cidr } => (service, cidr, "allow", false),
        FilterCmd::Deny {
            service,
            cidr,
            open,
        } => (service, cidr, "deny", open),
        FilterCmd::Remove {
            service,
            cidr,
            open,
        } => (service, cidr, "remove", open),
    };
    let body = serde_json::json!({ "action": action, "cidr": cidr, "open": open });
    let path = format!("/v1/services/{}/filter", segment(&service));
    let r: ChangeResult = client.send(Method::POST, &path, Some(&body))?;
    ctx.print_change(&r, &format!("{service} already has {cidr} so"));
    Ok(())
}

fn list_table(view: &FilterView) -> String {
    let mut t = Table::new(&["VERDICT", "RULE", "MATCHES>"]);
    for r in &view.rules {
        t.row(vec![
            r.verdict.clone(),
            r.rule.clone(),
            r.matches.to_string(),
        ]);
    }
    let mut out = t.render();
    out.push_str(&format!(
        "not allowed (no allow rule matched): {}\n",
        view.not_allowed
    ));
    match &view.rate_limit {
        Some(l) => out.push_str(&format!(
            "rate limit: {} SYNs/s per source, burst {}; dropped {}\n",
            l.syns_per_second, l.burst, view.rate_limited
        )),
        None => out.push_str("rate limit: none\n"),
    }
    out
}
