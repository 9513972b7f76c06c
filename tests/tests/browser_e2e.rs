//! Runs `scripts/e2e-browser` (headless Chromium, a real OIDC provider,
//! gkm-server with live GMs) and checks its verdict line, so the suite
//! covers the dashboard end to end.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

#[test]
fn dashboard_end_to_end_in_headless_chromium() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/e2e-browser");
    let mut cmd = Command::new(script);
    gkm_tests::procs::without_test_cargo_env(&mut cmd);
    let out = cmd.output().expect("run scripts/e2e-browser");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let last = stdout.lines().last().unwrap_or_default();
    let n: u32 = last
        .strip_prefix("browser e2e ok: ")
        .and_then(|s| s.strip_suffix(" checks"))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no verdict line: {stdout}"));
    assert!(n >= 30, "{last}");
}
