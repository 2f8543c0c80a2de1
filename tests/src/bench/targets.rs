//! The targets of the benchmark issue, each evaluated against the figures of this run
//! (read back from the report's JSON, so the table and the file cannot disagree). A
//! target whose part did not run is "not measured", never guessed.
use serde_json::{json, Value};

use super::table::{fixed, percent, Table};

struct Target {
    name: &'static str,
    goal: &'static str,
    /// (what was measured, whether the goal is met); None when not measured.
    result: Option<(String, bool)>,
}

fn num(v: &Value, path: &[&str]) -> Option<f64> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_f64()
}

/// The cell of an array of objects at `path` whose fields match `keys`.
fn cell<'a>(v: &'a Value, path: &[&str], keys: &[(&str, u64)]) -> Option<&'a Value> {
    path.iter()
        .try_fold(v, |v, k| v.get(k))?
        .as_array()?
        .iter()
        .find(|c| {
            keys.iter()
                .all(|(k, want)| c.get(k).and_then(Value::as_u64) == Some(*want))
        })
}

fn packet(report: &Value, key: &str, name: &'static str, goal: &'static str, max: f64) -> Target {
    Target {
        name,
        goal,
        result: num(report, &["packet", "paths", key, "net_median_ns"])
            .map(|ns| (format!("{ns:.0} ns net median"), ns <= max)),
    }
}

fn all(report: &Value) -> Vec<Target> {
    let mut t = vec![
        packet(
            report,
            "established",
            "established flow, per packet",
            "<= 45 ns net",
            45.0,
        ),
        packet(
            report,
            "new_flow_maglev",
            "new flow (SYN, Maglev), per packet",
            "<= 110 ns net",
            110.0,
        ),
        packet(
            report,
            "pass_through",
            "non-VIP pass-through, per packet",
            "<= 15 ns net",
            15.0,
        ),
    ];
    let growths = report
        .pointer("/fill/fill_growth")
        .and_then(Value::as_array)
        .filter(|g| !g.is_empty());
    // None when no cell has any of the keys: an unmeasured path is never a 0% change.
    let worst = |keys: &[&str]| {
        growths?
            .iter()
            .flat_map(|c| keys.iter().map(|k| num(c, &[k])))
            .flatten()
            .map(f64::abs)
            .reduce(f64::max)
    };
    // The target is judged on every path; the hot flow and the memory floor are shown
    // beside it because they say why it is missed.
    let growth = worst(&["established_change", "new_flow_change", "first_ack_change"]);
    let hot = worst(&["established_hot_change"]);
    let far_read = report
        .pointer("/fill/random_read_ns")
        .and_then(Value::as_array)
        .and_then(|r| r.last())
        .and_then(|r| Some((num(r, &["region_bytes"])?, num(r, &["ns"])?)));
    t.push(Target {
        name: "flow-table fill 1k -> 1M, per-packet change",
        goal: "< 30%",
        result: growth.map(|g| {
            let mut measured = format!("worst {} (any backend count, any path)", percent(g));
            if let Some(h) = hot {
                measured.push_str(&format!("; one hot flow {}", percent(h)));
            }
            if let Some((bytes, ns)) = far_read {
                let mib = bytes / f64::from(1 << 20);
                measured.push_str(&format!("; a random read of {mib:.0} MiB {ns:.0} ns"));
            }
            (measured, g < 0.30)
        }),
    });
    let e2e = |workload: &str, variant: &str, field: &str| {
        num(report, &["e2e", workload, variant, field])
    };
    t.push(Target {
        name: "new connections/s through the VIP vs straight to a backend",
        goal: ">= 90%",
        result: e2e("connections", "xdp", "vs_ceiling").map(|r| (percent(r), r >= 0.9)),
    });
    t.push(Target {
        name: "keep-alive requests/s through the VIP vs straight to a backend",
        goal: ">= 90%",
        result: e2e("keepalive", "xdp", "vs_ceiling").map(|r| (percent(r), r >= 0.9)),
    });
    t.push(Target {
        name: "LB CPU per connection vs HAProxy's",
        goal: "<= 1/5",
        result: e2e("connections", "xdp", "lb_cpu_over_ceiling_per_unit")
            .zip(e2e(
                "connections",
                "haproxy",
                "lb_cpu_over_ceiling_per_unit",
            ))
            .map(|(x, h)| {
                (
                    format!(
                        "XDP {} us vs HAProxy {} us ({})",
                        fixed(x, 1),
                        fixed(h, 1),
                        percent(x / h)
                    ),
                    h > 0.0 && x <= h / 5.0,
                )
            }),
    });
    t.push(Target {
        name: "Maglev build, 1,000 backends, 65537 slots",
        goal: "< 5 ms",
        result: cell(
            report,
            &["control", "maglev_build"],
            &[("backends", 1000), ("ring_size", 65537)],
        )
        .and_then(|c| num(c, &["median_ms"]))
        .map(|ms| (format!("{ms:.2} ms median"), ms < 5.0)),
    });
    let live = |field: &str| {
        cell(
            report,
            &["control", "change_to_live"],
            &[("backends", 1000), ("ring_size", 65537)],
        )
        .and_then(|c| num(c, &[field]))
    };
    t.push(Target {
        name: "change-to-live, 1,000 backends, 65537 slots",
        goal: "< 50 ms",
        result: live("later_max_ms").map(|ms| {
            (
                format!("{ms:.1} ms, slowest of the later changes"),
                ms < 50.0,
            )
        }),
    });
    t.push(Target {
        name: "change-to-live, first change after start (whole ring)",
        goal: "< 50 ms",
        result: live("first_change_ms").map(|ms| (format!("{ms:.1} ms"), ms < 50.0)),
    });
    t.extend(saturated(report, false));
    t.extend(saturated(report, true));
    t.extend(dsr_bulk(report));
    t
}

