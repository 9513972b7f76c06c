//! The Prometheus alert rules (`deploy/prometheus/alerts.yml`, issue 20):
//! `promtool check rules` accepts them, `promtool test rules` runs each
//! alert's unit tests (Debian's `prometheus` package provides promtool;
//! `.ci/run` installs it), every metric an expression uses is one the key
//! server exports (docs/METRICS.md, which a server test keeps equal to the
//! exporter), and every alert has its unit test and its runbook section in
//! docs/OPERATIONS.md.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;

use gkm_tests::metrics_doc::{exported, metric_names, repo_file};

fn repo(path: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).join(path)
}

fn read(path: &str) -> String {
    repo_file(path)
}

fn promtool(args: &[&str]) -> String {
    let o = Command::new("promtool")
        .args(args)
        .current_dir(repo("deploy/prometheus"))
        .output()
        .expect("promtool is installed (Debian's prometheus package; .ci/run installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "promtool {args:?}:\n{text}");
    text
}

/// The alert names, in order.
fn alerts(rules: &str) -> Vec<String> {
    rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .map(str::to_owned)
        .collect()
}

#[test]
fn promtool_checks_the_rules_and_runs_every_alerts_tests() {
    let check = promtool(&["check", "rules", "alerts.yml"]);
    let rules = read("deploy/prometheus/alerts.yml");
    let names = alerts(&rules);
    assert!(
        check.contains(&format!("SUCCESS: {} rules found", names.len())),
        "{check}"
    );
    let test = promtool(&["test", "rules", "alerts_test.yml"]);
    assert!(test.contains("SUCCESS"), "{test}");
    let tests = read("deploy/prometheus/alerts_test.yml");
    for a in &names {
        assert!(
            tests.contains(&format!("alertname: {a}\n")),
            "alert {a} has no unit test"
        );
    }
    println!(
        "alerts ok: {} rules, {} alert tests",
        names.len(),
        tests.matches("alertname: ").count()
    );
}

#[test]
fn every_metric_the_rules_use_is_exported_and_every_alert_has_a_runbook() {
    let documented = exported();
    let rules = read("deploy/prometheus/alerts.yml");
    let used = metric_names(&rules, &documented);
    assert!(!used.is_empty());
    for m in &used {
        assert!(
            documented.contains(m),
            "alerts.yml uses {m}, which the key server does not export"
        );
    }
    let ops = read("docs/OPERATIONS.md");
    for a in alerts(&rules) {
        assert!(
            ops.contains(&format!("\n#### {a}\n")),
            "alert {a} has no runbook section (#### {a}) in docs/OPERATIONS.md"
        );
        assert!(
            rules.contains(&format!("runbook: docs/OPERATIONS.md#{}", a.to_lowercase())),
            "alert {a}'s runbook link"
        );
    }
}
