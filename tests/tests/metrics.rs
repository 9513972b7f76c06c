//! Prometheus metrics and health endpoints of a real `gkm-server` (issue
//! 20): a real agent registers and acknowledges a rekey; the scrape shows
//! it in the counters and gauges, never the GM's address; `/metrics` on
//! the API listener answers a viewer token only (no token 401, an agent
//! token 403), and the `--metrics` listener answers without one;
//! `/readyz` says not ready while a COOP group has not found its role;
//! `--log-format json` writes one JSON object per line.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::process::Command;
use std::time::{Duration, Instant};

use gkm_tests::api::Api;
use gkm_tests::procs::{binary, free_udp_port, fresh_dir, start_server, Proc};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

use gkm_tests::api::get_text as get;

/// The value of the sample of `series` (`name` or `name{a="x",b="y"}`,
/// its labels in any order) in a scrape, if present.
fn sample(scrape: &str, series: &str) -> Option<f64> {
    let (name, labels) = series.split_once('{').unwrap_or((series, "}"));
    let mut want: Vec<&str> = labels
        .trim_end_matches('}')
        .split(',')
        .filter(|l| !l.is_empty())
        .collect();
    want.sort_unstable();
    scrape.lines().find_map(|l| {
        let (head, value) = l.rsplit_once(' ')?;
        let (n, ls) = head.split_once('{').unwrap_or((head, "}"));
        let mut got: Vec<&str> = ls
            .trim_end_matches('}')
            .split(',')
            .filter(|l| !l.is_empty())
            .collect();
        got.sort_unstable();
        (n == name && got == want).then(|| value.parse().ok())?
    })
}