/// Per direct-server-return mode, the bulk download (backend -> client): at least the
/// ceiling's rate, with less LB CPU per GB (over the ceiling's, same round) than NAT's.
fn dsr_bulk(report: &Value) -> Vec<Target> {
    let modes = [
        ("dsr_l2", "DSR bulk download, dsr_l2: vs ceiling and NAT"),
        ("ipip", "DSR bulk download, ipip: vs ceiling and NAT"),
        ("gue", "DSR bulk download, gue: vs ceiling and NAT"),
    ];
    modes
        .into_iter()
        .map(|(mode, name)| {
            let of = |variant: &str, field: &str| num(report, &["e2e", "bulk", variant, field]);
            let result = (|| {
                let rate = of(mode, "vs_ceiling")?;
                let lb = of(mode, "lb_cpu_over_ceiling_per_unit")?;
                let nat = of("xdp", "lb_cpu_over_ceiling_per_unit")?;
                let measured = format!(
                    "{} of the ceiling's rate; LB CPU {} vs NAT's {} s/GB",
                    percent(rate),
                    fixed(lb, 3),
                    fixed(nat, 3)
                );
                Some((measured, rate >= 1.0 && lb < nat))
            })();
            Target {
                name,
                goal: ">= ceiling's rate, less LB CPU than NAT",
                result,
            }
        })
        .collect()
}

