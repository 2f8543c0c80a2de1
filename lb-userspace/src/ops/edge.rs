//! Edge protection's counters as `/metrics` and the API show them: each rule's matches, and per service the packets refused
//! for want of an allow rule and the SYNs a rate limit dropped. No per-source label:
//! sources are unbounded, rules are not (at most `EDGE_RULES_PER_SERVICE` a service).
use std::collections::BTreeMap;

use lb_common::edge::{EDGE_DENY, EDGE_S_ALLOW_LIST, EDGE_S_RATE_LIMIT};

use crate::{control::tables::Controller, dataplane::Dataplane, model::plan::Plan};

/// One rule's matches.
pub struct RuleSample {
    pub service: String,
    pub verdict: &'static str,
    pub rule: String,
    pub matches: u64,
}

/// Edge counters as one scrape reads them.
#[derive(Default)]
pub struct EdgeReading {
    pub rules: Vec<RuleSample>,
    /// Per protected service with an allow list: packets no rule allowed.
    pub not_allowed: Vec<(String, u64)>,
    /// Per rate-limited service: SYNs dropped.
    pub rate_limited: Vec<(String, u64)>,
}

/// Reads the counters of every rule and protected service the controller wrote.
pub fn read<D: Dataplane>(controller: &Controller<D>, plan: &Plan) -> anyhow::Result<EdgeReading> {
    let names: BTreeMap<u32, &str> = plan
        .services
        .iter()
        .map(|s| (s.id, s.name.as_str()))
        .collect();
    let name = |id: u32| {
        names
            .get(&id)
            .map_or_else(|| format!("#{id}"), |n| n.to_string())
    };
    let tables = controller.edge_tables();
    let dp = controller.dataplane();
    let mut reading = EdgeReading::default();
    for (key, rule) in &tables.rules {
        reading.rules.push(RuleSample {
            service: name(key.service),
            verdict: if rule.verdict == EDGE_DENY {
                "deny"
            } else {
                "allow"
            },
            rule: key.to_string(),
            matches: dp.edge_rule_hits(rule.counter)?,
        });
    }
    for (id, settings) in &tables.services {
        let counters = dp.edge_counters(*id)?;
        if settings.flags & EDGE_S_ALLOW_LIST != 0 {
            reading.not_allowed.push((name(*id), counters.not_allowed));
        }
        if settings.flags & EDGE_S_RATE_LIMIT != 0 {
            reading
                .rate_limited
                .push((name(*id), counters.rate_limited));
        }
    }
    Ok(reading)
}

/// The rate-limit buckets' clock as the data path reads it (`bpf_ktime_get_coarse_ns`,
/// which is `CLOCK_MONOTONIC_COARSE`), in whole seconds: what a bucket's `blocked_until`
/// is compared with.
pub fn bucket_clock_secs() -> u32 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-parameter; CLOCK_MONOTONIC_COARSE exists on Linux since 2.6.32.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u32
}
