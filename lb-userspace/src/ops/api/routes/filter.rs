//! `GET`/`POST /v1/services/{service}/filter` and `GET /v1/limited`: a service's edge
//! rules and their counts, a rule added or removed, and the most rate-limited sources.
use axum::{
    extract::{Path, Query, State},
    http::StatusCode,
    Json,
};
use serde::{Deserialize, Serialize};

use super::{change, DataPath, Shared};
use crate::{
    model::{
        config::SourceNet,
        desired::edit::{Edit, FilterEdit},
    },
    ops::{
        api::{blocking, body::JsonBody, error::ApiError},
        edge,
        views::{ChangeResult, FilterView, LimitedView, RuleView},
    },
};

/// Sources `GET /v1/limited` lists by default, and at most.
const DEFAULT_LIMITED: usize = 20;
const MAX_LIMITED: usize = 1000;

pub async fn show<D: DataPath>(
    State(rt): State<Shared<D>>,
    Path(service): Path<String>,
) -> Result<Json<FilterView>, ApiError> {
    let view = blocking(move || {
        rt.with(|runtime| {
            let s = runtime
                .config()
                .services
                .iter()
                .find(|s| s.name == service)
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::NOT_FOUND,
                        format!("service `{service}` does not exist"),
                    )
                })?
                .clone();
            let controller = runtime.controller();
            let reading = match controller.plan() {
                Some(plan) => edge::read(controller, plan)
                    .map_err(|e| ApiError::internal(format!("reading counters: {e:#}")))?,
                None => edge::EdgeReading::default(),
            };
            let of_service = |list: &[(String, u64)]| {
                list.iter()
                    .find(|(n, _)| *n == s.name)
                    .map_or(0, |(_, v)| *v)
            };
            Ok::<_, ApiError>(FilterView {
                rules: reading
                    .rules
                    .iter()
                    .filter(|r| r.service == s.name)
                    .map(|r| RuleView {
                        verdict: r.verdict.to_string(),
                        rule: r.rule.clone(),
                        matches: r.matches,
                    })
                    .collect(),
                not_allowed: of_service(&reading.not_allowed),
                rate_limited: of_service(&reading.rate_limited),
                rate_limit: s.rate_limit.clone(),
                service: s.name,
            })
        })
    })
    .await??;
    Ok(Json(view))
}

/// What `POST .../filter` takes: `{"action": "allow" | "deny" | "remove", "cidr": "...",
/// "open": false}`; `open` must be true for a change that takes the last allow rule away.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FilterBody {
    pub action: FilterAction,
    pub cidr: String,
    #[serde(default)]
    pub open: bool,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FilterAction {
    Allow,
    Deny,
    Remove,
}

pub async fn set<D: DataPath>(
    State(rt): State<Shared<D>>,
    Path(service): Path<String>,
    JsonBody(body): JsonBody<FilterBody>,
) -> Result<Json<ChangeResult>, ApiError> {
    let net: SourceNet = body
        .cidr
        .parse()
        .map_err(|e: String| ApiError::bad_request(format!("cidr: {e}")))?;
    let rule = match body.action {
        FilterAction::Allow => FilterEdit::Allow(net),
        FilterAction::Deny => FilterEdit::Deny(net),
        FilterAction::Remove => FilterEdit::Remove(net),
    };
    let open = body.open;
    change(
        rt,
        Edit::SetFilterRule {
            service,
            rule,
            open,
        },
    )
    .await
}

#[derive(Deserialize)]
pub struct LimitedQuery {
    limit: Option<usize>,
}

pub async fn limited<D: DataPath>(
    State(rt): State<Shared<D>>,
    Query(q): Query<LimitedQuery>,
) -> Result<Json<Vec<LimitedView>>, ApiError> {
    let limit = q.limit.unwrap_or(DEFAULT_LIMITED).min(MAX_LIMITED);
    let view = blocking(move || {
        rt.with(|runtime| -> anyhow::Result<Vec<LimitedView>> {
            let controller = runtime.controller();
            let dp = controller.dataplane();
            let now = edge::bucket_clock_secs();
            let names = controller.plan().map(|p| &p.services);
            let name = |id: u32| {
                names
                    .and_then(|s| s.iter().find(|s| s.id == id))
                    .map_or_else(|| format!("#{id}"), |s| s.name.clone())
            };
            Ok(dp
                .limited_sources(limit)?
                .into_iter()
                .map(|l| LimitedView {
                    service: name(l.service),
                    source: l.source,
                    dropped: l.bucket.dropped,
                    tokens: l.bucket.tokens,
                    blocked_secs: l.bucket.blocked_until.saturating_sub(now),
                })
                .collect())
        })
    })
    .await?
    .map_err(|e| ApiError::internal(format!("reading the rate-limit buckets: {e:#}")))?;
    Ok(Json(view))
}
