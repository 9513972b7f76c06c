//! Deployment files (issue 20): the systemd units pass `systemd-analyze
//! verify` with no warning and keep their hardening; the Grafana
//! dashboard's every query parses (promtool, as recording rules) and uses
//! only metrics the key server exports (docs/METRICS.md).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::process::Command;

use gkm_tests::metrics_doc::{exported, metric_names, repo_file};
use gkm_tests::procs::{binary, fresh_dir};

fn read(path: &str) -> String {
    repo_file(path)
}

#[test]
fn the_systemd_units_verify_clean_and_keep_their_hardening() {
    let dir = fresh_dir(env!("CARGO_TARGET_TMPDIR"), "systemd-units");
    // ExecStart must name an executable: the built binaries stand in for
    // /usr/local/bin.
    for (unit, bin) in [
        ("gkm-server.service", "gkm-server"),
        ("gkm-agent@.service", "gkm-agent"),
    ] {
        let text = read(&format!("deploy/systemd/{unit}"));
        let built = binary(bin, bin);
        std::fs::write(
            dir.join(unit),
            text.replace(&format!("/usr/local/bin/{bin}"), built.to_str().unwrap()),
        )
        .unwrap();
        for needed in [
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "PrivateTmp=yes",
            "DynamicUser=yes",
            "CapabilityBoundingSet=",
            "SystemCallFilter=@system-service",
        ] {
            assert!(text.contains(needed), "{unit} lacks {needed}");
        }
    }
    let server = read("deploy/systemd/gkm-server.service");
    assert!(server.contains("StateDirectory=gkm\n"));
    assert!(server.contains("CapabilityBoundingSet=CAP_NET_BIND_SERVICE\n"));
    let agent = read("deploy/systemd/gkm-agent@.service");
    assert!(
        agent.contains("CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW CAP_NET_BIND_SERVICE\n")
    );
    assert!(agent.contains("DeviceAllow=/dev/net/tun rw\n"));
    let o = Command::new("systemd-analyze")
        .args([
            "verify",
            "--man=no",
            "gkm-server.service",
            "gkm-agent@1234.service",
        ])
        .current_dir(&dir)
        .output()
        .expect("systemd-analyze (Debian's systemd) is installed");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success() && said.trim().is_empty(), "{said}");
}

#[test]
fn every_grafana_query_parses_and_uses_exported_metrics_only() {
    let dash: serde_json::Value = serde_json::from_str(&read("deploy/grafana/gkm.json")).unwrap();
    let known = exported();
    let mut exprs = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "panel {} has no query", p["title"]);
        for t in targets {
            exprs.push(t["expr"].as_str().unwrap().to_owned());
        }
    }
    // Grafana's variables, as Prometheus would get them.
    let rules: String = exprs
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let e = e.replace("$__rate_interval", "5m").replace("$group", ".*");
            format!(
                "      - record: gkm_dashboard:panel_{i}\n        expr: {}\n",
                serde_json::to_string(&e).unwrap()
            )
        })
        .collect();
    let dir = fresh_dir(env!("CARGO_TARGET_TMPDIR"), "grafana-queries");
    let file = dir.join("queries.yml");
    std::fs::write(
        &file,
        format!("groups:\n  - name: dashboard\n    rules:\n{rules}"),
    )
    .unwrap();
    let o = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .expect("promtool is installed (Debian's prometheus package)");
    let said = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success() && said.contains(&format!("SUCCESS: {} rules found", exprs.len())),
        "{said}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let used = metric_names(&exprs.join("\n"), &known);
    assert!(used.len() >= exprs.len());
    for m in &used {
        assert!(
            known.contains(m),
            "the dashboard uses {m}, which is not exported"
        );
    }
    println!(
        "grafana ok: {} panels, {} queries",
        dash["panels"].as_array().unwrap().len(),
        exprs.len()
    );
}