/// At saturation (wrk, iperf3), each row: `lbd` ahead of nftables DNAT in its share of
/// straight-to-a-backend's rate, and below it in CPU per connection, request or GB; in
/// the XDP lab (`e2e`, `lbd` at XDP) or in the lab whose veths keep their offloads
/// (`e2e_tc`, `lbd` at tc).
fn saturated(report: &Value, offloaded: bool) -> Vec<Target> {
    let (part, lbd) = if offloaded {
        ("e2e_tc", "tc")
    } else {
        ("e2e", "xdp")
    };
    let names: [&'static str; 4] = if offloaded {
        [
            "saturated, offloads on, new connection per request (wrk): lbd at tc vs nftables",
            "saturated, offloads on, keep-alive requests (wrk): lbd at tc vs nftables",
            "saturated, offloads on, upload (iperf3): lbd at tc vs nftables",
            "saturated, offloads on, download (iperf3): lbd at tc vs nftables",
        ]
    } else {
        [
            "saturated, new connection per request (wrk): lbd vs nftables",
            "saturated, keep-alive requests (wrk): lbd vs nftables",
            "saturated, upload (iperf3): lbd vs nftables",
            "saturated, download (iperf3): lbd vs nftables",
        ]
    };
    let rows = [
        "wrk_close",
        "wrk_keepalive",
        "iperf3_upload",
        "iperf3_download",
    ];
    rows.into_iter()
        .zip(names)
        .map(|(row, name)| {
            let of = |variant: &str, field: &str| num(report, &[part, row, variant, field]);
            let unit = report[part][row][lbd]["cpu_unit"].as_str().unwrap_or("");
            let result = (|| {
                let (x, n) = (of(lbd, "vs_ceiling")?, of("nftables", "vs_ceiling")?);
                let (xc, nc) = (of(lbd, "cpu_per_unit")?, of("nftables", "cpu_per_unit")?);
                let measured = format!(
                    "{} vs {} of straight; CPU {} vs {} {unit}",
                    percent(x),
                    percent(n),
                    fixed(xc, 2),
                    fixed(nc, 2)
                );
                Some((measured, x > n && xc < nc))
            })();
            Target {
                name,
                goal: "higher rate, less CPU",
                result,
            }
        })
        .collect()
}

