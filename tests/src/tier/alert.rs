//! The tier alert `LbdTableDigestsDiffer` (deploy/prometheus/lbd-tier.rules.yml) on
//! digests the lab's nodes exported: `promtool test rules` evaluates the shipped rule
//! on them, one sample per evaluation interval. promtool (Debian `prometheus`) is
//! optional: without it the caller checks the rule's expression itself.
use std::{path::Path, process::Command, time::Duration};

use crate::process::output_within;

const RULES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../deploy/prometheus/lbd-tier.rules.yml"
);
/// The rules' group interval (`interval: 5s`).
const EVALUATION: u32 = 5;

/// Whether `promtool` is on PATH.
pub fn have_promtool() -> bool {
    let mut cmd = Command::new("promtool");
    cmd.arg("--version");
    output_within(cmd, Duration::from_secs(10)).is_ok_and(|o| o.status.success())
}

/// Runs the shipped rule in promtool on `samples` (one vector of per-node digests per
/// evaluation, 5 s apart) and checks that the alert fires at the last evaluation
/// (`fires`) or at none. The rule's annotations are left out of the copy promtool
/// reads: promtool compares them too, and they are text, not behaviour.
pub fn check_rule(dir: &Path, samples: &[Vec<u64>], fires: bool) -> Result<(), String> {
    let shipped = std::fs::read_to_string(RULES).map_err(|e| format!("reading {RULES}: {e}"))?;
    let rules = shipped
        .split("        annotations:")
        .next()
        .expect("split yields one part at least");
    let rules_path = dir.join("lbd-tier.rules.yml");
    std::fs::write(&rules_path, rules).map_err(|e| format!("writing the rules: {e}"))?;
    let nodes = samples.first().map_or(0, Vec::len);
    let mut test = format!(
        "rule_files:\n  - {}\nevaluation_interval: {EVALUATION}s\ntests:\n  - interval: {EVALUATION}s\n    input_series:\n",
        rules_path.display()
    );
    for n in 0..nodes {
        let values: Vec<String> = samples.iter().map(|s| s[n].to_string()).collect();
        test.push_str(&format!(
            "      - series: 'lb_service_table_digest{{job=\"lbd\",instance=\"n{}\",service=\"web\"}}'\n        values: '{}'\n",
            n + 1,
            values.join(" ")
        ));
    }
    test.push_str("    alert_rule_test:\n");
    for (k, _) in samples.iter().enumerate() {
        let last = k + 1 == samples.len();
        test.push_str(&format!(
            "      - eval_time: {}s\n        alertname: LbdTableDigestsDiffer\n",
            k as u32 * EVALUATION
        ));
        if fires && last {
            test.push_str("        exp_alerts:\n          - exp_labels: { severity: warning, job: lbd, service: web }\n");
        } else {
            test.push_str("        exp_alerts: []\n");
        }
    }
    let test_path = dir.join("lbd-tier.rules.test.yml");
    std::fs::write(&test_path, &test).map_err(|e| format!("writing the rules test: {e}"))?;
    let mut cmd = Command::new("promtool");
    cmd.args(["test", "rules"]).arg(&test_path);
    let out = output_within(cmd, Duration::from_secs(30))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "promtool test rules on\n{test}\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
