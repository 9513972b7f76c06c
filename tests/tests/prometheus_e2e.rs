//! The alert rules against a real Prometheus (issue 20): Debian's
//! `prometheus`, started here on loopback with a 1 s scrape and
//! evaluation interval and `deploy/prometheus/alerts.yml`, scrapes a real
//! gkm-server (its `--metrics` listener) with two real agents. One agent
//! stops; two unicast rekeys go unacknowledged by it; Prometheus's HTTP
//! API must show `GkmGmOneMissFromRemoval` firing for the group. The agent
//! starts again, registers, and the alert clears.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use gkm_tests::api::{try_get_text, Api};
use gkm_tests::procs::{binary, free_tcp_port, free_udp_port, fresh_dir, start_server, Proc};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);

fn agent(dir: &Path, udp: u16, bind: &str, log: &str) -> Proc {
    let mut c = Command::new(binary("gkm-agent", "gkm-agent"));
    c.args([
        "--key-server",
        &format!("127.0.0.1:{udp}"),
        "--group",
        "4500",
        "--psk",
        "prometheus-test-psk",
        "--bind",
        &format!("{bind}:0"),
    ])
    .env("RUST_LOG", "info")
    .env("NO_COLOR", "1");
    Proc::spawn(c, &dir.join(log))
}

/// Prometheus's JSON answer to `GET path`, if it answers 200.
fn prom_get(base: &str, path: &str) -> Option<Value> {
    match try_get_text(&format!("{base}{path}"), None) {
        Ok((200, body)) => serde_json::from_str(&body).ok(),
        _ => None,
    }
}

/// The state of alert `name` for group `group` in Prometheus (`firing`,
/// `pending`), if it is active.
fn alert_state(base: &str, name: &str, group: &str) -> Option<String> {
    let v = prom_get(base, "/api/v1/alerts")?;
    v["data"]["alerts"].as_array()?.iter().find_map(|a| {
        (a["labels"]["alertname"] == name && a["labels"]["group"] == group)
            .then(|| a["state"].as_str().unwrap_or_default().to_owned())
    })
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn a_stopped_agent_fires_one_miss_from_removal_in_a_real_prometheus_and_its_return_clears_it() {
    let dir = fresh_dir(env!("CARGO_TARGET_TMPDIR"), "prometheus-e2e");
    let udp = free_udp_port();
    let metrics_port = free_tcp_port();
    let (mut ks, url) = start_server(
        &dir,
        udp,
        "server.log",
        &["--metrics", &format!("127.0.0.1:{metrics_port}")],
    );
    let admin = Api::bootstrap_admin(&url, &dir.join("data"));
    admin.create_unicast_group("GET", 4500, "prometheus-test-psk", json!({}));
    let mut a1 = agent(&dir, udp, "127.0.8.1", "agent1.log");
    let mut a2 = agent(&dir, udp, "127.0.8.2", "agent2.log");
    a1.wait_for("registered group 4500", WAIT);
    a2.wait_for("registered group 4500", WAIT);

    // A real Prometheus: 1 s scrape and evaluation, the shipped rules.
    let prom_port = free_tcp_port();
    let rules = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/prometheus/alerts.yml"
    );
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {rules}\nscrape_configs:\n  - job_name: gkm\n    static_configs:\n      - targets: ['127.0.0.1:{metrics_port}']\n        labels: {{instance: ks1}}\n"
        ),
    )
    .unwrap();
    let mut cmd = Command::new("prometheus");
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"));
    let _prom = Proc::spawn(cmd, &dir.join("prometheus.log"));
    let base = format!("http://127.0.0.1:{prom_port}");
    wait_until("Prometheus to scrape the key server", WAIT, || {
        prom_get(
            &base,
            "/api/v1/query?query=gkm_gms%7Bstate%3D%22registered%22%7D",
        )
        .is_some_and(|v| v["data"]["result"][0]["value"][1] == "2")
    });
    assert_eq!(alert_state(&base, "GkmGmOneMissFromRemoval", "GET"), None);

    // Agent 2 stops; two rekeys go unacknowledged by it.
    drop(a2);
    for round in 1..=2 {
        admin.expect(
            202,
            "POST",
            "/api/v1/groups/GET/rekey",
            Some(&json!({"replace": false})),
        );
        let closed = |p: &Proc| p.output().matches("rekey round closed").count();
        wait_until("the rekey round to close", WAIT, || closed(&ks) >= round);
        // The API refuses a rekey less than 1 s after the last.
        std::thread::sleep(Duration::from_millis(1100));
    }
    assert!(ks.output().contains("missed=1"), "{}", ks.output());
    wait_until("GkmGmOneMissFromRemoval to fire", WAIT, || {
        alert_state(&base, "GkmGmOneMissFromRemoval", "GET").as_deref() == Some("firing")
    });

    // It comes back: it registers again, and the alert clears.
    let mut a2 = agent(&dir, udp, "127.0.8.2", "agent2-again.log");
    a2.wait_for("registered group 4500", WAIT);
    wait_until("GkmGmOneMissFromRemoval to clear", WAIT, || {
        alert_state(&base, "GkmGmOneMissFromRemoval", "GET").is_none()
    });
    a1.wait_for("registered group 4500", WAIT);
    ks.wait_for("GM registered", WAIT);
    println!("prometheus e2e ok");
}
