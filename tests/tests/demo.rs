//! `gkm-server --demo`: the DEMO group is created and the simulated GMs
//! inside the server register over real loopback UDP, so the dashboard the
//! quick start opens is alive. Checked through the REST API.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use gkm_tests::procs::{free_udp_port, fresh_dir, start_server};

#[test]
fn demo_mode_brings_simulated_gms_in() {
    let dir = fresh_dir(env!("CARGO_TARGET_TMPDIR"), "demo");
    let udp = free_udp_port();
    let (mut p, base) = start_server(&dir, udp, "server.log", &["--demo", "--demo-gms", "6"]);
    p.wait_for("demo: simulated GMs registering", Duration::from_secs(10));
    let token = std::fs::read_to_string(dir.join("data/admin-token")).unwrap();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let try_get = |path: &str| -> (u16, serde_json::Value) {
        let mut r = agent
            .get(&format!("{base}{path}"))
            .header("authorization", &format!("Bearer {}", token.trim()))
            .call()
            .unwrap();
        let v = serde_json::from_slice(&r.body_mut().read_to_vec().unwrap()).unwrap();
        (r.status().as_u16(), v)
    };
    let get = |path: &str| -> serde_json::Value {
        let (status, v) = try_get(path);
        assert_eq!(status, 200, "{path}: {v}");
        v
    };
    let g = get("/api/v1/groups/DEMO");
    assert_eq!(g["group_id"], 4242, "{g}");
    assert_eq!(g["policy"]["d3p_window"]["sec"], 5, "{g}");
    let start = Instant::now();
    let registered = loop {
        let gms = get("/api/v1/gms?group=4242");
        let n = gms["gms"].as_array().map_or(0, Vec::len);
        if n == 6 || start.elapsed() > Duration::from_secs(45) {
            break gms;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    let rows = registered["gms"].as_array().unwrap();
    assert_eq!(rows.len(), 6, "{registered}");
    for m in rows {
        assert!(
            m["gm_identity"].as_str().unwrap().starts_with("127.0.66."),
            "{m}"
        );
        assert_eq!(m["state"], "registered", "{m}");
    }
    // Registered GMs file health reports every 10 s.
    let start = Instant::now();
    let health = loop {
        let (status, v) = try_get("/api/v1/groups/DEMO/gms/127.0.66.1/health");
        if status == 200 || start.elapsed() > Duration::from_secs(30) {
            break v;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(health["agent_version"], "demo", "{health}");
    assert_eq!(health["d3p_window_ms"], 5000, "{health}");
}