/// Prints the targets table and returns it as JSON.
pub fn evaluate(report: &Value) -> Value {
    let targets = all(report);
    let mut table = Table::new(
        "targets of the benchmark issue",
        &["target", "goal", "measured", "met"],
    );
    for t in &targets {
        let (measured, met) = match &t.result {
            Some((m, ok)) => (m.clone(), if *ok { "yes" } else { "NO" }),
            None => ("not measured in this run".into(), "-"),
        };
        table.row(vec![t.name.into(), t.goal.into(), measured, met.into()]);
    }
    for (variant, expected) in [("haproxy", "about 53%"), ("nftables", "about 79%")] {
        if let Some(r) = num(report, &["e2e", "connections", variant, "vs_ceiling"]) {
            table.note(format!(
                "{variant}: {} of the ceiling's new connections/s (the issue expects {expected})",
                percent(r)
            ));
        }
    }
    table.print();
    Value::Array(
        targets
            .iter()
            .map(|t| {
                json!({
                    "target": t.name, "goal": t.goal,
                    "measured": t.result.as_ref().map(|r| r.0.clone()),
                    "met": t.result.as_ref().map(|r| r.1),
                })
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saturated_row_is_met_only_with_a_higher_rate_and_less_cpu() {
        let row = |x: (f64, f64), n: (f64, f64)| {
            json!({ "e2e": { "iperf3_upload": {
                "xdp": { "vs_ceiling": x.0, "cpu_per_unit": x.1, "cpu_unit": "s/GB" },
                "nftables": { "vs_ceiling": n.0, "cpu_per_unit": n.1 },
            }}})
        };
        let upload = |report: &Value| saturated(report, false)[2].result.clone();
        assert_eq!(
            upload(&row((0.9, 1.5), (0.8, 1.6))),
            Some((
                "90.0% vs 80.0% of straight; CPU 1.50 vs 1.60 s/GB".into(),
                true
            ))
        );
        assert_eq!(
            upload(&row((0.9, 1.7), (0.8, 1.6))).map(|r| r.1),
            Some(false)
        );
        assert_eq!(
            upload(&row((0.7, 1.5), (0.8, 1.6))).map(|r| r.1),
            Some(false)
        );
        assert_eq!(upload(&json!({})), None);
        // The lab with offloads on: `lbd` at tc, in its own part of the report.
        let tc = json!({ "e2e_tc": { "iperf3_upload": {
            "tc": { "vs_ceiling": 0.9, "cpu_per_unit": 1.5, "cpu_unit": "s/GB" },
            "nftables": { "vs_ceiling": 0.8, "cpu_per_unit": 1.6 },
        }}});
        assert_eq!(
            saturated(&tc, true)[2].result.clone().map(|r| r.1),
            Some(true)
        );
        assert_eq!(saturated(&tc, false)[2].result, None);
    }

    #[test]
    fn a_dsr_bulk_row_is_met_only_at_the_ceiling_s_rate_with_less_lb_cpu_than_nat() {
        let row = |rate: f64, lb: f64| {
            json!({ "e2e": { "bulk": {
                "gue": { "vs_ceiling": rate, "lb_cpu_over_ceiling_per_unit": lb },
                "xdp": { "vs_ceiling": 0.9, "lb_cpu_over_ceiling_per_unit": 0.5 },
            }}})
        };
        let gue = |report: &Value| dsr_bulk(report)[2].result.clone();
        assert_eq!(
            gue(&row(1.02, 0.25)),
            Some((
                "102.0% of the ceiling's rate; LB CPU 0.250 vs NAT's 0.500 s/GB".into(),
                true
            ))
        );
        assert_eq!(gue(&row(0.98, 0.25)).map(|r| r.1), Some(false));
        assert_eq!(gue(&row(1.02, 0.5)).map(|r| r.1), Some(false));
        assert_eq!(
            dsr_bulk(&row(1.0, 0.1))[0].result,
            None,
            "dsr_l2 did not run"
        );
    }

    #[test]
    fn targets_read_the_report_and_unmeasured_ones_stay_unknown() {
        let report = json!({
            "packet": { "paths": {
                "established": { "net_median_ns": 40 },
                "new_flow_maglev": { "net_median_ns": 300 },
            }},
            "control": { "maglev_build": [
                { "backends": 10, "ring_size": 65537, "median_ms": 9.0 },
                { "backends": 1000, "ring_size": 65537, "median_ms": 3.0 },
            ]},
        });
        let t = all(&report);
        let met = |name: &str| {
            t.iter()
                .find(|t| t.name.starts_with(name))
                .unwrap()
                .result
                .as_ref()
                .map(|r| r.1)
        };
        assert_eq!(met("established"), Some(true));
        assert_eq!(met("new flow"), Some(false));
        assert_eq!(met("non-VIP"), None);
        assert_eq!(met("Maglev build"), Some(true));
        assert_eq!(met("keep-alive"), None);
    }

    fn fill_target(growth: Value) -> Option<(String, bool)> {
        let report = json!({ "fill": {
            "fill_growth": [growth],
            "random_read_ns": [
                { "region_bytes": 32768, "ns": 1.2 },
                { "region_bytes": 268435456, "ns": 166.4 },
            ],
        }});
        let t = all(&report);
        let fill = t.iter().find(|t| t.name.starts_with("flow-table fill"));
        fill.unwrap().result.clone()
    }

    #[test]
    fn the_fill_target_is_judged_on_every_path_not_on_the_hot_flow() {
        let small = json!({ "established_change": 0.1, "established_hot_change": 0.05,
                            "new_flow_change": 0.1, "first_ack_change": -0.2 });
        let (measured, met) = fill_target(small.clone()).unwrap();
        assert!(met, "{measured}");
        assert!(measured.contains("one hot flow 5.0%"), "{measured}");
        assert!(measured.contains("256 MiB 166 ns"), "{measured}");
        for path in ["established_change", "new_flow_change", "first_ack_change"] {
            let mut one_over = small.clone();
            one_over[path] = json!(-0.35);
            let (measured, met) = fill_target(one_over).unwrap();
            assert!(!met, "{path} over 30%: {measured}");
            assert!(measured.starts_with("worst 35.0%"), "{measured}");
        }
        let only_hot = json!({ "established_hot_change": 0.05 });
        assert_eq!(fill_target(only_hot), None, "no path measured, no verdict");
    }
}
