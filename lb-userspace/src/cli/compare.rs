//! `lbctl service compare NODE...`: the services of several nodes of one tier side by
//! side, by their table and config digests. Nodes whose table digests of a service agree
//! place every flow of it on the same backend, so a connection that ECMP moves between
//! them survives; where they differ, such a connection may land elsewhere.
use std::collections::BTreeMap;

use serde::Serialize;

use super::{
    table::{digest, Table},
    Ctx,
};
use crate::ops::views::ServiceSummary;

/// Exit status when some service's tables differ between the nodes (or a node lacks it):
/// `diff`'s "differences found", moved off 1, which means lbctl itself failed.
pub const EXIT_DIGESTS_DIFFER: u8 = 3;

/// The nodes' services differ; the comparison was printed.
#[derive(Debug, thiserror::Error)]
#[error("the tables of {0} differ between the nodes")]
pub struct DigestsDiffer(pub String);

/// One service as each node has it.
#[derive(Debug, PartialEq, Serialize)]
pub struct ServiceAcrossNodes {
    pub service: String,
    /// Every node's table and config digest of the service, in the order given; `None`
    /// where the node has no such service.
    pub nodes: Vec<NodeDigests>,
    /// Every node has the service with the same table digest.
    pub tables_agree: bool,
    pub configs_agree: bool,
}

#[derive(Debug, PartialEq, Serialize)]
pub struct NodeDigests {
    pub node: String,
    pub present: bool,
    pub table_digest: Option<u64>,
    pub config_digest: Option<u64>,
}

/// Lines the nodes' service lists up by service name. A digest not known yet (`None`, a
/// node whose data path is not programmed) never agrees.
pub fn compare(nodes: &[(String, Vec<ServiceSummary>)]) -> Vec<ServiceAcrossNodes> {
    let mut names: BTreeMap<&str, ()> = BTreeMap::new();
    for (_, services) in nodes {
        names.extend(services.iter().map(|s| (s.name.as_str(), ())));
    }
    names
        .keys()
        .map(|name| {
            let row: Vec<NodeDigests> = nodes
                .iter()
                .map(|(node, services)| {
                    let s = services.iter().find(|s| s.name == *name);
                    NodeDigests {
                        node: node.clone(),
                        present: s.is_some(),
                        table_digest: s.and_then(|s| s.table_digest),
                        config_digest: s.and_then(|s| s.config_digest),
                    }
                })
                .collect();
            let agree = |d: fn(&NodeDigests) -> Option<u64>| {
                let first = d(&row[0]);
                first.is_some() && row.iter().all(|n| d(n) == first)
            };
            ServiceAcrossNodes {
                service: name.to_string(),
                tables_agree: agree(|n| n.table_digest),
                configs_agree: agree(|n| n.config_digest),
                nodes: row,
            }
        })
        .collect()
}

pub fn run(ctx: &Ctx, nodes: &[String]) -> anyhow::Result<()> {
    let mut lists = Vec::with_capacity(nodes.len());
    for node in nodes {
        let client = ctx.client_of(node)?;
        let services: Vec<ServiceSummary> = client
            .get("/v1/services")
            .map_err(|e| anyhow::anyhow!("{node}: {e}"))?;
        lists.push((node.clone(), services));
    }
    let rows = compare(&lists);
    ctx.print(&rows, || render(&rows));
    let differ: Vec<&str> = rows
        .iter()
        .filter(|r| !r.tables_agree)
        .map(|r| r.service.as_str())
        .collect();
    if differ.is_empty() {
        Ok(())
    } else {
        Err(DigestsDiffer(differ.join(", ")).into())
    }
}

fn render(rows: &[ServiceAcrossNodes]) -> String {
    let mut t = Table::new(&[
        "SERVICE",
        "NODE",
        "TABLE DIGEST",
        "CONFIG DIGEST",
        "TABLES",
        "CONFIGS",
    ]);
    let word = |agree| if agree { "same" } else { "DIFFER" }.to_string();
    for r in rows {
        for n in &r.nodes {
            let (table, config) = if n.present {
                (digest(n.table_digest), digest(n.config_digest))
            } else {
                ("absent".into(), "absent".into())
            };
            t.row(vec![
                r.service.clone(),
                n.node.clone(),
                table,
                config,
                word(r.tables_agree),
                word(r.configs_agree),
            ]);
        }
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::Policy;

    fn summary(name: &str, table: Option<u64>, config: u64) -> ServiceSummary {
        ServiceSummary {
            name: name.into(),
            vip: "10.0.0.100".parse().unwrap(),
            port: 80,
            protocol: Default::default(),
            policy: Policy::Maglev,
            backends: 3,
            draining: 0,
            drained_zones: vec![],
            table_digest: table,
            config_digest: Some(config),
        }
    }

    #[test]
    fn services_line_up_by_name_and_agree_only_when_every_node_has_the_same_digest() {
        let nodes = vec![
            (
                "a".to_string(),
                vec![summary("web", Some(0xaaa), 1), summary("dns", Some(7), 2)],
            ),
            (
                "b".to_string(),
                vec![summary("web", Some(0xaaa), 1), summary("api", None, 3)],
            ),
            (
                "c".to_string(),
                vec![summary("web", Some(0xbbb), 1), summary("dns", Some(7), 2)],
            ),
        ];
        let rows = compare(&nodes);
        let verdicts: Vec<(&str, bool, bool)> = rows
            .iter()
            .map(|r| (r.service.as_str(), r.tables_agree, r.configs_agree))
            .collect();
        // web: one node's table differs, configs equal (health views differ); dns and
        // api: missing on a node.
        assert_eq!(
            verdicts,
            [
                ("api", false, false),
                ("dns", false, false),
                ("web", false, true)
            ]
        );
        assert_eq!(
            rows[1].nodes[1],
            NodeDigests {
                node: "b".into(),
                present: false,
                table_digest: None,
                config_digest: None,
            }
        );
        let two = compare(&nodes[..2]);
        assert!(
            two.iter()
                .find(|r| r.service == "web")
                .unwrap()
                .tables_agree
        );
        assert_eq!(
            render(&two),
            "SERVICE  NODE  TABLE DIGEST  CONFIG DIGEST  TABLES  CONFIGS\n\
             api      a     absent        absent         DIFFER  DIFFER\n\
             api      b     -             000000000003   DIFFER  DIFFER\n\
             dns      a     000000000007  000000000002   DIFFER  DIFFER\n\
             dns      b     absent        absent         DIFFER  DIFFER\n\
             web      a     000000000aaa  000000000001   same    same\n\
             web      b     000000000aaa  000000000001   same    same\n"
        );
    }
}