#[test]
fn a_registration_and_a_rekey_show_in_the_scrape_and_only_viewers_read_it() {
    let dir = fresh_dir(env!("CARGO_TARGET_TMPDIR"), "metrics");
    let udp = free_udp_port();
    let (mut ks, url) = start_server(
        &dir,
        udp,
        "server.log",
        &["--metrics", "127.0.0.1:0", "--agent-silent-secs", "10"],
    );
    ks.wait_for("serving /metrics", WAIT);
    let open = format!("http://{}", ks.logged_addr("serving /metrics", "metrics"));
    let admin = Api::bootstrap_admin(&url, &dir.join("data"));
    admin.create_unicast_group("GET", 4400, "metrics-test-psk", json!({}));
    let token = |body: serde_json::Value| {
        admin.expect(201, "POST", "/api/v1/tokens", Some(&body))["secret"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let viewer = token(json!({"name": "prometheus", "role": "viewer"}));
    let agent_token = token(json!({"name": "an-agent", "role": "agent",
                                   "gm": {"group": 4400, "gm_identity": "127.0.6.1"}}));
    let agent_metrics = gkm_tests::procs::free_tcp_port();
    let mut agent = Proc::spawn(
        {
            let mut c = Command::new(binary("gkm-agent", "gkm-agent"));
            c.args([
                "--key-server",
                &format!("127.0.0.1:{udp}"),
                "--group",
                "4400",
                "--psk",
                "metrics-test-psk",
                "--bind",
                "127.0.6.1:0",
                "--metrics",
                &format!("127.0.0.1:{agent_metrics}"),
            ])
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1");
            c
        },
        &dir.join("agent.log"),
    );
    agent.wait_for("registered group 4400", WAIT);
    // Two health reports of its agent: 5 D3P errors, then 12 (7 more).
    let agent_api = Api::new(&url, &agent_token);
    let silent_from = Instant::now();
    for errors in [5, 12] {
        agent_api.expect(
            204,
            "POST",
            "/api/v1/gm-health",
            Some(
                &json!({"group": 4400, "gm_identity": "127.0.6.1", "agent_version": "test",
                "registered": true, "d3p_window_ms": null, "d3p_window_source": null,
                "agent_time_ms": 1, "counters": {"input_packets": 100, "output_packets": 100,
                "input_errors": errors, "output_errors": 0, "history": []}}),
            ),
        );
    }
    admin.expect(
        202,
        "POST",
        "/api/v1/groups/GET/rekey",
        Some(&json!({"replace": false})),
    );
    ks.wait_for("rekey acknowledged by every GM", WAIT);

    // The agent's own metrics: one registration, one rekey taken and
    // acknowledged, nothing refused.
    let (status, own) = get(&format!("http://127.0.0.1:{agent_metrics}/metrics"), None);
    assert_eq!(status, 200, "{own}");
    let a = |series: &str| sample(&own, series).unwrap_or_else(|| panic!("no {series} in:\n{own}"));
    assert_eq!(a("gkm_gm_registered{group=\"4400\"}"), 1.0);
    assert_eq!(a("gkm_gm_registrations_total{group=\"4400\"}"), 1.0);
    assert_eq!(a("gkm_gm_failovers_total{group=\"4400\"}"), 0.0);
    assert_eq!(a("gkm_gm_pushes_accepted_total{group=\"4400\"}"), 1.0);
    assert_eq!(a("gkm_gm_acks_sent_total{group=\"4400\"}"), 1.0);
    assert!(a("gkm_gm_seq{group=\"4400\"}") >= 1.0);
    assert_eq!(
        a("gkm_gm_pushes_refused_total{group=\"4400\",reason=\"bad_signature\"}"),
        0.0
    );

    // The API listener: a viewer token reads, nothing less does.
    let scrape_url = format!("{url}/metrics");
    assert_eq!(get(&scrape_url, None).0, 401);
    let (status, body) = get(&scrape_url, Some(&agent_token));
    assert_eq!(status, 403, "an agent token reads no metrics: {body}");
    let (status, scrape) = get(&scrape_url, Some(&viewer));
    assert_eq!(status, 200, "{scrape}");
    let v = |series: &str| {
        sample(&scrape, series).unwrap_or_else(|| panic!("no {series} in:\n{scrape}"))
    };
    assert_eq!(v("gkm_registrations_total{group=\"GET\"}"), 1.0);
    assert_eq!(v("gkm_rekeys_total{group=\"GET\",reason=\"manual\"}"), 1.0);
    assert_eq!(v("gkm_gms{group=\"GET\",state=\"registered\"}"), 1.0);
    assert_eq!(v("gkm_gms{group=\"GET\",state=\"lagging\"}"), 0.0);
    assert_eq!(v("gkm_gms_one_miss_from_removal{group=\"GET\"}"), 0.0);
    assert_eq!(
        v("gkm_rekey_ack_duration_seconds_count{group=\"GET\"}"),
        1.0
    );
    assert!(v("gkm_phase1_established_total") >= 1.0);
    assert!(v("gkm_phase1_duration_seconds_count") >= 1.0);
    assert_eq!(
        v("gkm_registration_duration_seconds_count{group=\"GET\"}"),
        1.0
    );
    assert!(v("gkm_registration_duration_seconds_sum{group=\"GET\"}") < 5.0);
    assert_eq!(v("gkm_agent_d3p_errors_total{group=\"GET\"}"), 12.0);
    assert_eq!(v("gkm_agent_reports_total{result=\"accepted\"}"), 2.0);
    assert_eq!(v("gkm_agents_silent{group=\"GET\"}"), 0.0);
    assert!(v("gkm_kek_remaining_seconds{group=\"GET\"}") > 0.0);
    assert!(v("gkm_tek_remaining_seconds{group=\"GET\"}") > 0.0);
    assert_eq!(
        v(&format!(
            "gkm_build_info{{version=\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        )),
        1.0
    );
    assert!(
        v("gkm_http_requests_total{method=\"POST\",route=\"/api/v1/groups/{name}/rekey\",status=\"202\"}")
            >= 1.0
    );
    // Labels never carry a GM's identity or address.
    assert!(!scrape.contains("127.0.6.1"), "{scrape}");
    // A client cannot grow the label set: any method outside the standard
    // ones, and any path no route matches, count under one label each.
    let http = url.trim_start_matches("http://");
    for (i, method) in ["BREW", "XYZZY1", "XYZZY2"].iter().enumerate() {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(http).unwrap();
        write!(
            s,
            "{method} /no/such/path/{i} HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 "), "{answer}");
    }
    let (_, scrape) = get(&scrape_url, Some(&viewer));
    assert!(
        !scrape.contains("XYZZY") && !scrape.contains("BREW") && !scrape.contains("/no/such"),
        "{scrape}"
    );
    let other: f64 = scrape
        .lines()
        .filter(|l| l.starts_with("gkm_http_requests_total{") && l.contains("method=\"other\""))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert_eq!(other, 3.0, "{scrape}");

    // The --metrics listener: no token, the same families.
    let (status, open_scrape) = get(&format!("{open}/metrics"), None);
    assert_eq!(status, 200);
    assert!(open_scrape.contains("gkm_registrations_total{group=\"GET\"} 1"));
    assert_eq!(get(&format!("{open}/healthz"), None), (200, "ok\n".into()));
    assert_eq!(get(&format!("{url}/readyz"), None), (200, "ok\n".into()));

    // Ten seconds without a report (--agent-silent-secs 10): the agent is
    // silent; its GM is still in the GM database.
    std::thread::sleep(Duration::from_secs(11).saturating_sub(silent_from.elapsed()));
    let (_, scrape) = get(&format!("{open}/metrics"), None);
    assert_eq!(
        sample(&scrape, "gkm_agents_silent{group=\"GET\"}"),
        Some(1.0),
        "{scrape}"
    );
}

#[test]
fn readyz_waits_for_a_coop_group_to_know_its_role() {
    let dir = fresh_dir(env!("CARGO_TARGET_TMPDIR"), "readyz-coop");
    let data = dir.join("ks");
    std::fs::create_dir_all(&data).unwrap();
    let udp = free_udp_port();
    // Its only peer never answers: it stays secondary with no primary
    // until the dead window (2 x 10 s) has passed, then takes over.
    let signing_key = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../proto/tests/data/ks-rekey.pem"
    );
    let config = format!(
        "ks_address = '127.0.0.41'\nrekey_signing_key = '{signing_key}'\n[[group]]\nname = 'COOP'\ngroup_id = 7401\n[[group.tek]]\nsrc = '10.1.0.0/16'\ndst = '10.1.0.0/16'\n[group.coop]\npriority = 100\nrefresh_secs = 10\ncheck_secs = 10\ndead_periods = 2\n[[group.coop.peers]]\naddress = '127.0.0.42'\nport = {udp}\nauthentication = {{ method = 'psk', psk = 'readyz-pair' }}\n"
    );
    std::fs::write(data.join("ks.toml"), config).unwrap();
    let mut cmd = Command::new(binary("gkm-server", "gkm-server"));
    cmd.arg("--config")
        .arg(data.join("ks.toml"))
        .args([
            "--listen",
            &format!("127.0.0.41:{udp}"),
            "--http",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(data.join("data"))
        .args(["--log-format", "json"])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1");
    let mut ks = Proc::spawn(cmd, &dir.join("ks.log"));
    ks.wait_for("serving the REST API", WAIT);
    // One JSON object per line, the event's fields under "fields".
    let lines: Vec<serde_json::Value> = ks
        .output()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let api_line = lines
        .iter()
        .find(|l| {
            l["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("serving the REST API"))
        })
        .unwrap();
    let url = format!("http://{}", api_line["fields"]["http"].as_str().unwrap());
    let started = Instant::now();
    let (status, body) = get(&format!("{url}/readyz"), None);
    assert_eq!(status, 503, "{body}");
    // No token here: the reason is counted, the group not named.
    assert!(!body.contains("COOP\n") && !body.contains("7401"), "{body}");
    assert_eq!(
        body,
        "COOP role not known yet (no primary heard) in 1 group(s)\n"
    );
    assert_eq!(
        get(&format!("{url}/healthz"), None).0,
        200,
        "alive all along"
    );
    loop {
        let (status, body) = get(&format!("{url}/readyz"), None);
        if status == 200 {
            assert_eq!(body, "ok\n");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "still not ready after 60 s: {body}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        ks.output().contains("\"role\":\"Primary\""),
        "it took over: {}",
        ks.output()
    );
}
